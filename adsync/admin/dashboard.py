"""The sync dashboard (/admin/adsync/dashboard/): per connection, the last 14 days at a glance.

Pushes by status per day as a server-rendered SVG (nothing fetched, no script), the card's
state (badge, reason and its one fix, as on the card), the match rate (sent / all conversion pushes,
not counting adjustments, rows never sent by design (skipped_no_consent, cancelled) nor staff test
conversions), the pending_identity share, last flush, last insights sync and a
link to each card; above them, the snippet's inbox (hits accepted but not stored yet), whose
oldest waiting hit tells whether the worker keeps up. Three queries whatever the data:
connections (with their newest send), one aggregate of pushes per connection, day and status,
and one of the inbox.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q
from django.db.models.functions import TruncDate
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from adsync.connections import health
from adsync.formats import count
from adsync.intake import inbox
from adsync.links import card_url, sync_log_url
from adsync.models import Connection, Conversion, Push

DAYS = 14
# The worker stores the inbox every minute and before every flush: a hit older than this means it is
# behind (a burst larger than it stores per run) or not running at all.
INBOX_LATE = timedelta(minutes=5)
STATUS_ORDER = [Push.SENT, Push.PENDING_IDENTITY, Push.ERROR, Push.QUEUED]
COLOURS = {Push.SENT: "#1a7f37", Push.PENDING_IDENTITY: "#d4a72c", Push.ERROR: "#cf222e", Push.QUEUED: "#0969da"}
CHART_HEIGHT = 120
BAR_WIDTH = 22
BAR_GAP = 6
LEFT_MARGIN = 36
LABEL_SPACE = 18


@dataclass
class Segment:
    status: str
    count: int
    y: float
    height: float

    @property
    def colour(self) -> str:
        return COLOURS[self.status]


@dataclass
class DayBar:
    day: date
    counts: dict[str, int]
    tests: dict[str, int] = field(default_factory=dict)  # of which staff test conversions
    x: float = 0
    segments: list[Segment] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def label_x(self) -> float:
        return self.x + BAR_WIDTH / 2

    @property
    def title(self) -> str:
        parts = ", ".join(f"{self.counts.get(s, 0)} {s}" for s in STATUS_ORDER)
        return f"{self.day:%Y-%m-%d}: {parts}"


@dataclass
class Panel:
    connection: Connection
    bars: list[DayBar]
    peak: int

    @property
    def totals(self) -> dict[str, int]:
        return {s: sum(bar.counts.get(s, 0) for bar in self.bars) for s in STATUS_ORDER}

    @property
    def total(self) -> int:
        return sum(self.totals.values())

    @property
    def real(self) -> dict[str, int]:
        """Totals without staff test conversions (Send test conversion): they say nothing about attribution."""
        return {s: self.totals[s] - sum(bar.tests.get(s, 0) for bar in self.bars) for s in STATUS_ORDER}

    @property
    def real_total(self) -> int:
        return sum(self.real.values())

    @property
    def tests(self) -> int:
        return self.total - self.real_total

    def _share(self, status: str) -> str:
        return f"{self.real[status] / self.real_total:.0%}" if self.real_total else "—"

    @property
    def match_rate(self) -> str:
        return self._share(Push.SENT)

    @property
    def pending_share(self) -> str:
        return self._share(Push.PENDING_IDENTITY)

    @property
    def pending_words(self) -> str:
        return count(self.real[Push.PENDING_IDENTITY], "sync-log entry", "sync-log entries")

    @property
    def state(self) -> health.CardState:
        """The card's state, as the card shows it (colour, reason and fix included)."""
        if not hasattr(self, "_state"):
            self._state = health.card_states([self.connection])[0][1]
        return self._state

    @property
    def fix(self) -> tuple[str, str] | None:
        return health.fix_link(self.state, self.connection.pk)

    @property
    def card_url(self) -> str:
        return card_url(self.connection.pk)

    @property
    def log_url(self) -> str:
        return sync_log_url(connection_id=self.connection.pk)


def chart_width() -> int:
    return LEFT_MARGIN + DAYS * (BAR_WIDTH + BAR_GAP)


def _lay_out(bars: list[DayBar]) -> int:
    """Stack each day's statuses bottom-up on a scale shared by the connection's 14 bars."""
    peak = max((bar.total for bar in bars), default=0)
    scale = (CHART_HEIGHT - LABEL_SPACE) / peak if peak else 0
    baseline = CHART_HEIGHT - LABEL_SPACE
    for index, bar in enumerate(bars):
        bar.x = LEFT_MARGIN + index * (BAR_WIDTH + BAR_GAP)
        top = baseline
        for status in STATUS_ORDER:
            count = bar.counts.get(status, 0)
            if count:
                height = max(1.0, count * scale)
                top -= height
                bar.segments.append(Segment(status, count, round(top, 1), round(height, 1)))
    return peak


@dataclass
class InboxBacklog:
    """The snippet inbox's line on the dashboard: hits accepted but not stored yet, and failed ones."""

    waiting: int
    failed: int
    oldest: datetime | None
    now: datetime

    @classmethod
    def read(cls) -> InboxBacklog:
        held = inbox.backlog()
        return cls(held.waiting, held.failed, held.oldest, timezone.now())

    @property
    def late(self) -> bool:
        return self.oldest is not None and self.now - self.oldest > INBOX_LATE

    @property
    def admin_url(self) -> str:
        return reverse("admin:adsync_hit_changelist")


def daily_counts(start: datetime) -> tuple[dict[tuple[int, date], dict[str, int]],
                                           dict[tuple[int, date], dict[str, int]]]:
    """({(connection id, day): {status: pushes}}, the same for staff test conversions) in one aggregate query."""
    rows = (Push.objects.counted().filter(created_at__gte=start).annotate(day=TruncDate("created_at"))
            .values("connection_id", "day", "status")
            .annotate(n=Count("id"), tests=Count("id", filter=Q(conversion__source=Conversion.SOURCE_ADMIN)))
            .order_by())
    counts: dict[tuple[int, date], dict[str, int]] = {}
    tests: dict[tuple[int, date], dict[str, int]] = {}
    for row in rows:
        counts.setdefault((row["connection_id"], row["day"]), {})[row["status"]] = row["n"]
        tests.setdefault((row["connection_id"], row["day"]), {})[row["status"]] = row["tests"]
    return counts, tests


def build_panels(today: date | None = None) -> list[Panel]:
    today = today or timezone.now().date()
    days = [today - timedelta(days=offset) for offset in range(DAYS - 1, -1, -1)]
    start = timezone.make_aware(datetime.combine(days[0], datetime.min.time()), timezone.get_default_timezone())
    counts, tests = daily_counts(start)
    panels = []
    connections = (Connection.objects.select_related("site").annotate(newest_sent_at=health.newest_sent_at_subquery())
                   .order_by("site__name", "id"))
    for conn in connections:
        bars = [DayBar(day, counts.get((conn.pk, day), {}), tests.get((conn.pk, day), {})) for day in days]
        panels.append(Panel(conn, bars, _lay_out(bars)))
    return panels


def dashboard_view(request: HttpRequest) -> HttpResponse:
    """Wrapped in admin.site.admin_view (staff only); viewers and operators both see it."""
    if not request.user.has_perm("adsync.view_connection"):
        raise PermissionDenied
    from django.contrib import admin

    return TemplateResponse(request, "admin/adsync/dashboard.html", {
        **admin.site.each_context(request),
        "title": "Sync dashboard",
        "panels": build_panels(),
        "inbox": InboxBacklog.read(),
        "days": DAYS,
        "legend": [(status, COLOURS[status]) for status in STATUS_ORDER],
        "chart_width": chart_width(),
        "chart_height": CHART_HEIGHT,
        "bar_width": BAR_WIDTH,
        "baseline": CHART_HEIGHT - LABEL_SPACE,
        "label_y": CHART_HEIGHT - 4,
    })
