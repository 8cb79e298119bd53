"""The admin, one module per screen: sites, the Microsoft Ads card (connections), Connect / Reconnect /
Disconnect (connect.py), the sync log, conversions and clicks, the inbox, campaign insights, staff
notifications, the dashboard and the diagnosis (the card's checklist, its history, reconciliation).

No token or secret is ever rendered: encrypted fields are excluded from every form and list,
and a site's server API secret is shown exactly once, when it is generated.
"""

from django.contrib import admin

from adsync.admin import connections, conversions, diagnosis, inbox, insights, sites, staff, sync_log  # noqa: F401

admin.site.site_header = "adsync"
admin.site.site_title = "adsync"
admin.site.index_title = "Microsoft Ads offline conversions"
admin.site.enable_nav_sidebar = False  # the sync log needs the width
