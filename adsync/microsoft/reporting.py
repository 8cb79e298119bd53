"""Reporting v13 over REST/JSON: submit a report, poll it, download it.

Two reports: campaign performance (daily numbers per campaign, for the insights card) and
conversion performance per goal (daily conversions per goal, for reconciling what adsync sent
with what Microsoft counts).

Reference: docs/microsoft-api.md#reporting. Base URL: MICROSOFT_ADS_REPORTING_API_URL.
The download URL is a short-lived signed link (5 minutes, possibly on another domain), so it is
fetched without our Microsoft headers: the access token never leaves for a foreign host.
"""

from __future__ import annotations

import csv
import io
import zipfile
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation

import requests

from adsync.conf import conf
from adsync.microsoft.errors import Kind, MicrosoftAdsError, fault_from_response
from adsync.microsoft.http import get, new_session, post_json

SUBMIT_GENERATE_REPORT = "/Reporting/v13/GenerateReport/Submit"
# https://learn.microsoft.com/en-us/advertising/reporting-service/submitgeneratereport?view=bingads-13
POLL_GENERATE_REPORT = "/Reporting/v13/GenerateReport/Poll"
# https://learn.microsoft.com/en-us/advertising/reporting-service/pollgeneratereport?view=bingads-13

# TimePeriod is required for Daily aggregation to take effect (docs/microsoft-api.md#report-request); the rest is
# what the card shows.
CAMPAIGN_COLUMNS = ["TimePeriod", "AccountId", "CampaignId", "CampaignName", "Impressions", "Clicks", "Spend",
                    "Conversions", "Revenue", "CurrencyCode"]
REQUIRED_COLUMNS = {"TimePeriod", "CampaignId"}
# Conversions per goal per day. ConversionPerformanceReportRequest groups by goal (Goal, GoalId)
# and requires TimePeriod. Conversions/AllConversions are deprecated (they report 0); the
# *Qualified columns replace them. The All* columns include goals excluded from bidding, so they
# are what a reconciliation compares with what was sent.
# https://learn.microsoft.com/en-us/advertising/reporting-service/conversionperformancereportrequest?view=bingads-13
# https://learn.microsoft.com/en-us/advertising/reporting-service/conversionperformancereportcolumn?view=bingads-13
GOAL_COLUMNS = ["TimePeriod", "AccountId", "GoalId", "Goal", "GoalType", "AllConversionsQualified", "AllRevenue"]
GOAL_REQUIRED_COLUMNS = {"TimePeriod", "GoalId"}
MAX_REPORT_BYTES = 64 * 1024 * 1024  # a 14-day campaign report is kilobytes; refuse a zip bomb

PENDING, SUCCESS, ERROR = "Pending", "Success", "Error"


@dataclass(frozen=True)
class ReportStatus:
    """PollGenerateReport's answer. Success with no URL means "no data for these parameters"."""

    status: str
    url: str | None = None

    @property
    def done(self) -> bool:
        return self.status in (SUCCESS, ERROR)


@dataclass(frozen=True)
class CampaignDay:
    """One parsed report row: a campaign's numbers for one day."""

    date: date
    campaign_id: str
    campaign_name: str
    impressions: int
    clicks: int
    spend: Decimal
    conversions: Decimal
    revenue: Decimal
    currency: str


@dataclass(frozen=True)
class GoalDay:
    """One parsed conversion-report row: a goal's conversions and revenue for one day."""

    date: date
    goal_id: str
    goal_name: str
    conversions: Decimal
    revenue: Decimal


class ReportingClient:
    """One ad account's view of the Reporting service: the four headers of docs/microsoft-api.md#request-headers."""

    def __init__(self, *, access_token: str, customer_id: str, account_id: str,
                 developer_token: str | None = None, session: requests.Session | None = None):
        self.session = session or new_session()
        self.account_id = str(account_id)
        self.headers = {
            "Authorization": f"Bearer {access_token}",
            "DeveloperToken": developer_token or conf.developer_token,
            "CustomerId": str(customer_id),
            "CustomerAccountId": self.account_id,
        }

    def _post(self, path: str, body: dict) -> dict:
        response = post_json(self.session, conf.reporting_api_url + path, body, self.headers)
        if not response.ok:
            raise fault_from_response(response)
        try:
            return response.json() or {}
        except ValueError:
            raise MicrosoftAdsError(f"Microsoft answered {path} with HTTP {response.status_code} and no JSON",
                                    kind=Kind.TRANSIENT, http_status=response.status_code) from None

    def submit_campaign_performance(self, start: date, end: date, time_zone: str) -> str:
        """Ask for daily rows per campaign from `start` to `end` (inclusive); returns the report request id."""
        return self._submit(campaign_report_request(self.account_id, start, end, time_zone))

    def submit_goal_performance(self, start: date, end: date, time_zone: str) -> str:
        """Ask for conversions per goal and day from `start` to `end` (inclusive); returns the report request id."""
        return self._submit(goal_report_request(self.account_id, start, end, time_zone))

    def _submit(self, report_request: dict) -> str:
        payload = self._post(SUBMIT_GENERATE_REPORT, {"ReportRequest": report_request})
        report_id = payload.get("ReportRequestId")
        if not report_id:
            raise MicrosoftAdsError("Microsoft accepted the report request but returned no ReportRequestId",
                                    kind=Kind.REVIEW)
        return str(report_id)

    def poll(self, report_id: str) -> ReportStatus:
        payload = self._post(POLL_GENERATE_REPORT, {"ReportRequestId": report_id})
        raw = payload.get("ReportRequestStatus") or {}
        return ReportStatus(status=str(raw.get("Status") or PENDING), url=raw.get("ReportDownloadUrl") or None)

    def download(self, url: str) -> list[CampaignDay]:
        """Fetch the zipped campaign CSV (no Microsoft headers: the URL carries its own signature) and parse it."""
        return parse_report_csv(read_report_zip(self._fetch(url)))

    def download_goal_performance(self, url: str) -> list[GoalDay]:
        """Fetch and parse the zipped conversion report that submit_goal_performance asked for."""
        return parse_goal_report_csv(read_report_zip(self._fetch(url)))

    def _fetch(self, url: str) -> bytes:
        response = get(self.session, url)
        if not response.ok:
            raise MicrosoftAdsError(
                f"HTTP {response.status_code} downloading the report (download links expire after 5 minutes)",
                kind=Kind.TRANSIENT, http_status=response.status_code)
        return response.content


def campaign_report_request(account_id: str, start: date, end: date, time_zone: str) -> dict:
    """The CampaignPerformanceReportRequest (docs/microsoft-api.md#report-request): FormatVersion 2.0 (no thousands
    separators), Daily."""
    return {
        "Type": "CampaignPerformanceReportRequest",
        "Format": "Csv",
        "FormatVersion": "2.0",
        "ReportName": "adsync daily campaign performance",
        "ExcludeReportHeader": True,
        "ExcludeReportFooter": True,
        "ReturnOnlyCompleteData": False,  # true fails with 2004 whenever the range includes today
        "Aggregation": "Daily",
        "Columns": CAMPAIGN_COLUMNS,
        "Scope": {"AccountIds": [str(account_id)]},
        "Time": {
            "CustomDateRangeStart": _day(start),
            "CustomDateRangeEnd": _day(end),
            "ReportTimeZone": time_zone,
        },
    }


def goal_report_request(account_id: str, start: date, end: date, time_zone: str) -> dict:
    """A daily ConversionPerformanceReportRequest: one row per goal and day, for one account."""
    return {
        **campaign_report_request(account_id, start, end, time_zone),
        "Type": "ConversionPerformanceReportRequest",
        "ReportName": "adsync daily conversions per goal",
        "Columns": GOAL_COLUMNS,
    }


def _day(value: date) -> dict:
    return {"Day": value.day, "Month": value.month, "Year": value.year}


def parse_report_zip(data: bytes) -> list[CampaignDay]:
    """Open Microsoft's zip (one CSV inside) and parse it as a campaign report."""
    return parse_report_csv(read_report_zip(data))


def read_report_zip(data: bytes) -> str:
    """The text of the one CSV in Microsoft's zip; a bad archive is an error, not zero rows."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = [info for info in archive.infolist() if not info.is_dir()]
            if len(members) != 1:
                raise MicrosoftAdsError(f"The report zip holds {len(members)} files, expected one CSV",
                                        kind=Kind.REVIEW)
            if members[0].file_size > MAX_REPORT_BYTES:
                raise MicrosoftAdsError("The report is larger than adsync accepts", kind=Kind.REVIEW)
            text = archive.read(members[0]).decode("utf-8-sig")
    except zipfile.BadZipFile:
        raise MicrosoftAdsError("The downloaded report is not a zip file", kind=Kind.TRANSIENT) from None
    return text


def parse_report_csv(text: str) -> list[CampaignDay]:
    """Rows of a campaign performance CSV, with or without Microsoft's metadata header and footer.

    Microsoft's layout (docs/microsoft-api.md#reporting): quoted metadata lines ("Report Name: …", "Rows: …"), a blank line,
    the column header row, the data rows, a blank line and a copyright footer. The column header
    is found by name, and only rows as wide as it are data, so both ends are skipped whatever
    ExcludeReportHeader/Footer did.
    """
    return [_campaign_day(cells) for cells in _report_rows(text, REQUIRED_COLUMNS)]


def parse_goal_report_csv(text: str) -> list[GoalDay]:
    """Rows of the conversion report per goal (same layout rules as parse_report_csv).

    Conversions come from AllConversionsQualified (or ConversionsQualified), revenue from
    AllRevenue (or Revenue): doubles, since offline conversions can be partly attributed.
    """
    return [_goal_day(cells) for cells in _report_rows(text, GOAL_REQUIRED_COLUMNS)]


def _report_rows(text: str, required: set[str]) -> list[dict[str, str]]:
    """The data rows as {column: cell}: the header row is found by its required names, and only rows as
    wide as it are data, so metadata lines, blank lines and the footer are skipped."""
    rows = list(csv.reader(io.StringIO(text)))
    header_at = next((i for i, row in enumerate(rows) if required <= {c.strip() for c in row}), None)
    if header_at is None:
        raise MicrosoftAdsError(f"The report has no column header row with {' and '.join(sorted(required))}",
                                kind=Kind.REVIEW)
    header = [c.strip() for c in rows[header_at]]
    # A short row is the blank separator or the copyright footer.
    return [dict(zip(header, row, strict=True)) for row in rows[header_at + 1:] if len(row) == len(header)]


def _goal_day(cells: dict[str, str]) -> GoalDay:
    conversions = cells.get("AllConversionsQualified", cells.get("ConversionsQualified"))
    revenue = cells.get("AllRevenue", cells.get("Revenue"))
    return GoalDay(
        date=_parse_date(cells["TimePeriod"]),
        goal_id=cells["GoalId"].strip(),
        goal_name=cells.get("Goal", "").strip(),
        conversions=_number(conversions),
        revenue=_number(revenue),
    )


def _campaign_day(cells: dict[str, str]) -> CampaignDay:
    return CampaignDay(
        date=_parse_date(cells["TimePeriod"]),
        campaign_id=cells["CampaignId"].strip(),
        campaign_name=cells.get("CampaignName", "").strip(),
        impressions=int(_number(cells.get("Impressions"))),
        clicks=int(_number(cells.get("Clicks"))),
        spend=_number(cells.get("Spend")),
        conversions=_number(cells.get("Conversions")),
        revenue=_number(cells.get("Revenue")),
        currency=cells.get("CurrencyCode", "").strip()[:3],
    )


def _parse_date(raw: str) -> date:
    """Daily TimePeriod is yyyy-mm-dd (docs/microsoft-api.md#report-download); m/d/yyyy is accepted in case an older
    format slips through."""
    raw = raw.strip()
    for fmt in ("%Y-%m-%d", "%m/%d/%Y"):
        try:
            return datetime.strptime(raw, fmt).date()
        except ValueError:
            continue
    raise MicrosoftAdsError(f"Unexpected TimePeriod {raw!r} in the report", kind=Kind.REVIEW)


def _number(raw: str | None) -> Decimal:
    """Empty cells and Microsoft's "--" (not computed) are zero; separators are dropped defensively."""
    text = (raw or "").strip().replace(",", "")
    if text in ("", "--"):
        return Decimal(0)
    try:
        return Decimal(text)
    except InvalidOperation:
        raise MicrosoftAdsError(f"Unexpected number {raw!r} in the report", kind=Kind.REVIEW) from None
