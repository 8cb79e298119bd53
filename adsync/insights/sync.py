"""The insights sync: campaign performance for the last N days, from Microsoft into CampaignInsight.

Run daily at 05:00 UTC by the `adsync:insights` job (adsync/jobs.py, which queues one task per
active connection), by the card's "Resync now" admin action (the same per-connection task) and
by `manage.py resync_insights` (in the foreground). Guarantees:

- All HTTP (submit, bounded poll, download) happens before any write, and the rows are then
  upserted in one transaction: a failed run leaves the previous numbers exactly as they were.
- Upsert on (connection, date, campaign_id): a re-sync replaces numbers, never duplicates rows.
- Success sets Connection.last_insights_sync_at (the card's "Last sync"; stale after 24 h);
  failure records Microsoft's verbatim reason, with our hint beside it, on the card.

Reference: docs/microsoft-api.md#reporting. Why the report time zone is London: docs/insights.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta

from django.db import transaction
from django.utils import timezone

from adsync.conf import conf
from adsync.connections import health, tokens
from adsync.microsoft.errors import Kind, MicrosoftAdsError
from adsync.microsoft.reporting import ERROR, CampaignDay, ReportingClient, ReportStatus
from adsync.models import CampaignInsight, Connection

log = logging.getLogger(__name__)

DEFAULT_DAYS = 14
POLL_FIRST_DELAY = 5.0
POLL_MAX_DELAY = 60.0
UPDATED_FIELDS = ["campaign_name", "impressions", "clicks", "spend", "conversions", "revenue", "currency",
                  "synced_at"]

OK, SKIPPED, FAILED = "ok", "skipped", "failed"


@dataclass
class InsightsResult:
    """What one connection's sync did; printed by the command, returned by the task."""

    connection_id: int
    label: str
    outcome: str
    rows: int = 0
    start: date | None = None
    end: date | None = None
    message: str = ""
    kind: str = ""  # the failure's classification (adsync/microsoft/errors.py Kind)

    @property
    def retryable(self) -> bool:
        """A failure the same request may get over soon: network, 5xx, a report still pending, throttling."""
        return self.failed and self.kind in (Kind.TRANSIENT, Kind.THROTTLED)

    @property
    def failed(self) -> bool:
        return self.outcome == FAILED

    def line(self) -> str:
        head = f"connection {self.connection_id} ({self.label})"
        if self.outcome == OK:
            return f"{head}: ok, {self.rows} campaign-day row(s) for {self.start}..{self.end}"
        return f"{head}: {self.outcome}: {self.message}"


def poll_delays(max_polls: int) -> list[float]:
    """Bounded back-off between polls: 5, 10, 20, 40, then 60 s; `max_polls - 1` waits in all."""
    return [min(POLL_MAX_DELAY, POLL_FIRST_DELAY * 2 ** i) for i in range(max(0, max_polls - 1))]


def report_range(days: int, today: date | None = None) -> tuple[date, date]:
    """The last `days` days, ending today (UTC), never later than today in the London report zone."""
    end = today or timezone.now().date()
    return end - timedelta(days=max(1, days) - 1), end


def sync_insights(connection: Connection, days: int = DEFAULT_DAYS, *,
                  sleep: Callable[[float], None] = time.sleep) -> InsightsResult:
    """Fetch, then upsert, one connection's daily campaign rows. Never raises MicrosoftAdsError."""
    result = InsightsResult(connection.pk, str(connection), OK)
    if not connection.is_active:
        result.outcome = SKIPPED
        result.message = f"not active ({connection.get_status_display()}); reconnect the account to sync insights"
        return result
    result.start, result.end = report_range(days)
    try:
        rows = _fetch(connection, result.start, result.end, sleep)
    except MicrosoftAdsError as err:
        result.outcome, result.message, result.kind = FAILED, _reason(err), str(err.kind)
        health.record_failure(connection, Connection.INSIGHTS, err)
        log.warning("insights sync failed for connection %s: %s", connection.pk, err.kind)
        return result
    result.rows = upsert(connection, rows)
    Connection.objects.filter(pk=connection.pk).update(last_insights_sync_at=timezone.now())
    log.info("insights %s", result.line())
    return result


def _reason(err: MicrosoftAdsError) -> str:
    """Microsoft's words verbatim, our hint beside them."""
    hint = err.hint
    return f"{err.describe()} — {hint}" if hint else err.describe()


def _fetch(connection: Connection, start: date, end: date, sleep: Callable[[float], None]) -> list[CampaignDay]:
    """Submit, poll within the bound, download. Any MicrosoftAdsError ends the run before a write."""
    reporting = _Reporting(connection)
    report_id = reporting.call(lambda client: client.submit_campaign_performance(
        start, end, conf.insights_report_time_zone))
    status = wait_for_report(lambda: reporting.call(lambda client: client.poll(report_id)), sleep)
    if status.url is None:
        return []  # Success without a URL: Microsoft has no data for these days
    try:
        return reporting.call(lambda client: client.download(status.url))
    except MicrosoftAdsError as err:
        if err.http_status is None or err.http_status < 400:
            raise
    # The link lives 5 minutes: poll once more for a fresh one and try again.
    status = reporting.call(lambda client: client.poll(report_id))
    return reporting.call(lambda client: client.download(status.url)) if status.url else []


def wait_for_report(poll: Callable[[], ReportStatus], sleep: Callable[[float], None],
                    max_polls: int | None = None) -> ReportStatus:
    """Poll until Success or Error, sleeping with bounded back-off; give up after `max_polls` polls.

    The first poll is immediate (small reports are often ready at once); `sleep` is injectable
    so tests do not wait.
    """
    max_polls = max(1, max_polls or conf.insights_max_polls)
    delays = poll_delays(max_polls)
    for attempt in range(max_polls):
        if attempt:
            sleep(delays[attempt - 1])
        status = poll()
        if status.status == ERROR:
            raise MicrosoftAdsError('Microsoft reported Status "Error" while generating the report',
                                    kind=Kind.TRANSIENT)
        if status.done:
            return status
    waited = sum(delays)
    waited_text = f"{waited:.0f} s" if waited < 120 else f"{waited / 60:.0f} min"
    raise MicrosoftAdsError(
        f"The report was still Pending after {max_polls} polls over {waited_text}; adsync gave up for now. "
        "The next daily sync tries again, or click Resync now later.", kind=Kind.TRANSIENT)


class _Reporting:
    """A ReportingClient that survives one token refresh: each call goes through call_with_refresh."""

    def __init__(self, connection: Connection):
        self.connection = connection
        self.access_token = tokens.access_token_for(connection)

    def _client(self, access_token: str) -> ReportingClient:
        return ReportingClient(access_token=access_token, customer_id=self.connection.customer_id,
                               account_id=self.connection.account_id)

    def call(self, operation):
        result, self.access_token = tokens.call_with_refresh(
            self.connection, self.access_token, lambda token: operation(self._client(token)), Connection.INSIGHTS)
        return result


def upsert(connection: Connection, rows: list[CampaignDay]) -> int:
    """Insert or replace each (date, campaign) row in one statement; returns the number of rows written."""
    now = timezone.now()
    merged: dict[tuple[date, str], CampaignInsight] = {}
    for row in rows:
        key = (row.date, row.campaign_id)
        if key in merged:
            _add(merged[key], row)  # one statement may not touch a row twice (PostgreSQL ON CONFLICT)
            continue
        merged[key] = CampaignInsight(
            connection=connection, date=row.date, campaign_id=row.campaign_id, campaign_name=row.campaign_name,
            impressions=row.impressions, clicks=row.clicks, spend=row.spend, conversions=row.conversions,
            revenue=row.revenue, currency=row.currency, synced_at=now)
    with transaction.atomic():
        CampaignInsight.objects.bulk_create(
            merged.values(), update_conflicts=True, unique_fields=["connection", "date", "campaign_id"],
            update_fields=UPDATED_FIELDS, batch_size=500)
    return len(merged)


def _add(insight: CampaignInsight, row: CampaignDay) -> None:
    insight.impressions += row.impressions
    insight.clicks += row.clicks
    insight.spend += row.spend
    insight.conversions += row.conversions
    insight.revenue += row.revenue


def sync_many(connections, days: int = DEFAULT_DAYS, *, sleep: Callable[[float], None] = time.sleep,
              progress: Callable[[InsightsResult], None] | None = None) -> list[InsightsResult]:
    """Sync each connection in turn (the foreground command); one failure does not stop the rest."""
    results = []
    for connection in connections:
        result = sync_insights(connection, days, sleep=sleep)
        if progress:
            progress(result)
        results.append(result)
    return results
