"""Reporting v13: SubmitGenerateReport, PollGenerateReport and the zipped CSV download (docs/microsoft-api.md#reporting).

Two report types are emulated, with Daily or Summary aggregation:
- CampaignPerformanceReportRequest: numbers derived from a hash of (campaign id, day), so the
  same request always gives the same CSV;
- ConversionPerformanceReportRequest: one row per goal and day built from the conversions the
  emulator received (duplicates and retracted ones left out, restated values used), for
  reconciling what a client sent with what Microsoft counts.
Days are UTC days whatever ReportTimeZone says (the header still names the zone).
"""

from __future__ import annotations

import csv
import hashlib
import io
import secrets
import zipfile
from datetime import UTC, date, datetime, time, timedelta

from django.db.models import F
from django.utils import timezone

from emulator import behaviour
from emulator.auth import reachable_accounts
from emulator.faults import auth_fault, deserialization_fault, operation_fault
from emulator.models import (
    EmulatorCampaign,
    EmulatorConversion,
    EmulatorReportRequest,
    EmulatorUser,
)

CAMPAIGN_REPORT = "CampaignPerformanceReportRequest"
CONVERSION_REPORT = "ConversionPerformanceReportRequest"
ID_LIFETIME = timedelta(days=1)
DOWNLOAD_LIFETIME_SECONDS = 300
ATTRIBUTE_COLUMNS = {"TimePeriod", "AccountId", "AccountName", "AccountNumber", "CampaignId", "CampaignName",
                     "CampaignStatus", "CurrencyCode"}
METRIC_COLUMNS = {"Impressions", "Clicks", "Spend", "Ctr", "AverageCpc", "Conversions", "ConversionsQualified",
                  "AllConversions", "Revenue", "AllRevenue", "ConversionRate", "CostPerConversion",
                  "ReturnOnAdSpend", "ViewThroughConversions"}
# https://learn.microsoft.com/en-us/advertising/reporting-service/conversionperformancereportcolumn?view=bingads-13
# Only the columns the emulator can fill from received conversions (no campaign, keyword or click data).
CONVERSION_ATTRIBUTE_COLUMNS = {"TimePeriod", "AccountId", "AccountName", "AccountNumber", "AccountStatus", "Goal",
                                "GoalId", "GoalType"}
CONVERSION_METRIC_COLUMNS = {"Conversions", "AllConversions", "ConversionsQualified", "AllConversionsQualified",
                             "Revenue", "AllRevenue", "RevenuePerConversion", "AllRevenuePerConversion"}
COLUMNS = {CAMPAIGN_REPORT: ATTRIBUTE_COLUMNS | METRIC_COLUMNS,
           CONVERSION_REPORT: CONVERSION_ATTRIBUTE_COLUMNS | CONVERSION_METRIC_COLUMNS}
# "The report must include the following columns at a minimum: TimePeriod" (the column page's Remarks).
REQUIRED_COLUMNS = {CAMPAIGN_REPORT: set(), CONVERSION_REPORT: {"TimePeriod"}}
TIME_ZONES = {
    "GreenwichMeanTimeDublinEdinburghLisbonLondon": "(GMT) Greenwich Mean Time : Dublin, Edinburgh, Lisbon, London",
    "PacificTimeUSCanadaTijuana": "(GMT-08:00) Pacific Time (US & Canada); Tijuana",
}


# --- Submit and poll -----------------------------------------------------------------------

def submit(user: EmulatorUser, body: dict) -> dict:
    behaviour.inject_report_concurrency_failure()
    request = body.get("ReportRequest")
    if not isinstance(request, dict):
        raise operation_fault(2001, "reporting", message_text="The report request is null.")
    validate(user, request)
    request_id = str(secrets.randbelow(10**10) + 10**10)
    EmulatorReportRequest.objects.create(request_id=request_id, user=user, body=request)
    return {"ReportRequestId": request_id}


def validate(user: EmulatorUser, request: dict) -> None:
    report_type = request.get("Type")
    if report_type not in COLUMNS:
        raise deserialization_fault(f"The emulator supports only {' and '.join(COLUMNS)}.", "reporting")
    if request.get("Format", "Csv") not in ("Csv", "Tsv"):
        raise deserialization_fault("The emulator produces Csv and Tsv reports only.", "reporting")
    columns = request.get("Columns")
    if not isinstance(columns, list) or not columns:
        raise deserialization_fault("Columns is required.", "reporting")
    unknown = [c for c in columns if c not in COLUMNS[report_type]]
    if unknown:
        column_type = report_type.replace("Request", "Column")
        raise deserialization_fault(f"The value '{unknown[0]}' is not a {column_type} the emulator produces.",
                                    "reporting")
    if not REQUIRED_COLUMNS[report_type] <= set(columns):
        raise operation_fault(2015, "reporting", detail=f"Required: {', '.join(sorted(REQUIRED_COLUMNS[report_type]))}.")
    scope = request.get("Scope") or {}
    if report_type == CONVERSION_REPORT and (scope.get("Campaigns") or scope.get("AdGroups")):
        raise deserialization_fault("The emulator scopes conversion reports by AccountIds only.", "reporting")
    if aggregation(request) not in ("Daily", "Summary"):
        raise operation_fault(2007, "reporting", message_text="The emulator supports Daily and Summary aggregation.")
    scope_accounts(user, request)
    start, end = date_range(request)
    if request.get("ReturnOnlyCompleteData") and end >= today():
        raise operation_fault(2004, "reporting")


def poll(user: EmulatorUser, body: dict, download_url) -> dict:
    """Pending for the configured number of polls, then Success (null URL when there is no data)."""
    report = EmulatorReportRequest.objects.filter(
        request_id=str(body.get("ReportRequestId") or ""), user=user,
        created_at__gt=timezone.now() - ID_LIFETIME).first()
    if report is None:
        raise operation_fault(2101, "reporting")
    EmulatorReportRequest.objects.filter(pk=report.pk).update(polls=F("polls") + 1)
    report.refresh_from_db(fields=["polls"])
    switches = behaviour.current()
    if switches.report_failure:
        return _status("Error")
    if report.polls <= switches.report_pending_polls:
        return _status("Pending")
    has_data = bool(rows(report.body))
    return _status("Success", download_url(report.request_id) if has_data else None)


def _status(status: str, url: str | None = None) -> dict:
    return {"ReportRequestStatus": {"ReportDownloadUrl": url, "Status": status}}


# --- The request's scope and time ----------------------------------------------------------

def aggregation(request: dict) -> str:
    """TimePeriod must be a column or the aggregation is ignored and Summary is used
    (docs/microsoft-api.md#report-request)."""
    if "TimePeriod" not in request.get("Columns", []):
        return "Summary"
    return request.get("Aggregation") or "Summary"


def scope_accounts(user: EmulatorUser, request: dict):
    scope = request.get("Scope") or {}
    account_ids = [str(a) for a in scope.get("AccountIds") or []]
    account_ids += [str(c.get("AccountId")) for c in scope.get("Campaigns") or [] if isinstance(c, dict)]
    if not account_ids or not all(a.isdigit() for a in account_ids):
        raise operation_fault(2035, "reporting")
    accounts = reachable_accounts(user).filter(account_id__in=set(account_ids))
    if accounts.count() != len(set(account_ids)):
        raise auth_fault(106, "reporting")
    return accounts


def today() -> date:
    return timezone.now().date()


def date_range(request: dict) -> tuple[date, date]:
    time = request.get("Time") or {}
    if time.get("CustomDateRangeStart") or time.get("CustomDateRangeEnd"):
        start = _day(time.get("CustomDateRangeStart"), 2009)
        end = _day(time.get("CustomDateRangeEnd"), 2010)
        if end < start:
            raise operation_fault(2011, "reporting", message_text="The custom date range end is before its start.")
        if end > today():
            raise operation_fault(2010, "reporting", message_text="The custom date range end is later than today.")
        return start, end
    if time.get("PredefinedTime") in PREDEFINED:
        return PREDEFINED[time["PredefinedTime"]](today())
    raise operation_fault(2008, "reporting", message_text="The report time is null or invalid.")


def _day(value, code: int) -> date:
    try:
        return date(int(value["Year"]), int(value["Month"]), int(value["Day"]))
    except (TypeError, KeyError, ValueError):
        raise operation_fault(code, "reporting", message_text="The custom date range is invalid.") from None


def _month_start(day: date, months_back: int = 0) -> date:
    month_index = day.year * 12 + day.month - 1 - months_back
    return date(month_index // 12, month_index % 12 + 1, 1)


PREDEFINED = {
    "Today": lambda t: (t, t),
    "Yesterday": lambda t: (t - timedelta(1), t - timedelta(1)),
    "LastSevenDays": lambda t: (t - timedelta(7), t - timedelta(1)),
    "ThisWeek": lambda t: (t - timedelta((t.weekday() + 1) % 7), t),
    "LastWeek": lambda t: (t - timedelta((t.weekday() + 1) % 7 + 7), t - timedelta((t.weekday() + 1) % 7 + 1)),
    "LastFourWeeks": lambda t: (t - timedelta(28), t - timedelta(1)),
    "ThisMonth": lambda t: (_month_start(t), t),
    "LastMonth": lambda t: (_month_start(t, 1), _month_start(t) - timedelta(1)),
    "LastThreeMonths": lambda t: (_month_start(t, 3), _month_start(t) - timedelta(1)),
    "LastSixMonths": lambda t: (_month_start(t, 6), _month_start(t) - timedelta(1)),
    "ThisYear": lambda t: (date(t.year, 1, 1), t),
    "LastYear": lambda t: (date(t.year - 1, 1, 1), date(t.year - 1, 12, 31)),
}


# --- Rows ----------------------------------------------------------------------------------

def base_metrics(campaign_id: str, day: date) -> dict:
    """Deterministic daily numbers for one campaign: same (campaign, day), same numbers."""
    seed = int(hashlib.sha256(f"{campaign_id}:{day.isoformat()}".encode()).hexdigest()[:16], 16)
    impressions = 200 + seed % 1800
    clicks = impressions * (2 + (seed >> 12) % 7) // 100
    conversions = clicks * (3 + (seed >> 20) % 10) // 100
    return {
        "Impressions": impressions,
        "Clicks": clicks,
        "Spend": clicks * (40 + (seed >> 28) % 210) / 100,
        "Conversions": conversions,
        "Revenue": float(conversions * (20 + (seed >> 36) % 180)),
        "ViewThroughConversions": (seed >> 44) % 3,
    }


def _sum(metrics: list[dict]) -> dict:
    return {key: sum(m[key] for m in metrics) for key in metrics[0]}


def rows(request: dict) -> list[dict]:
    """One dict per CSV row, for either report type."""
    if request.get("Type") == CONVERSION_REPORT:
        return goal_rows(request)
    return campaign_rows(request)


def campaign_rows(request: dict) -> list[dict]:
    """One dict per CSV row: per campaign and day (Daily) or per campaign (Summary)."""
    start, end = date_range(request)
    days = [start + timedelta(n) for n in range((end - start).days + 1)]
    campaigns = _campaigns(request)
    if aggregation(request) == "Daily":
        return [_row(c, [base_metrics(c.campaign_id, d)], d) for d in days for c in campaigns]
    return [_row(c, [base_metrics(c.campaign_id, d) for d in days], None) for c in campaigns]


def _campaigns(request: dict) -> list[EmulatorCampaign]:
    scope = request.get("Scope") or {}
    account_ids = [str(a) for a in scope.get("AccountIds") or []]
    campaign_ids = [str(c.get("CampaignId")) for c in scope.get("Campaigns") or [] if isinstance(c, dict)]
    campaigns = EmulatorCampaign.objects.select_related("account").order_by("account__account_id", "campaign_id")
    if campaign_ids:
        return list(campaigns.filter(campaign_id__in=campaign_ids))
    return list(campaigns.filter(account__account_id__in=account_ids))


def _row(campaign: EmulatorCampaign, daily: list[dict], day: date | None) -> dict:
    m = _sum(daily)
    m["AllConversions"] = m["Conversions"] + m["ViewThroughConversions"]
    return {
        "TimePeriod": day.isoformat() if day else "",
        "AccountId": campaign.account.account_id, "AccountName": campaign.account.name,
        "AccountNumber": campaign.account.number, "CampaignId": campaign.campaign_id,
        "CampaignName": campaign.name, "CampaignStatus": campaign.status,
        "CurrencyCode": campaign.account.currency_code,
        "Impressions": m["Impressions"], "Clicks": m["Clicks"], "Spend": m["Spend"],
        "Ctr": _percent(m["Clicks"], m["Impressions"]), "AverageCpc": _ratio(m["Spend"], m["Clicks"]),
        "Conversions": m["Conversions"], "ConversionsQualified": m["Conversions"],
        "AllConversions": m["AllConversions"], "Revenue": m["Revenue"], "AllRevenue": m["Revenue"],
        "ConversionRate": _percent(m["Conversions"], m["Clicks"]),
        "CostPerConversion": _ratio(m["Spend"], m["Conversions"]),
        "ReturnOnAdSpend": _percent(m["Revenue"], m["Spend"]),
        "ViewThroughConversions": m["ViewThroughConversions"],
    }


def _percent(part: float, whole: float) -> str:
    return f"{part * 100 / whole:.2f}%" if whole else ""


def _ratio(part: float, whole: float) -> float | str:
    return round(part / whole, 2) if whole else ""


# --- Conversion performance: per goal and day, from the received conversions ------------------

def goal_rows(request: dict) -> list[dict]:
    """Counted conversions per goal and UTC day (Daily) or per goal (Summary).

    Counted means: accepted, not a duplicate, not retracted, and, for a goal whose CountType is
    Unique, the first such conversion of its click (or hashed identity) for that goal. Revenue
    is the restated value when restated, else the value sent, else the goal's revenue value.
    Conversions and AllConversions are deprecated by Microsoft and always report 0.
    """
    start, end = date_range(request)
    daily = aggregation(request) == "Daily"
    account_ids = [str(a) for a in (request.get("Scope") or {}).get("AccountIds") or []]
    until = datetime.combine(end + timedelta(1), time.min, tzinfo=UTC)
    since = datetime.combine(start, time.min, tzinfo=UTC)
    conversions = EmulatorConversion.objects.filter(
        account__account_id__in=account_ids, duplicate=False, retracted=False, goal__isnull=False,
        conversion_time__lt=until).select_related("goal", "account").order_by("conversion_time", "id")
    groups: dict[tuple, list[EmulatorConversion]] = {}
    first_seen: set[tuple] = set()
    for conversion in conversions:
        identity = conversion.dedup_key()[:-1]
        first = identity not in first_seen
        first_seen.add(identity)
        if conversion.conversion_time < since or (conversion.goal.count_type == "Unique" and not first):
            continue
        day = conversion.conversion_time.astimezone(UTC).date() if daily else None
        groups.setdefault((conversion.account.account_id, conversion.goal.goal_id, day), []).append(conversion)
    return [_goal_row(group, day) for (_, _, day), group in sorted(groups.items(), key=_group_order)]


def _group_order(item) -> tuple:
    (account_id, goal_id, day), _ = item
    return (day or date.min, account_id, goal_id)


def _goal_row(conversions: list[EmulatorConversion], day: date | None) -> dict:
    goal, account = conversions[0].goal, conversions[0].account
    count = float(len(conversions))
    revenue = float(sum(_revenue(c) for c in conversions))
    return {
        "TimePeriod": day.isoformat() if day else "",
        "AccountId": account.account_id, "AccountName": account.name, "AccountNumber": account.number,
        "AccountStatus": account.life_cycle_status,
        "Goal": goal.name, "GoalId": goal.goal_id, "GoalType": goal.type,
        "Conversions": 0, "AllConversions": 0,
        "ConversionsQualified": count, "AllConversionsQualified": count,
        "Revenue": revenue, "AllRevenue": revenue,
        "RevenuePerConversion": _ratio(revenue, count), "AllRevenuePerConversion": _ratio(revenue, count),
    }


def _revenue(conversion: EmulatorConversion) -> float:
    value = conversion.reported_value
    if value is None and conversion.goal.revenue_value is not None:
        value = float(conversion.goal.revenue_value)
    return value or 0.0


# --- The file ------------------------------------------------------------------------------

MONEY_COLUMNS = {"Spend", "Revenue", "AllRevenue", "AverageCpc", "CostPerConversion", "RevenuePerConversion",
                 "AllRevenuePerConversion"}
# The *Qualified columns are doubles (partly attributed offline conversions), written with two decimals.
DOUBLE_COLUMNS = {"ConversionsQualified", "AllConversionsQualified"}


def _cell(column: str, value, version_1: bool) -> str:
    """Money with two decimals; FormatVersion 1.0 adds thousands separators, 2.0 does not
    (docs/microsoft-api.md#report-download)."""
    if column in MONEY_COLUMNS and value != "":
        return f"{value:,.2f}" if version_1 else f"{value:.2f}"
    if column in DOUBLE_COLUMNS:
        return f"{value:.2f}"
    return str(value)


def report_csv(request: dict) -> str:
    """Microsoft's layout: metadata lines, a blank line, quoted headers, rows, a blank line, the footer."""
    data = rows(request)
    columns = request["Columns"]
    version_1 = str(request.get("FormatVersion") or "1.0") == "1.0"
    out = io.StringIO()
    writer = csv.writer(out, delimiter="\t" if request.get("Format") == "Tsv" else ",",
                        quoting=csv.QUOTE_ALL, lineterminator="\r\n")
    if not request.get("ExcludeReportHeader"):
        writer.writerows([[line] for line in _header_lines(request, len(data))])
        out.write("\r\n")
    if not request.get("ExcludeColumnHeaders"):
        writer.writerow(columns)
    writer.writerows([_cell(c, row[c], version_1) for c in columns] for row in data)
    if not request.get("ExcludeReportFooter"):
        out.write("\r\n")
        writer.writerow([f"©{timezone.now().year} Microsoft Corporation. All rights reserved. "])
    return "\ufeff" + out.getvalue()


def _header_lines(request: dict, row_count: int) -> list[str]:
    start, end = date_range(request)
    zone = (request.get("Time") or {}).get("ReportTimeZone") or "PacificTimeUSCanadaTijuana"
    zone_text = TIME_ZONES.get(zone, zone)
    last_day = datetime.combine(today(), datetime.min.time())
    return [
        f"Report Name: {request.get('ReportName') or ''}",
        f"Report Time: {_us_date(start)},{_us_date(end)}",
        f"Time Zone: {zone_text}",
        f"Last Completed Available Day: {_us_date(last_day)} 12:00:00 AM {zone_text}",
        f"Last Completed Available Hour: {_us_date(last_day)} 12:00:00 AM {zone_text}",
        f"Report Aggregation: {aggregation(request)}",
        "Report Filter: ",
        f"Potential Incomplete Data: {'true' if end >= today() else 'false'}",
        f"Rows: {row_count}",
    ]


def _us_date(day: date) -> str:
    return f"{day.month}/{day.day}/{day.year}"


def report_zip(report: EmulatorReportRequest) -> bytes:
    """"All downloaded files are ZIP compressed" (docs/microsoft-api.md#reporting): one CSV named after the request id."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        extension = "tsv" if report.body.get("Format") == "Tsv" else "csv"
        archive.writestr(f"{report.request_id}.{extension}", report_csv(report.body).encode())
    return buffer.getvalue()
