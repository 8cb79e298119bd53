"""The demo shop, mounted at /demo/ in emulator mode only (config/urls.py)."""

from django.urls import path

from emulator import demo_site

app_name = "demo"

urlpatterns = [path("", demo_site.shop, name="shop")]
