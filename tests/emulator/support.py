"""Helpers shared by the emulator tests in tests/emulator/ (no tests here).

They mirror the helpers of tests/emulator/test_emulator.py: the emulator's endpoints called with the
Django test client, or adsync's real client code over HTTP against pytest-django's live_server.
"""

from __future__ import annotations

from datetime import UTC, timedelta

from django.conf import settings as django_settings
from django.utils import timezone

from adsync.microsoft.campaign import CampaignClient
from emulator import tokens
from emulator.demo import ACCOUNT_ID, CUSTOMER_ID
from emulator.models import EmulatorAccount, EmulatorClick, EmulatorUser

CAMPAIGN = "/emulator/campaign/CampaignManagement/v13/"
APPLY = CAMPAIGN + "OfflineConversions/Apply"
ADJUST = CAMPAIGN + "OfflineConversionAdjustments/Apply"
ADD_GOALS = CAMPAIGN + "ConversionGoals"
GOALS = CAMPAIGN + "ConversionGoals/QueryByIds"
ACCOUNT_PROPERTIES = CAMPAIGN + "AccountProperties/Query"
SUBMIT = "/emulator/reporting/Reporting/v13/GenerateReport/Submit"
POLL = "/emulator/reporting/Reporting/v13/GenerateReport/Poll"
AUTHORIZE = "/emulator/oauth2/v2.0/authorize"
TOKEN = "/emulator/oauth2/v2.0/token"
SCOPE = "https://ads.microsoft.com/msads.manage offline_access"


def access_token_for(user: EmulatorUser, scope: str = SCOPE) -> str:
    return tokens.token_response(user, django_settings.MICROSOFT_ADS_CLIENT_ID, scope)["access_token"]


def headers(token: str, customer_id: str = CUSTOMER_ID, account_id: str = ACCOUNT_ID) -> dict:
    """The four Campaign Management headers, as Django test-client keyword arguments."""
    return {"headers": {"Authorization": f"Bearer {token}",
                        "DeveloperToken": django_settings.MICROSOFT_ADS_DEVELOPER_TOKEN,
                        "CustomerId": customer_id, "CustomerAccountId": account_id}}


def post(client, path: str, body, token: str, **kwargs):
    return client.post(path, body, content_type="application/json", **headers(token, **kwargs))


def error_codes(response) -> dict[int, int]:
    """PartialErrors as {Index: Code}."""
    return {e["Index"]: e["Code"] for e in response.json()["PartialErrors"]}


def fault_code(response) -> int:
    body = response.json()
    return (body.get("Errors") or body.get("OperationErrors"))[0]["Code"]


def new_click(age: timedelta = timedelta(hours=3), account_id: str = ACCOUNT_ID) -> EmulatorClick:
    account = EmulatorAccount.objects.get(account_id=account_id)
    return EmulatorClick.objects.create(account=account, clicked_at=timezone.now() - age)


def iso(moment) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def whole_seconds(moment):
    return moment.replace(microsecond=0)


def point_adsync_at(live_server, settings) -> None:
    """adsync's Microsoft settings pointed at the emulator behind a real HTTP server."""
    base = live_server.url + "/emulator"
    settings.MICROSOFT_ADS_ENVIRONMENT = "emulator"
    settings.MICROSOFT_ADS_CAMPAIGN_API_URL = base + "/campaign"
    settings.MICROSOFT_ADS_CUSTOMER_API_URL = base + "/clientcenter"
    settings.MICROSOFT_ADS_REPORTING_API_URL = base + "/reporting"
    settings.MICROSOFT_ADS_OAUTH_AUTHORIZE_URL = base + "/oauth2/v2.0/authorize"
    settings.MICROSOFT_ADS_OAUTH_TOKEN_URL = base + "/oauth2/v2.0/token"
    settings.MICROSOFT_ADS_TIMEOUT = 10


def campaign_client(token: str, account_id: str = ACCOUNT_ID) -> CampaignClient:
    return CampaignClient(access_token=token, customer_id=CUSTOMER_ID, account_id=account_id)
