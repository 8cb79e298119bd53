"""The insights sync at the HTTP boundary: report submit / poll / download, upsert, schedule, command, admin."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import date, datetime, timedelta
from datetime import timezone as dt_timezone
from decimal import Decimal

import pytest
import time_machine
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse
from django_q.models import OrmQ, Schedule
from responses import matchers

from adsync import jobs
from adsync.connections import health
from adsync.insights.sync import sync_insights
from adsync.jobs import ensure_schedules
from adsync.microsoft.reporting import CAMPAIGN_COLUMNS, parse_report_zip
from adsync.models import CampaignInsight, Connection
from tests.conftest import REPORTING, TOKEN_URL

pytestmark = pytest.mark.django_db

SUBMIT_URL = REPORTING + "/Reporting/v13/GenerateReport/Submit"
POLL_URL = REPORTING + "/Reporting/v13/GenerateReport/Poll"
DOWNLOAD_URL = "https://download.example.test/reports/4711.zip?sv=2020&sig=secret-signature"
NOW = datetime(2026, 11, 23, 5, 0, tzinfo=dt_timezone.utc)

ROWS = [
    ["2026-11-21", "187654321", "111", "Brand", "1200", "34", "56.78", "3", "150.00", "USD"],
    ["2026-11-22", "187654321", "111", "Brand", "900", "20", "40.10", "1.5", "75.50", "USD"],
    ["2026-11-22", "187654321", "222", "Generic, broad", "5000", "80", "120.00", "0", "0", "USD"],
]


def report_zip(rows=ROWS, *, header: bool = True, footer: bool = True) -> bytes:
    """A report in Microsoft's layout (docs/microsoft-api.md#report-download): metadata lines, a blank line, columns,
    rows, a blank line, a footer."""
    lines = []
    if header:
        lines += ['"Report Name: adsync daily campaign performance"', '"Report Time: 11/23/2026"',
                  '"Time Zone: (GMT) Greenwich Mean Time : Dublin, Edinburgh, Lisbon, London"',
                  '"Last Completed Available Day: 11/22/2026 11:00:00 PM (GMT)"',
                  '"Last Completed Available Hour: 11/23/2026 4:00:00 AM (GMT)"', '"Report Aggregation: Daily"',
                  '"Report Filter: "', '"Potential Incomplete Data: true"', f'"Rows: {len(rows)}"', ""]
    lines.append(",".join(f'"{c}"' for c in CAMPAIGN_COLUMNS))
    lines += [",".join(f'"{v}"' for v in row) for row in rows]
    if footer:
        lines += ["", '"©2026 Microsoft Corporation. All rights reserved. "']
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("4711.csv", ("\r\n".join(lines) + "\r\n").encode("utf-8-sig"))
    return buffer.getvalue()


def pending():
    return {"json": {"ReportRequestStatus": {"Status": "Pending", "ReportDownloadUrl": None}}}


def success(url: str | None = DOWNLOAD_URL):
    return {"json": {"ReportRequestStatus": {"Status": "Success", "ReportDownloadUrl": url}}}


def microsoft_answers(mocked, rows=ROWS, polls=(), account_id: str | None = None):
    """Submit → (the given polls, then Success) → the zip. `account_id` scopes the answers to one account."""
    match = [matchers.header_matcher({"CustomerAccountId": account_id})] if account_id else []
    url = f"{DOWNLOAD_URL}&account={account_id}" if account_id else DOWNLOAD_URL
    mocked.post(SUBMIT_URL, json={"ReportRequestId": f"report-{account_id or 1}"}, match=match)
    for answer in polls:
        mocked.post(POLL_URL, match=match, **answer)
    mocked.post(POLL_URL, match=match, **success(url))
    mocked.get(url, body=report_zip(rows), content_type="application/zip")


def calls_to(mocked, url: str) -> list:
    return [c for c in mocked.calls if c.request.url.split("?")[0] == url.split("?")[0]]


def insight_numbers(connection) -> list[tuple]:
    return list(CampaignInsight.objects.filter(connection=connection).order_by("date", "campaign_id").values_list(
        "date", "campaign_id", "campaign_name", "impressions", "clicks", "spend", "conversions", "revenue",
        "currency"))


def fault(code: int, symbol: str, message: str, status: int = 400) -> dict:
    return {"status": status, "json": {"Type": "AdApiFaultDetail", "TrackingId": "track-9",
                                       "Errors": [{"Code": code, "ErrorCode": symbol, "Message": message}]}}


# --- Parsing -------------------------------------------------------------------------------------

@pytest.mark.parametrize("header,footer", [(True, True), (False, False), (True, False)])
def test_the_zipped_csv_is_parsed_without_microsofts_metadata_header_and_copyright_footer(header, footer):
    rows = parse_report_zip(report_zip(header=header, footer=footer))

    assert [(r.date, r.campaign_id, r.campaign_name, r.impressions, r.clicks, r.spend, r.conversions, r.revenue,
             r.currency) for r in rows] == [
        (date(2026, 11, 21), "111", "Brand", 1200, 34, Decimal("56.78"), Decimal("3"), Decimal("150.00"), "USD"),
        (date(2026, 11, 22), "111", "Brand", 900, 20, Decimal("40.10"), Decimal("1.5"), Decimal("75.50"), "USD"),
        (date(2026, 11, 22), "222", "Generic, broad", 5000, 80, Decimal("120.00"), Decimal("0"), Decimal("0"),
         "USD"),
    ]


def test_empty_and_double_dash_cells_count_as_zero():
    rows = parse_report_zip(report_zip([["2026-11-22", "187654321", "111", "Brand", "0", "0", "", "--", "", "USD"]]))

    assert (rows[0].spend, rows[0].conversions, rows[0].revenue) == (0, 0, 0)


# --- The sync --------------------------------------------------------------------------------------

@time_machine.travel(NOW, tick=False)
def test_a_sync_asks_for_14_daily_days_in_london_time_and_stores_one_row_per_campaign_and_day(mocked, connection):
    microsoft_answers(mocked)

    result = sync_insights(connection, sleep=lambda seconds: None)

    assert result.outcome == "ok" and result.rows == 3
    submit = calls_to(mocked, SUBMIT_URL)[0].request
    assert {k: submit.headers[k] for k in ("Authorization", "DeveloperToken", "CustomerId", "CustomerAccountId")} == {
        "Authorization": "Bearer access-1", "DeveloperToken": "dev-token", "CustomerId": "251234567",
        "CustomerAccountId": "187654321"}
    request = json.loads(submit.body)["ReportRequest"]
    assert request["Type"] == "CampaignPerformanceReportRequest"
    assert (request["FormatVersion"], request["Aggregation"]) == ("2.0", "Daily")
    assert "TimePeriod" in request["Columns"]  # without it Microsoft ignores Daily (docs/microsoft-api.md#reporting)
    assert request["Scope"] == {"AccountIds": ["187654321"]}
    assert request["Time"] == {"CustomDateRangeStart": {"Day": 10, "Month": 11, "Year": 2026},
                               "CustomDateRangeEnd": {"Day": 23, "Month": 11, "Year": 2026},
                               "ReportTimeZone": "GreenwichMeanTimeDublinEdinburghLisbonLondon"}
    assert json.loads(calls_to(mocked, POLL_URL)[0].request.body) == {"ReportRequestId": "report-1"}
    # The signed download link may be on another host: our token never goes there.
    assert "Authorization" not in calls_to(mocked, DOWNLOAD_URL)[0].request.headers
    assert insight_numbers(connection)[2] == (date(2026, 11, 22), "222", "Generic, broad", 5000, 80,
                                              Decimal("120.00"), Decimal("0.00"), Decimal("0.00"), "USD")
    connection.refresh_from_db()
    assert connection.last_insights_sync_at == NOW
    assert not health.is_stale(connection)


def test_a_second_sync_with_the_same_numbers_keeps_the_same_rows(mocked, connection):
    microsoft_answers(mocked)
    sync_insights(connection, sleep=lambda seconds: None)
    first = insight_numbers(connection)

    microsoft_answers(mocked)
    sync_insights(connection, sleep=lambda seconds: None)

    assert CampaignInsight.objects.count() == 3
    assert insight_numbers(connection) == first


def test_a_resync_replaces_changed_numbers_instead_of_adding_rows(mocked, connection):
    microsoft_answers(mocked)
    sync_insights(connection, sleep=lambda seconds: None)
    later = [row[:] for row in ROWS]
    later[1][7] = "4"  # Brand on 11-22: conversions arrived late, 1.5 → 4
    later[1][6] = "41.00"

    mocked.reset()
    microsoft_answers(mocked, rows=later)
    sync_insights(connection, sleep=lambda seconds: None)

    assert CampaignInsight.objects.count() == 3
    brand = CampaignInsight.objects.get(date=date(2026, 11, 22), campaign_id="111")
    assert (brand.conversions, brand.spend) == (Decimal("4.00"), Decimal("41.00"))


def test_a_failed_sync_leaves_the_previous_numbers_and_records_microsofts_reason(mocked, connection):
    microsoft_answers(mocked)
    sync_insights(connection, sleep=lambda seconds: None)
    connection.refresh_from_db()
    before, synced_at = insight_numbers(connection), connection.last_insights_sync_at

    mocked.reset()
    mocked.post(SUBMIT_URL, **fault(207, "ConcurrentRequestOverLimit",
                                     "You have exceeded the number of concurrent report requests."))
    result = sync_insights(connection, sleep=lambda seconds: None)

    assert result.failed
    assert insight_numbers(connection) == before
    connection.refresh_from_db()
    assert connection.last_insights_sync_at == synced_at
    assert connection.last_error == ("207 ConcurrentRequestOverLimit: You have exceeded the number of concurrent "
                                     "report requests.")
    assert connection.last_error_operation == Connection.INSIGHTS
    assert "Resync now" in health.last_failure(connection)  # our hint, beside Microsoft's words


def test_a_report_pending_for_a_while_is_polled_with_growing_waits_then_downloaded(mocked, connection):
    microsoft_answers(mocked, polls=[pending(), pending(), pending()])
    waits = []

    result = sync_insights(connection, sleep=waits.append)

    assert result.outcome == "ok"
    assert waits == [5, 10, 20]
    assert len(calls_to(mocked, POLL_URL)) == 4


def test_polling_gives_up_after_the_configured_number_of_polls(mocked, settings, connection):
    settings.ADSYNC_INSIGHTS_MAX_POLLS = 6
    mocked.post(SUBMIT_URL, json={"ReportRequestId": "slow"})
    mocked.post(POLL_URL, **pending())
    waits = []

    result = sync_insights(connection, sleep=waits.append)

    assert result.failed
    assert len(calls_to(mocked, POLL_URL)) == 6
    assert waits == [5, 10, 20, 40, 60]
    connection.refresh_from_db()
    assert "still Pending after 6 polls" in connection.last_error
    assert connection.last_insights_sync_at is None
    assert not CampaignInsight.objects.exists()


def test_a_report_that_failed_at_microsoft_is_a_failed_sync(mocked, connection):
    mocked.post(SUBMIT_URL, json={"ReportRequestId": "r"})
    mocked.post(POLL_URL, json={"ReportRequestStatus": {"Status": "Error", "ReportDownloadUrl": None}})

    result = sync_insights(connection, sleep=lambda seconds: None)

    assert result.failed and 'Status "Error"' in result.message
    assert calls_to(mocked, DOWNLOAD_URL) == []


def test_success_without_a_download_url_means_no_data_and_is_still_a_successful_sync(mocked, connection):
    mocked.post(SUBMIT_URL, json={"ReportRequestId": "r"})
    mocked.post(POLL_URL, **success(url=None))

    result = sync_insights(connection, sleep=lambda seconds: None)

    assert (result.outcome, result.rows) == ("ok", 0)
    connection.refresh_from_db()
    assert connection.last_insights_sync_at is not None


def test_an_expired_download_link_is_replaced_by_polling_once_more(mocked, connection):
    fresh = DOWNLOAD_URL.replace("4711", "4712")
    mocked.post(SUBMIT_URL, json={"ReportRequestId": "r"})
    mocked.post(POLL_URL, **success())
    mocked.post(POLL_URL, **success(fresh))
    mocked.get(DOWNLOAD_URL, status=403, body="<Error><Code>AuthenticationFailed</Code></Error>")
    mocked.get(fresh, body=report_zip())

    result = sync_insights(connection, sleep=lambda seconds: None)

    assert (result.outcome, result.rows) == ("ok", 3)


def test_an_expired_access_token_is_refreshed_once_and_the_report_request_retried(mocked, connection):
    mocked.post(SUBMIT_URL, **fault(109, "AuthenticationTokenExpired", "Authentication token expired.", 401))
    mocked.post(TOKEN_URL, json={"access_token": "access-2", "refresh_token": "refresh-2", "expires_in": 3600,
                                 "token_type": "Bearer"})
    microsoft_answers(mocked)

    result = sync_insights(connection, sleep=lambda seconds: None)

    assert result.outcome == "ok"
    submits = calls_to(mocked, SUBMIT_URL)
    assert [c.request.headers["Authorization"] for c in submits] == ["Bearer access-1", "Bearer access-2"]
    assert calls_to(mocked, POLL_URL)[0].request.headers["Authorization"] == "Bearer access-2"
    connection.refresh_from_db()
    assert connection.refresh_token == "refresh-2"


def test_a_connection_that_is_not_active_is_skipped_and_says_so(mocked, site, make_connection):
    expired = make_connection(site, status=Connection.TOKEN_EXPIRED)

    result = sync_insights(expired, sleep=lambda seconds: None)

    assert result.outcome == "skipped"
    assert "not active (Token expired)" in result.line()
    assert len(mocked.calls) == 0


# --- The schedule ----------------------------------------------------------------------------------

@time_machine.travel(datetime(2026, 11, 23, 6, 30, tzinfo=dt_timezone.utc), tick=False)
def test_setup_schedules_creates_one_insights_cron_at_0500_utc_and_is_idempotent():
    call_command("setup_schedules", stdout=io.StringIO())
    first = Schedule.objects.get(name="adsync:insights")
    out = io.StringIO()
    call_command("setup_schedules", stdout=out)

    schedule = Schedule.objects.get(name="adsync:insights")
    assert (schedule.schedule_type, schedule.cron, schedule.func) == (
        Schedule.CRON, "0 5 * * *", "adsync.jobs.insights")
    next_run = schedule.next_run.astimezone(dt_timezone.utc)
    assert (next_run.hour, next_run.minute) == (5, 0)
    assert next_run == datetime(2026, 11, 24, 5, 0, tzinfo=dt_timezone.utc)  # 06:30 now: tomorrow's 05:00
    assert schedule.next_run == first.next_run and schedule.pk == first.pk
    assert "up to date: adsync:insights" in out.getvalue()


@time_machine.travel(datetime(2026, 11, 23, 3, 0, tzinfo=dt_timezone.utc), tick=False)
def test_a_changed_cron_gets_its_next_run_recomputed_in_utc():
    Schedule.objects.create(name="adsync:insights", func="adsync.jobs.insights",
                            schedule_type=Schedule.CRON, cron="0 7 * * 1")
    Schedule.objects.filter(name="adsync:insights").update(next_run=datetime(2026, 11, 30, 7, tzinfo=dt_timezone.utc))

    ensure_schedules()

    schedule = Schedule.objects.get(name="adsync:insights")
    assert schedule.cron == "0 5 * * *"
    assert schedule.next_run == datetime(2026, 11, 23, 5, 0, tzinfo=dt_timezone.utc)


def test_the_schedule_queues_one_sync_per_active_connection(site, make_connection,
                                                            django_capture_on_commit_callbacks):
    active = [make_connection(site), make_connection(site, account_id="999")]
    make_connection(site, status=Connection.DISCONNECTED)

    with django_capture_on_commit_callbacks(execute=True):
        summary = jobs.insights()

    assert summary == "queued the insights sync for 2 active connection(s)"
    queued = [item.task for item in OrmQ.objects.all()]
    expected = sorted(("adsync.jobs.sync_insights", (c.pk, 14)) for c in active)
    assert sorted((t["func"], t["args"]) for t in queued) == expected


def test_the_queued_task_syncs_its_connection(mocked, connection):
    microsoft_answers(mocked)

    line = jobs.sync_insights(connection.pk)

    assert line.startswith(f"connection {connection.pk} (") and ": ok, 3 campaign-day row(s)" in line


# --- The command ---------------------------------------------------------------------------------

def test_resync_insights_prints_a_line_per_connection_and_a_summary_and_exits_0(mocked, site, connection,
                                                                                make_connection):
    make_connection(site, status=Connection.TOKEN_EXPIRED)
    microsoft_answers(mocked)
    out = io.StringIO()

    call_command("resync_insights", "--days", "7", stdout=out)  # no exception: exit status 0

    lines = out.getvalue().splitlines()
    assert ": ok, 3 campaign-day row(s)" in lines[0]
    assert "skipped: not active (Token expired)" in lines[1]
    assert lines[2] == "2 connection(s): 1 ok, 1 skipped (not active), 0 failed."
    request = json.loads(calls_to(mocked, SUBMIT_URL)[0].request.body)["ReportRequest"]
    start, end = request["Time"]["CustomDateRangeStart"], request["Time"]["CustomDateRangeEnd"]
    assert date(end["Year"], end["Month"], end["Day"]) - date(start["Year"], start["Month"], start["Day"]) == (
        timedelta(days=6))


def test_resync_insights_exits_non_zero_when_a_connection_failed_and_still_syncs_the_others(mocked, site,
                                                                                            make_connection):
    failing = make_connection(site, account_id="111111")
    healthy = make_connection(site, account_id="222222")
    mocked.post(SUBMIT_URL, match=[matchers.header_matcher({"CustomerAccountId": "111111"})],
                **fault(2003, "ReportingServiceAccountNotAuthorized", "The account is not authorized."))
    microsoft_answers(mocked, account_id="222222")
    out = io.StringIO()

    with pytest.raises(CommandError) as failure:
        call_command("resync_insights", "--site", site.key, stdout=out)

    assert failure.value.returncode == 1  # manage.py exits with this status
    assert str(failure.value) == "2 connection(s): 1 ok, 0 skipped (not active), 1 failed."
    assert f"connection {failing.pk} (" in out.getvalue() and "failed: 2003" in out.getvalue()
    assert CampaignInsight.objects.filter(connection=healthy).count() == 3


def test_resync_insights_can_target_one_connection(mocked, site, connection, make_connection):
    other = make_connection(site, account_id="333")
    microsoft_answers(mocked)
    out = io.StringIO()

    call_command("resync_insights", "--connection", str(connection.pk), stdout=out)

    assert len(calls_to(mocked, SUBMIT_URL)) == 1
    assert not CampaignInsight.objects.filter(connection=other).exists()


def test_resync_insights_refuses_an_unknown_site_key():
    with pytest.raises(CommandError, match="No site with key 'pk_nope'"):
        call_command("resync_insights", "--site", "pk_nope")


# --- The admin ------------------------------------------------------------------------------------

def test_resync_now_queues_one_sync_per_active_connection_and_says_so(admin_client, site, make_connection,
                                                                      django_capture_on_commit_callbacks):
    active = make_connection(site)
    expired = make_connection(site, status=Connection.TOKEN_EXPIRED)

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(reverse("admin:adsync_connection_changelist"), {
            "action": "resync_now", "_selected_action": [active.pk, expired.pk]}, follow=True)

    assert [item.task["args"] for item in OrmQ.objects.all()] == [(active.pk, 14)]
    texts = [str(m) for m in response.context["messages"]]
    assert any(t.startswith("Insights resync queued for 1 connection:") for t in texts)
    assert any("Not queued" in t and "Token expired" in t for t in texts)


def test_the_card_shows_a_14_day_chart_and_the_microsoft_lag_note(admin_client, connection):
    today = date.today()
    CampaignInsight.objects.create(connection=connection, date=today - timedelta(days=2), campaign_id="1",
                                   campaign_name="Brand", spend=Decimal("12.50"), conversions=Decimal("3"),
                                   currency="EUR")

    response = admin_client.get(reverse("admin:adsync_connection_change", args=[connection.pk]))

    html = response.content.decode()
    assert "<svg" in html and html.count("<rect") == 14
    assert "spend 12.5 EUR, conversions 3" in html
    assert "lags 1–3 days" in html and "4–12 hours" in html


def test_the_insights_list_filters_by_date_range_and_totals_every_matching_row(admin_client, connection):
    for day, spend in ((1, "10.00"), (2, "20.00"), (3, "40.00")):
        CampaignInsight.objects.create(connection=connection, date=date(2026, 11, day), campaign_id="1",
                                       clicks=day, spend=Decimal(spend), currency="USD")

    response = admin_client.get(reverse("admin:adsync_campaigninsight_changelist"),
                                {"date__gte": "2026-11-02", "date__lte": "2026-11-03",
                                 "connection__id__exact": connection.pk})

    assert response.status_code == 200
    assert response.context["cl"].result_count == 2
    (totals,) = response.context["insight_totals"]
    assert (totals["rows"], totals["clicks"], totals["spend"]) == (2, 5, Decimal("60.00"))
    assert 'id="insight-totals"' in response.content.decode()
