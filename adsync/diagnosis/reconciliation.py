"""Reconciliation (check 9): per goal and day, what adsync sent and Microsoft accepted next to what Microsoft counts.

`fetch` asks Reporting for the per-goal conversion report (ConversionPerformanceReportRequest,
docs/microsoft-api.md#per-goal-conversions) and stores its rows (GoalReportDay), so `panels` and the
admin page render from the database alone. adsync's side is the sync log: rows `sent` (Microsoft
answered without a partial error), test conversions (Conversion.SOURCE_ADMIN) left out.

A day is compared only once Microsoft had time to count it: everything adsync sent for that day
is at least REPORTING_LAG older than the report. The verdict compares totals over those days,
so a conversion that lands on the neighbouring day in Microsoft's report time zone does not
raise a false alarm.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal

from django.db import transaction
from django.db.models import Count, Max
from django.db.models.functions import TruncDate
from django.utils import timezone

from adsync.conf import conf
from adsync.diagnosis.context import Context, ago, result
from adsync.insights.sync import report_range, wait_for_report
from adsync.links import connection_page_url
from adsync.microsoft.errors import MicrosoftAdsError
from adsync.microsoft.reporting import GoalDay, ReportingClient
from adsync.models import CheckResult, Connection, Conversion, GoalReportDay, Push
from adsync.models.diagnosis import PASS, SKIP, WARN

REPORT_DAYS = 14
# Microsoft: uploaded offline conversions take up to 6 hours to show in reports (its API docs), 4-12
# hours (its help), "up to 24 hours" (integration guides): wait the longest.
REPORTING_LAG = timedelta(hours=24)
MIN_CONVERSIONS = 10   # fewer compared conversions than this on both sides: too few to call a gap
MAX_POLLS = 4          # the diagnosis waits about 35 s for the report, then keeps the numbers it has
LAG_NOTE = ("Microsoft shows an uploaded conversion in its reports up to 24 hours later, so a day is compared only "
            "once everything adsync sent for it is that old; the verdict compares totals, since a conversion near "
            "midnight may fall on the next day in the report's time zone.")


def fetch(connection: Connection, access_token: str, *, days: int = REPORT_DAYS,
          sleep: Callable[[float], None] = time.sleep, now: datetime | None = None) -> int:
    """Submit, poll (bounded), download and store the per-goal report; returns the rows stored.

    All HTTP first; a failure raises MicrosoftAdsError and leaves the stored rows as they were.
    """
    now = now or timezone.now()
    start, end = report_range(days, now.date())
    client = ReportingClient(access_token=access_token, customer_id=connection.customer_id,
                             account_id=connection.account_id)
    report_id = client.submit_goal_performance(start, end, conf.insights_report_time_zone)
    status = wait_for_report(lambda: client.poll(report_id), sleep, max_polls=MAX_POLLS)
    rows = client.download_goal_performance(status.url) if status.url else []
    return store(connection, start, end, rows, now)


def store(connection: Connection, start: date, end: date, rows: list[GoalDay], now: datetime) -> int:
    """Replace the range's rows: one per day and goal (reported or mapped), zero where Microsoft counted nothing."""
    merged: dict[tuple[str, date], GoalDay] = {}
    for row in rows:
        key = (row.goal_name, row.date)
        if key in merged:  # a name twice (two goals of one name in two scopes): add them up
            old = merged[key]
            row = GoalDay(row.date, old.goal_id, row.goal_name, old.conversions + row.conversions,
                          old.revenue + row.revenue)
        merged[key] = row
    names = {name for name, _ in merged} | set(connection.goal_mappings.values_list("goal_name", flat=True))
    ids = {name: row.goal_id for (name, _), row in merged.items()}
    days = [start + timedelta(days=i) for i in range((end - start).days + 1)]
    objects = [GoalReportDay(connection=connection, date=day, goal_name=name[:100], goal_id=ids.get(name, "")[:20],
                             conversions=merged[(name, day)].conversions if (name, day) in merged else Decimal(0),
                             revenue=merged[(name, day)].revenue if (name, day) in merged else Decimal(0),
                             fetched_at=now)
               for name in sorted(names) for day in days]
    with transaction.atomic():
        GoalReportDay.objects.filter(connection=connection, date__range=(start, end)).delete()
        GoalReportDay.objects.bulk_create(objects)
    return len(objects)


@dataclass
class DayLine:
    """One goal's day: sent (and accepted) by adsync, counted by Microsoft, and whether it is compared yet."""

    day: date
    sent: int = 0
    last_sent_at: datetime | None = None
    reported: Decimal | None = None   # None: no report covered this day
    fetched_at: datetime | None = None

    @property
    def settled(self) -> bool:
        """Microsoft had REPORTING_LAG to count every row adsync sent for this day before the report was fetched."""
        if self.reported is None or self.fetched_at is None:
            return False
        day_over = datetime.combine(self.day + timedelta(days=1), datetime.min.time(), tzinfo=self.fetched_at.tzinfo)
        latest = max(self.last_sent_at or day_over, day_over)
        return latest + REPORTING_LAG <= self.fetched_at

    @property
    def difference(self) -> Decimal | None:
        return None if self.reported is None else self.reported - self.sent

    @property
    def state(self) -> str:
        if self.reported is None:
            return "not in the report yet"
        return "compared" if self.settled else "within the reporting lag"


@dataclass
class GoalPanel:
    """One goal's days, newest first, and the verdict over the compared days."""

    goal_name: str
    days: list[DayLine] = field(default_factory=list)

    @property
    def compared(self) -> list[DayLine]:
        return [d for d in self.days if d.settled]

    @property
    def sent_total(self) -> int:
        return sum(d.sent for d in self.compared)

    @property
    def reported_total(self) -> Decimal:
        return sum((d.reported for d in self.compared), Decimal(0))

    @property
    def fetched_at(self) -> datetime | None:
        return max((d.fetched_at for d in self.days if d.fetched_at), default=None)

    @property
    def gap_percent(self) -> int:
        base = max(Decimal(self.sent_total), self.reported_total)
        if not base:
            return 0
        return round(abs(self.reported_total - self.sent_total) / base * 100)

    @property
    def has_gap(self) -> bool:
        enough = max(Decimal(self.sent_total), self.reported_total) >= MIN_CONVERSIONS
        return enough and self.gap_percent >= conf.reconcile_gap_percent

    def summary(self) -> str:
        direction = "fewer" if self.reported_total < self.sent_total else "more"
        return (f"Microsoft counts {self.gap_percent} % {direction} conversions for “{self.goal_name}” than adsync sent "
                f"({_number(self.reported_total)} vs {self.sent_total}, {len(self.compared)} compared day(s)).")

    def line(self) -> str:
        waiting = len([d for d in self.days if not d.settled and (d.sent or d.reported)])
        later = f"; {waiting} more day(s) still within the reporting lag" if waiting else ""
        if not self.compared:
            return f"“{self.goal_name}”: no day past the reporting lag yet{later}."
        if not (self.sent_total or self.reported_total):
            return f"✔ “{self.goal_name}”: nothing sent or counted over {len(self.compared)} compared day(s){later}."
        mark = "⚠" if self.has_gap else "✔"
        return (f"{mark} “{self.goal_name}”: adsync sent {self.sent_total}, Microsoft counts "
                f"{_number(self.reported_total)} over {len(self.compared)} compared day(s){later}.")


def _number(value: Decimal) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def panels(connection: Connection, *, days: int = REPORT_DAYS, now: datetime | None = None) -> list[GoalPanel]:
    """Per goal (mapped or sent to), the last `days` days: two aggregate queries, no HTTP."""
    now = now or timezone.now()
    start, end = report_range(days, now.date())
    sent = (Push.objects.filter(connection=connection, kind=Push.CONVERSION, status=Push.SENT,
                                conversion_time__date__range=(start, end))
            .exclude(conversion__source=Conversion.SOURCE_ADMIN)
            .annotate(day=TruncDate("conversion_time")).values("goal_name", "day")
            .annotate(n=Count("id"), last=Max("sent_at")).order_by())
    reported = GoalReportDay.objects.filter(connection=connection, date__range=(start, end)).values_list(
        "goal_name", "date", "conversions", "fetched_at")
    lines: dict[tuple[str, date], DayLine] = {}
    for row in sent:
        lines[(row["goal_name"], row["day"])] = DayLine(row["day"], row["n"], row["last"])
    for name, day, conversions, fetched_at in reported:
        line = lines.setdefault((name, day), DayLine(day))
        line.reported, line.fetched_at = conversions, fetched_at
    # The goals adsync maps or sent to; the account's other goals are none of its business.
    names = sorted({name for (name, _), line in lines.items() if line.sent}
                   | set(connection.goal_mappings.values_list("goal_name", flat=True)))
    result = []
    for name in names:
        panel = GoalPanel(name)
        for offset in range((end - start).days + 1):
            day = end - timedelta(days=offset)
            panel.days.append(lines.get((name, day), DayLine(day)))
        result.append(panel)
    return result


# --- Check 9 -------------------------------------------------------------------------------------------

def check_reconciliation(ctx: Context) -> CheckResult:
    """Microsoft's per-goal count (the report, fetched now and stored) next to what adsync sent."""
    conn = ctx.connection
    link = connection_page_url(conn.pk, "reconciliation")
    evidence = []
    if ctx.api_ok:
        try:
            fetch(conn, ctx.access_token, sleep=ctx.sleep, now=ctx.now)
        except MicrosoftAdsError as err:
            evidence.append(f"The per-goal report could not be fetched now: {err.describe()}")
    goals = panels(conn, now=ctx.now)
    fetched = max((p.fetched_at for p in goals if p.fetched_at), default=None)
    if fetched is None:
        outcome = SKIP if not ctx.api_ok else WARN
        return result("reconciliation", outcome, "Not compared: Microsoft's per-goal report has not been fetched.",
                      evidence, remedy="Run the check again later.", link=link, link_label="reconciliation")
    evidence.append(f"Microsoft's per-goal report fetched {ago(fetched, ctx.now)}; {LAG_NOTE}")
    evidence += [panel.line() for panel in goals]
    gaps = [panel for panel in goals if panel.has_gap]
    if not gaps and not any(panel.sent_total or panel.reported_total for panel in goals):
        return result("reconciliation", PASS, "Nothing sent or counted yet on the days past the reporting lag.",
                      evidence, link=link, link_label="reconciliation")
    if not gaps:
        return result("reconciliation", PASS, f"Within {conf.reconcile_gap_percent} % for every goal, past the "
                      f"reporting lag.", evidence, link=link, link_label="reconciliation")
    worst = max(gaps, key=lambda p: p.gap_percent)
    if worst.reported_total < worst.sent_total:
        remedy = ("Open the reconciliation panel to find the days that differ, then compare them in Microsoft Ads → "
                  "Conversion goals (a goal counting Unique conversions counts one per click).")
    else:
        remedy = ("Microsoft counts more than adsync sent: another tool or tag also sends to this goal; give adsync a "
                  "goal of its own so each conversion is counted once.")
    return result("reconciliation", WARN, worst.summary(), evidence, remedy=remedy, link=link,
                  link_label="reconciliation")
