"""The insights sync end to end against the built-in emulator, over real HTTP (pytest-django's live_server)."""

from __future__ import annotations

import secrets
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from adsync.insights.sync import report_range, sync_insights
from adsync.microsoft.reporting import campaign_report_request, parse_report_csv
from adsync.models import CampaignInsight, Connection

emulator_models = pytest.importorskip("emulator.models")
emulator_reports = pytest.importorskip("emulator.reports")
if not hasattr(emulator_models, "EmulatorBehaviour") or not hasattr(emulator_reports, "base_metrics"):
    pytest.skip("the emulator has no Reporting endpoints yet", allow_module_level=True)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def emulator(live_server, settings):
    """adsync pointed at the emulator on the live server; a user who can reach one account with two campaigns."""
    settings.MICROSOFT_ADS_ENVIRONMENT = "emulator"
    settings.MICROSOFT_ADS_REPORTING_API_URL = f"{live_server.url}/emulator/reporting"
    settings.MICROSOFT_ADS_OAUTH_TOKEN_URL = f"{live_server.url}/emulator/oauth2/v2.0/token"
    user = emulator_models.EmulatorUser.objects.create(user_name="ops@example.com", email="ops@example.com")
    account = emulator_models.EmulatorAccount.objects.create(account_id="187654321", parent_customer_id="251234567",
                                                             name="Shop account")
    account.users.add(user)
    for campaign_id, name in (("5001", "Brand"), ("5002", "Generic")):
        emulator_models.EmulatorCampaign.objects.create(account=account, campaign_id=campaign_id, name=name)
    return user


def issue(user, kind: str, expires_in: timedelta = timedelta(hours=1)) -> str:
    value = f"e2e-{kind}-{secrets.token_hex(8)}"
    emulator_models.EmulatorToken.objects.create(value=value, kind=kind, user=user, client_id="client-id",
                                                 scope="https://ads.microsoft.com/msads.manage",
                                                 expires_at=timezone.now() + expires_in)
    return value


@pytest.fixture
def emulator_connection(emulator, site, make_connection) -> Connection:
    return make_connection(site, access_token=issue(emulator, "access"), refresh_token=issue(emulator, "refresh"))


def switches(**values) -> None:
    emulator_models.EmulatorBehaviour.load()
    emulator_models.EmulatorBehaviour.objects.filter(pk=1).update(**values)


def test_a_sync_against_the_emulator_stores_its_14_days_of_two_campaigns(emulator_connection):
    switches(report_pending_polls=2)
    waits = []

    result = sync_insights(emulator_connection, sleep=waits.append)

    assert (result.outcome, result.rows) == ("ok", 28), result.message
    assert waits == [5, 10]  # two Pending answers, then Success
    brand = CampaignInsight.objects.get(connection=emulator_connection, campaign_id="5001", date=result.end)
    expected = emulator_reports.base_metrics("5001", result.end)
    assert (brand.campaign_name, brand.impressions, brand.clicks, brand.currency) == (
        "Brand", expected["Impressions"], expected["Clicks"], "USD")
    assert brand.spend == Decimal(f"{expected['Spend']:.2f}")
    assert brand.conversions == expected["Conversions"]


def test_a_second_sync_against_the_emulator_replaces_rather_than_adds(emulator_connection):
    switches(report_pending_polls=0)
    sync_insights(emulator_connection, sleep=lambda seconds: None)

    result = sync_insights(emulator_connection, sleep=lambda seconds: None)

    assert result.outcome == "ok"
    assert CampaignInsight.objects.filter(connection=emulator_connection).count() == 28


def test_the_emulators_207_fails_the_sync_and_keeps_the_previous_rows(emulator_connection):
    switches(report_pending_polls=0)
    sync_insights(emulator_connection, sleep=lambda seconds: None)
    switches(report_concurrency_failure_count=1)

    result = sync_insights(emulator_connection, sleep=lambda seconds: None)

    assert result.failed
    assert CampaignInsight.objects.filter(connection=emulator_connection).count() == 28
    emulator_connection.refresh_from_db()
    assert "207 ConcurrentRequestOverLimit" in emulator_connection.last_error


def test_a_report_error_at_the_emulator_is_a_failed_sync(emulator_connection):
    switches(report_failure=True)

    result = sync_insights(emulator_connection, sleep=lambda seconds: None)

    assert result.failed and 'Status "Error"' in result.message
    assert not CampaignInsight.objects.exists()


def test_an_access_token_the_emulator_calls_expired_is_refreshed_once(emulator, site, make_connection):
    # adsync believes its token is good for an hour; the emulator says it expired (109).
    connection = make_connection(site, access_token=issue(emulator, "access", timedelta(seconds=-1)),
                                 refresh_token=issue(emulator, "refresh"))
    switches(report_pending_polls=0)

    result = sync_insights(connection, sleep=lambda seconds: None)

    assert result.outcome == "ok", result.message
    connection.refresh_from_db()
    assert connection.refreshed_at is not None and connection.status == Connection.ACTIVE


def test_the_parser_reads_the_emulators_file_with_microsofts_metadata_header_and_footer(emulator):
    start, end = report_range(3)
    request = campaign_report_request("187654321", start, end, "GreenwichMeanTimeDublinEdinburghLisbonLondon")
    request.update(ExcludeReportHeader=False, ExcludeReportFooter=False)

    text = emulator_reports.report_csv(request)

    assert "Report Name:" in text and "Microsoft Corporation" in text
    rows = parse_report_csv(text.removeprefix("\ufeff"))
    assert sorted((r.date, r.campaign_id) for r in rows) == sorted(
        (start + timedelta(days=n), c) for n in range(3) for c in ("5001", "5002"))
