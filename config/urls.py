from django.apps import apps
from django.contrib import admin
from django.urls import include, path

from adsync.admin.dashboard import dashboard_view
from adsync.security.signin import admin_login

# Staff sign in through allauth (password, TOTP, optional Microsoft), never the admin's own form.
admin.site.login = admin_login

urlpatterns = [
    path("admin/adsync/dashboard/", admin.site.admin_view(dashboard_view), name="adsync_dashboard"),
    path("admin/", admin.site.urls),
    path("accounts/", include("allauth.urls")),  # staff sign-in, MFA, password (docs/notifications.md)
    path("adsync/", include("adsync.urls")),  # the OAuth redirect URI lives here (docs/connections.md)
    path("", include("tracking.urls")),
]
if apps.is_installed("emulator"):  # emulator mode only (config/settings.py)
    urlpatterns += [
        path("emulator/", include("emulator.urls")),
        path("demo/", include("emulator.demo_urls")),
    ]
