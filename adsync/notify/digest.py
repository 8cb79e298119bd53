"""The sync digest: what went wrong since yesterday, grouped site → connection → error class.

Sent daily by the `adsync:digest` job (ADSYNC_DIGEST_CRON, default 07:00 UTC) and by
`manage.py send_sync_digest`, to staff who opted in (StaffNotificationPreference).
Nothing is sent when there is nothing to report. Each error class carries Microsoft's
messages verbatim, our hint beside them and a link to the filtered sync log; connections in
Token expired or stale state, a high pending_identity share, and the failing or warning checks of
the latest diagnosis (reconciliation gaps included, docs/diagnosis.md) are reported too.

A constant number of queries, whatever the volume: one for connections, two aggregates.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db.models import Count, Max
from django.urls import reverse
from django.utils import timezone

from adsync.conf import conf
from adsync.connections import health
from adsync.formats import count
from adsync.links import absolute, card_url, sync_log_url
from adsync.microsoft.errors import GOAL_NOT_FOUND_CODE, classify_code, remedy_hint
from adsync.models import (
    ADSYNC_ERROR_PREFIX,
    CheckResult,
    Connection,
    Conversion,
    DiagnosisSummary,
    Push,
    Site,
    StaffNotificationPreference,
)
from adsync.notify import emails

SAMPLES_PER_CLASS = 3
ADSYNC_CHECK = "adsync check"
# Below this many pushes a share means little (1 of 2 is 50 %): no pending_identity warning.
MIN_PUSHES_FOR_SHARE = 10
PENDING_IDENTITY_CAUSES = [
    "Auto-tagging is off in Microsoft Ads (Settings → Account preferences → Auto-tagging); after turning it "
    "on, allow 1–2 weeks for msclkid-tagged visits to accumulate.",
    "The adsync snippet is missing from some landing pages that receive Microsoft Ads traffic: it must be on "
    "every one, so msclkid is captured on the first page view.",
    "Visitors converting without ever clicking a Microsoft ad (SEO, direct, email...): they have no msclkid "
    "and cannot be attributed, by design.",
]
# Hints for adsync's own pre-send checks (error_symbol "adsync:<name>"), by the Microsoft code they mirror.
_ADSYNC_CHECK_CODES = {"goal_not_found": GOAL_NOT_FOUND_CODE, "goal_unusable": GOAL_NOT_FOUND_CODE,
                       "no_identity": 5603, "older_than_90_days": 5609,
                       "before_click": 5616, "after_click_window": 5617, "outside_goal_window": 5609}
_ADSYNC_CHECK_HINT = ("adsync held this row back before sending (a pre-send check, not Microsoft); fix the cause, "
                      "then use the Replay action on the sync log.")


@dataclass
class Sample:
    """One verbatim message of an error class, with how many rows carried it."""

    message: str
    count: int
    tracking_id: str


@dataclass
class ErrorClass:
    label: str
    kind: str
    count: int
    hint: str
    samples: list[Sample] = field(default_factory=list)

    @property
    def source(self) -> str:
        """Who wrote the message: Microsoft, or adsync's own pre-send check."""
        return "adsync's pre-send check" if self.kind == ADSYNC_CHECK else "Microsoft"


@dataclass
class ConnectionReport:
    connection: Connection
    error_classes: list[ErrorClass]
    pushes: int
    pending: int
    health: str = ""
    health_hint: str = ""
    diagnosis: DiagnosisSummary = field(default_factory=DiagnosisSummary)
    health_colour: str = ""
    fix_label: str = ""
    fix_url: str = ""

    @property
    def errors(self) -> int:
        return sum(c.count for c in self.error_classes)

    @property
    def pending_share(self) -> float:
        return self.pending / self.pushes if self.pushes else 0.0

    @property
    def pending_percent(self) -> int:
        return round(self.pending_share * 100)

    @property
    def pending_high(self) -> bool:
        threshold = conf.digest_pending_share / 100
        return self.pushes >= MIN_PUSHES_FOR_SHARE and self.pending_share >= threshold

    @property
    def has_news(self) -> bool:
        return bool(self.error_classes or self.health or self.pending_high or self.diagnosis.problems)

    @property
    def diagnosis_problems(self) -> list[CheckResult]:
        """The latest diagnosis's failing and warning checks, their links made absolute for the email."""
        return [CheckResult(**{**p.to_json(), "link": absolute(p.link) if p.link.startswith("/") else p.link})
                for p in self.diagnosis.problems]

    @property
    def card_url(self) -> str:
        return card_url(self.connection.pk, absolute_url=True)

    @property
    def errors_url(self) -> str:
        return sync_log_url(connection_id=self.connection.pk, status=Push.ERROR, absolute_url=True)

    @property
    def pending_url(self) -> str:
        return sync_log_url(connection_id=self.connection.pk, status=Push.PENDING_IDENTITY, absolute_url=True)


@dataclass
class SiteReport:
    site: Site
    connections: list[ConnectionReport]


@dataclass
class Digest:
    since: datetime
    until: datetime
    sites: list[SiteReport]
    pending_causes: list[str] = field(default_factory=lambda: list(PENDING_IDENTITY_CAUSES))

    @property
    def reports(self) -> list[ConnectionReport]:
        return [report for site in self.sites for report in site.connections]

    @property
    def is_empty(self) -> bool:
        return not self.sites

    @property
    def errors(self) -> int:
        return sum(r.errors for r in self.reports)

    @property
    def unhealthy(self) -> int:
        return sum(1 for r in self.reports if r.health)

    @property
    def summary(self) -> str:
        """One line for the subject, e.g. "6 errors on 2 connections, 1 connection to fix"."""
        with_errors = sum(1 for r in self.reports if r.errors)
        pending = sum(1 for r in self.reports if r.pending_high)
        failing = sum(1 for r in self.reports if r.diagnosis.failing)
        warned = sum(1 for r in self.reports if r.diagnosis.problems and not r.diagnosis.failing)
        parts = [
            count(self.errors, "error") + f" on {count(with_errors, 'connection')}" if self.errors else "",
            count(self.unhealthy, "connection") + " to fix" if self.unhealthy else "",
            count(failing, "connection") + " failing a check" if failing else "",
            count(warned, "connection") + " with a check to look at" if warned else "",
            count(pending, "connection") + " with a high pending_identity share" if pending else "",
        ]
        return ", ".join(part for part in parts if part)

    @property
    def dashboard_url(self) -> str:
        return absolute(reverse("adsync_dashboard"))

    @property
    def preferences_url(self) -> str:
        return absolute(reverse("admin:adsync_staffnotificationpreference_changelist"))


def class_of(code: int | None, symbol: str) -> tuple[str, str, str]:
    """(label, kind, hint) for a sync-log error; adsync's own checks are classes of their own."""
    if symbol.startswith(ADSYNC_ERROR_PREFIX):
        check = symbol.removeprefix(ADSYNC_ERROR_PREFIX)
        mirrored = _ADSYNC_CHECK_CODES.get(check)
        hint = f"{remedy_hint(mirrored)} {_ADSYNC_CHECK_HINT}" if mirrored else _ADSYNC_CHECK_HINT
        return symbol, ADSYNC_CHECK, hint
    kind = classify_code(code)
    label = " ".join(str(part) for part in (code, symbol) if part not in (None, "")) or "No error code"
    return label, str(kind), remedy_hint(code, kind)


def error_classes(since: datetime, until: datetime, connection_ids: list[int] | None = None
                  ) -> dict[int, list[ErrorClass]]:
    """Rows that became `error` in the window, per connection and class, largest class first."""
    rows = Push.objects.filter(status=Push.ERROR, updated_at__gte=since, updated_at__lt=until)
    if connection_ids is not None:
        rows = rows.filter(connection_id__in=connection_ids)
    grouped = (rows.values("connection_id", "error_code", "error_symbol", "error_message")
               .annotate(n=Count("id"), tracking_id=Max("tracking_id"), last=Max("updated_at"))
               .order_by("connection_id", "-n", "-last"))
    classes: dict[int, dict[str, ErrorClass]] = defaultdict(dict)
    for row in grouped:
        label, kind, hint = class_of(row["error_code"], row["error_symbol"] or "")
        cls = classes[row["connection_id"]].setdefault(label, ErrorClass(label, kind, 0, hint))
        cls.count += row["n"]
        if len(cls.samples) < SAMPLES_PER_CLASS:
            cls.samples.append(Sample(row["error_message"], row["n"], row["tracking_id"] or ""))
    return {pk: sorted(by_label.values(), key=lambda c: -c.count) for pk, by_label in classes.items()}


def _status_counts(since: datetime, until: datetime) -> dict[int, dict[str, int]]:
    counts: dict[int, dict[str, int]] = defaultdict(dict)
    # Staff test conversions (Send test conversion) say nothing about attribution: left out of the shares.
    rows = (Push.objects.counted().filter(created_at__gte=since, created_at__lt=until)
            .exclude(conversion__source=Conversion.SOURCE_ADMIN)
            .values("connection_id", "status").annotate(n=Count("id")).order_by())
    for row in rows:
        counts[row["connection_id"]][row["status"]] = row["n"]
    return counts


def health_of(connection: Connection) -> tuple[str, str]:
    """(state line, hint) for a card that needs a human, or ("", ""). A Disconnected card was chosen: not news."""
    state = health.card_states([connection])[0][1]
    return _health_line(state)


def _health_line(state: health.CardState) -> tuple[str, str]:
    # A failing check is listed with the diagnosis's other problems.
    if not state.needs_attention or state.key in ("disconnected", health.CHECK_FAILING):
        return "", ""
    detail = f" — {state.message}" if state.message else f" — {state.reason}" if state.reason else ""
    return f"{state.label}{detail}", state.hint


def build_digest(since: datetime, until: datetime | None = None) -> Digest:
    """Everything worth telling staff about the window [since, until)."""
    until = until or timezone.now()
    classes = error_classes(since, until)
    counts = _status_counts(since, until)
    sites: dict[int, SiteReport] = {}
    connections = (Connection.objects.select_related("site").annotate(newest_sent_at=health.newest_sent_at_subquery())
                   .order_by("site__name", "id"))
    for conn, state in health.card_states(connections):
        status_counts = counts.get(conn.pk, {})
        report = ConnectionReport(conn, classes.get(conn.pk, []), sum(status_counts.values()),
                                  status_counts.get(Push.PENDING_IDENTITY, 0))
        report.health, report.health_hint = _health_line(state)
        if report.health:
            report.health_colour = state.colour
            report.fix_label, report.fix_url = health.fix_link(state, conn.pk, absolute_url=True) or ("", "")
        report.diagnosis = DiagnosisSummary.of(conn)
        if report.has_news:
            sites.setdefault(conn.site_id, SiteReport(conn.site, [])).connections.append(report)
    return Digest(since, until, list(sites.values()))


@dataclass
class DigestOutcome:
    digest: Digest
    recipients: list[str]
    sent: int = 0

    def line(self) -> str:
        if self.digest.is_empty:
            return f"nothing to report since {self.digest.since:%Y-%m-%d %H:%M} UTC; no email sent"
        if not self.recipients:
            return "something to report, but no staff opted in to the digest; no email sent"
        return (f"digest sent to {count(self.sent, 'recipient')}: {count(self.digest.errors, 'error')}, "
                f"{count(len(self.digest.reports), 'connection')} to look at")


def send_digest(window: timedelta = timedelta(hours=24), *, dry_run: bool = False) -> DigestOutcome:
    """Build the digest for the last `window` and email it, unless empty (or a dry run)."""
    digest = build_digest(timezone.now() - window)
    outcome = DigestOutcome(digest, StaffNotificationPreference.addresses("digest"))
    if digest.is_empty or dry_run or not outcome.recipients:
        return outcome
    outcome.sent = emails.send("sync_digest", outcome.recipients, {"digest": digest})
    return outcome


def render_digest(digest: Digest) -> tuple[str, str, str]:
    """(subject, text, html) exactly as emailed; used by --dry-run."""
    return emails.render("sync_digest", {"digest": digest})
