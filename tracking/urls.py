"""Tracking URLs, mounted at the site root: the snippet, the browser ingest, the server API."""

from django.urls import path

from tracking import views

app_name = "tracking"

urlpatterns = [
    path("t/v1/adsync.js", views.snippet, name="snippet"),
    path("t/v1/collect", views.collect, name="collect"),
    path("api/v1/conversions", views.api_conversions, name="api-conversions"),
    path("api/v1/conversions/<path:order_id>", views.api_conversion_detail, name="api-conversion"),
]
