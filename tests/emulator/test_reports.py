"""The per-goal conversion report (ConversionPerformanceReportRequest) in the emulator, and adsync's client for it.

https://learn.microsoft.com/en-us/advertising/reporting-service/conversionperformancereportrequest?view=bingads-13
"""

from __future__ import annotations

import csv
import gc
import io
import zipfile
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from adsync.microsoft.reporting import (
    GOAL_COLUMNS,
    GoalDay,
    ReportingClient,
    goal_report_request,
    parse_goal_report_csv,
)
from emulator.demo import ACCOUNT_ID, CUSTOMER_ID
from emulator.models import EmulatorConversion, EmulatorGoal
from tests.emulator.support import (
    ADJUST,
    APPLY,
    POLL,
    SUBMIT,
    fault_code,
    iso,
    new_click,
    point_adsync_at,
    post,
)

pytestmark = pytest.mark.django_db

GMT = "GreenwichMeanTimeDublinEdinburghLisbonLondon"


def today() -> date:
    return timezone.now().astimezone(UTC).date()


def at(day: date, hour: int = 12) -> datetime:
    """A moment of a past UTC day (hour 12 unless told), never in the future."""
    return min(datetime.combine(day, time(hour), tzinfo=UTC), timezone.now() - timedelta(minutes=1))


def send(client, token: str, items: list[dict]) -> None:
    assert post(client, APPLY, {"OfflineConversions": items}, token).json() == {"PartialErrors": []}


def conversion(name: str, moment: datetime, value: float | None = 10.0, click=None) -> dict:
    """An OfflineConversion for a click made a day before `moment`."""
    click = click or new_click(age=timezone.now() - moment + timedelta(days=1))
    item = {"ConversionName": name, "ConversionTime": iso(moment), "MicrosoftClickId": click.msclkid}
    if value is not None:
        item["ConversionValue"] = value
    return item


def goal_report(start: date, end: date, **overrides) -> dict:
    return {**goal_report_request(ACCOUNT_ID, start, end, GMT), "FormatVersion": "2.0", **overrides}


def rows(client, token: str, request: dict) -> list[dict]:
    """Submit, poll until Success, download and read the CSV rows as dicts ([] for a null URL)."""
    report_id = post(client, SUBMIT, {"ReportRequest": request}, token).json()["ReportRequestId"]
    status = {}
    for _ in range(3):
        status = post(client, POLL, {"ReportRequestId": report_id}, token).json()["ReportRequestStatus"]
        if status["Status"] == "Success":
            break
    if status["ReportDownloadUrl"] is None:
        return []
    archive = zipfile.ZipFile(io.BytesIO(client.get(status["ReportDownloadUrl"]).content))
    text = archive.read(archive.namelist()[0]).decode("utf-8-sig")
    return list(csv.DictReader(io.StringIO(text)))


def picked(report_rows: list[dict], *columns: str) -> list[tuple]:
    return [tuple(row[c] for c in columns) for row in report_rows]


# --- The emulator's report ---------------------------------------------------------------------

def test_conversions_are_reported_per_goal_per_day_without_duplicates(client, token):
    yesterday, before = today() - timedelta(1), today() - timedelta(2)
    first = conversion("Purchase", at(before, 9), 10.0)
    send(client, token, [first, conversion("Purchase", at(before, 15), 5.5), conversion("Lead", at(before), 3.0),
                         conversion("Purchase", at(yesterday), 20.0)])
    send(client, token, [first])   # a repeat: accepted, not counted

    report = rows(client, token, goal_report(before, yesterday))

    purchase, lead = (EmulatorGoal.objects.get(account__account_id=ACCOUNT_ID, name=n).goal_id
                      for n in ("Purchase", "Lead"))
    assert sorted(picked(report, "TimePeriod", "GoalId", "Goal", "AllConversionsQualified", "AllRevenue")) == sorted([
        (before.isoformat(), purchase, "Purchase", "2.00", "15.50"),
        (before.isoformat(), lead, "Lead", "1.00", "3.00"),
        (yesterday.isoformat(), purchase, "Purchase", "1.00", "20.00"),
    ])
    assert {row["GoalType"] for row in report} == {"OfflineConversion"}
    assert {row["AccountId"] for row in report} == {ACCOUNT_ID}


def test_a_retracted_conversion_leaves_the_report_and_a_restated_one_reports_its_new_value(client, token):
    day = today() - timedelta(1)
    kept, restated, retracted = (conversion("Purchase", at(day, h), 10.0) for h in (8, 9, 10))
    send(client, token, [kept, restated, retracted])
    adjustments = [
        {**{k: restated[k] for k in ("ConversionName", "ConversionTime", "MicrosoftClickId")},
         "AdjustmentType": "Restate", "AdjustmentValue": 99.0, "AdjustmentTime": iso(at(day, 11))},
        {**{k: retracted[k] for k in ("ConversionName", "ConversionTime", "MicrosoftClickId")},
         "AdjustmentType": "Retract", "AdjustmentTime": iso(at(day, 11))},
    ]
    assert post(client, ADJUST, {"OfflineConversionAdjustments": adjustments}, token).json() == {"PartialErrors": []}

    columns = ["TimePeriod", "GoalId", "AllConversionsQualified", "ConversionsQualified", "AllRevenue", "Revenue"]
    report = rows(client, token, goal_report(day, day, Columns=columns))

    assert picked(report, "AllConversionsQualified", "ConversionsQualified", "AllRevenue", "Revenue") == [
        ("2.00", "2.00", "109.00", "109.00")]


def test_a_day_whose_only_conversion_was_retracted_has_no_row(client, token):
    day = today() - timedelta(1)
    item = conversion("Purchase", at(day))
    send(client, token, [item])
    EmulatorConversion.objects.update(retracted=True)

    assert rows(client, token, goal_report(day, day)) == []


def test_a_unique_goal_counts_only_the_first_conversion_of_a_click(client, token):
    EmulatorGoal.objects.filter(account__account_id=ACCOUNT_ID, name="Signup").update(count_type="Unique")
    day = today() - timedelta(1)
    click = new_click(age=timedelta(days=2))
    send(client, token, [conversion("Signup", at(day, 9), 1.0, click), conversion("Signup", at(day, 10), 1.0, click),
                         conversion("Purchase", at(day, 9), 1.0, click), conversion("Purchase", at(day, 10), 1.0, click)])

    report = rows(client, token, goal_report(day, day))

    assert sorted(picked(report, "Goal", "AllConversionsQualified")) == [("Purchase", "2.00"), ("Signup", "1.00")]


def test_a_conversion_without_a_value_reports_the_goals_revenue_value(client, token):
    EmulatorGoal.objects.filter(account__account_id=ACCOUNT_ID, name="Lead").update(revenue_value=Decimal("7.5"))
    day = today() - timedelta(1)
    send(client, token, [conversion("Lead", at(day), value=None), conversion("Signup", at(day), value=None)])

    report = rows(client, token, goal_report(day, day))

    assert sorted(picked(report, "Goal", "AllRevenue")) == [("Lead", "7.50"), ("Signup", "0.00")]


def test_days_are_utc_days_and_the_range_is_inclusive(client, token):
    day = today() - timedelta(2)
    send(client, token, [conversion("Purchase", at(day, 0)), conversion("Purchase", at(day, 23)),
                         conversion("Purchase", at(day - timedelta(1), 23)),
                         conversion("Purchase", at(day + timedelta(1), 0))])

    report = rows(client, token, goal_report(day, day))

    assert picked(report, "TimePeriod", "AllConversionsQualified") == [(day.isoformat(), "2.00")]


def test_the_deprecated_conversions_columns_report_zero(client, token):
    day = today() - timedelta(1)
    send(client, token, [conversion("Purchase", at(day))])

    report = rows(client, token, goal_report(day, day, Columns=["TimePeriod", "Goal", "Conversions", "AllConversions",
                                                                 "ConversionsQualified"]))

    assert picked(report, "Conversions", "AllConversions", "ConversionsQualified") == [("0", "0", "1.00")]


def test_summary_aggregation_gives_one_row_per_goal(client, token):
    send(client, token, [conversion("Purchase", at(today() - timedelta(n))) for n in (1, 2, 3)])

    report = rows(client, token, goal_report(today() - timedelta(3), today(), Aggregation="Summary"))

    assert picked(report, "TimePeriod", "Goal", "AllConversionsQualified") == [("", "Purchase", "3.00")]


def test_a_report_without_conversions_succeeds_with_a_null_url(client, token):
    assert rows(client, token, goal_report(today() - timedelta(7), today())) == []


def test_a_conversion_report_without_time_period_is_2015(client, token):
    request = goal_report(today(), today(), Columns=["GoalId", "AllConversionsQualified"])

    response = post(client, SUBMIT, {"ReportRequest": request}, token)

    body = response.json()
    assert (response.status_code, body["Type"], fault_code(response)) == (400, "ApiFaultDetail", 2015)
    assert body["OperationErrors"][0]["ErrorCode"] == "ReportingServiceRequiredColumnsNotSelected"


@pytest.mark.parametrize("overrides", [
    {"Columns": ["TimePeriod", "GoalId", "Clicks"]},                                     # not a column it can fill
    {"Scope": {"Campaigns": [{"AccountId": ACCOUNT_ID, "CampaignId": "1"}]}},             # account scope only
])
def test_what_the_emulator_cannot_build_fails_the_request(client, token, overrides):
    response = post(client, SUBMIT, {"ReportRequest": goal_report(today(), today(), **overrides)}, token)

    assert (response.status_code, fault_code(response)) == (400, 100)


def test_an_account_the_user_cannot_reach_is_106(client, token):
    request = goal_report(today(), today(), Scope={"AccountIds": ["999999999"]})

    response = post(client, SUBMIT, {"ReportRequest": request}, token)

    assert (response.status_code, fault_code(response)) == (403, 106)


# --- adsync's parser -------------------------------------------------------------------------

def test_the_goal_report_parser_skips_microsofts_header_and_footer_and_reads_decimals():
    text = (
        '"Report Name: adsync daily conversions per goal"\r\n"Rows: 2"\r\n\r\n'
        '"TimePeriod","AccountId","GoalId","Goal","GoalType","AllConversionsQualified","AllRevenue"\r\n'
        '"2026-11-21","187654321","11","Closed deal","OfflineConversion","2.50","1,250.00"\r\n'
        '"2026-11-22","187654321","12","Lead","OfflineConversion","1.00","--"\r\n'
        '\r\n"©2026 Microsoft Corporation. All rights reserved. "\r\n')

    assert parse_goal_report_csv(text) == [
        GoalDay(date(2026, 11, 21), "11", "Closed deal", Decimal("2.50"), Decimal("1250.00")),
        GoalDay(date(2026, 11, 22), "12", "Lead", Decimal("1.00"), Decimal(0)),
    ]


def test_the_goal_report_request_asks_for_daily_rows_with_the_goal_columns():
    request = goal_report_request("187654321", date(2026, 11, 1), date(2026, 11, 22), GMT)

    assert (request["Type"], request["Aggregation"], request["Columns"]) == (
        "ConversionPerformanceReportRequest", "Daily", GOAL_COLUMNS)
    assert {"TimePeriod", "GoalId", "Goal"} <= set(GOAL_COLUMNS)
    assert request["Time"]["ReportTimeZone"] == GMT


# --- Through adsync's client, over HTTP -------------------------------------------------------

@pytest.fixture
def live(live_server, settings, demo):
    point_adsync_at(live_server, settings)
    yield live_server
    gc.collect()   # see docs/emulator.md, "Using it in tests"


def test_reporting_client_submits_polls_and_downloads_the_goal_report_over_http(live, client, token):
    yesterday = today() - timedelta(1)
    send(client, token, [conversion("Purchase", at(yesterday, 9), 12.25), conversion("Purchase", at(yesterday, 10), 7.75)])
    reporting = ReportingClient(access_token=token, customer_id=CUSTOMER_ID, account_id=ACCOUNT_ID)

    report_id = reporting.submit_goal_performance(yesterday - timedelta(1), yesterday, GMT)
    statuses = [reporting.poll(report_id) for _ in range(2)]
    days = reporting.download_goal_performance(statuses[-1].url)

    purchase = EmulatorGoal.objects.get(account__account_id=ACCOUNT_ID, name="Purchase").goal_id
    assert [s.status for s in statuses] == ["Pending", "Success"]
    assert days == [GoalDay(yesterday, purchase, "Purchase", Decimal("2.00"), Decimal("20.00"))]
