"""adsync's own URLs outside the admin, mounted at /adsync/ by config/urls.py.

The OAuth callback's path is fixed: the redirect URI, ADSYNC_PUBLIC_URL + /adsync/oauth/microsoft/callback/,
must be registered exactly (case-sensitive) in the Azure app registration (docs/connections.md).
"""

from django.urls import path

from adsync.admin import connect

app_name = "adsync"

urlpatterns = [
    path("oauth/microsoft/callback/", connect.oauth_callback, name="oauth-callback"),
]
