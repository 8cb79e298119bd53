"""adsync: website conversions to Microsoft Advertising as offline conversions, with a sync log staff can read.

One package per capability (docs/architecture.md has the map):
- models/: the data. intake/: storing what sites report. push/: the sync log and the flush.
- connections/: Connect, tokens, health. insights/: campaign performance. notify/: emails, digest, support.
- admin/: one module per admin screen. security/: encryption, roles, staff sign-in.
- microsoft/: one client module per Microsoft API. jobs.py: every background job. conf.py: settings.
"""
