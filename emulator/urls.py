"""The emulator's URLs, mounted at /emulator/. API paths mirror Microsoft's hosts under one prefix each:
campaign/ (campaign.api…), clientcenter/ (clientcenter.api…), reporting/ (reporting.api…), oauth2/ (login…)."""

from django.urls import path

from emulator import oauth_views, pages, views

app_name = "emulator"

CAMPAIGN = "campaign/CampaignManagement/v13/"
CUSTOMER = "clientcenter/CustomerManagement/v13/"
REPORTING = "reporting/Reporting/v13/"

urlpatterns = [
    path("", pages.status, name="status"),
    path("click/", pages.click, name="click"),
    path("oauth2/v2.0/authorize", oauth_views.authorize, name="authorize"),
    path("oauth2/v2.0/token", oauth_views.token, name="token"),
    path(CAMPAIGN + "OfflineConversions/Apply", views.apply_offline_conversions, name="apply-offline-conversions"),
    path(CAMPAIGN + "OfflineConversionAdjustments/Apply", views.apply_offline_conversion_adjustments,
         name="apply-offline-conversion-adjustments"),
    path(CAMPAIGN + "ConversionGoals/QueryByIds", views.query_conversion_goals, name="query-conversion-goals"),
    path(CAMPAIGN + "ConversionGoals", views.add_conversion_goals, name="add-conversion-goals"),
    path(CAMPAIGN + "AccountProperties/Query", views.get_account_properties, name="get-account-properties"),
    path(CUSTOMER + "User/Query", views.get_user, name="get-user"),
    path(CUSTOMER + "Accounts/Search", views.search_accounts, name="search-accounts"),
    path(REPORTING + "GenerateReport/Submit", views.submit_report, name="submit-report"),
    path(REPORTING + "GenerateReport/Poll", views.poll_report, name="poll-report"),
    path("reporting/download/<str:request_id>.zip", pages.report_download, name="report-download"),
]
