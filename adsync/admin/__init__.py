"""The admin, one module per screen: sites, the Microsoft Ads card (connections), Connect / Reconnect /
Disconnect (connect.py), the sync log (with adjust.py's Restate / Retract), conversions and clicks, the inbox,
campaign insights, staff notifications, erasures ("Forget a person"), the dashboard and the diagnosis (the card's
checklist, its history, reconciliation).

No token or secret is ever rendered: encrypted fields are excluded from every form and list,
and a site's server API secret is shown exactly once, when it is generated.
"""

from django.contrib import admin

from adsync.admin import (  # noqa: F401 (register)
    connections,
    conversions,
    diagnosis,
    erasures,
    inbox,
    insights,
    sites,
    staff,
    sync_log,
)

admin.site.site_header = "adsync"
admin.site.site_title = "adsync"
admin.site.index_title = "Microsoft Ads offline conversions"
admin.site.enable_nav_sidebar = False  # the sync log needs the width
