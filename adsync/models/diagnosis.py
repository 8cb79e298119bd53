"""Diagnosis runs (the card's checklist, history kept) and the per-goal report rows reconciliation compares.

adsync/diagnosis/ writes both; everything else only reads them. A run stores each check's result
as JSON (check key, outcome, evidence, the one remedy and its link), and its summary is copied to
`Connection.diagnosis_summary`, so the card's state, the list, the dashboard and the digest read
the latest verdict without a query of their own.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from django.db import models
from django.utils import timezone

from adsync.models.connections import Connection

PASS, WARN, FAIL, SKIP = "pass", "warn", "fail", "skip"
OUTCOMES = [(PASS, "pass"), (WARN, "warn"), (FAIL, "fail"), (SKIP, "not checked")]
SEVERITY = {SKIP: 0, PASS: 0, WARN: 1, FAIL: 2}
MARKS = {PASS: "✔", WARN: "⚠", FAIL: "✖", SKIP: "–"}


@dataclass
class CheckResult:
    """One check's verdict: outcome, one-line summary, the evidence, and ONE remedy with its link.

    `link` is a Microsoft help page (absolute) or an admin path ("/admin/…") of the page that fixes it;
    `data` holds what a page needs to offer a fix (e.g. the Goal Names that do not exist).
    """

    key: str
    number: int
    title: str
    outcome: str
    summary: str
    evidence: list[str] = field(default_factory=list)
    remedy: str = ""
    link: str = ""
    link_label: str = ""
    data: dict = field(default_factory=dict)

    @property
    def mark(self) -> str:
        return MARKS.get(self.outcome, "?")

    @property
    def label(self) -> str:
        return dict(OUTCOMES).get(self.outcome, self.outcome)

    @property
    def failed(self) -> bool:
        return self.outcome == FAIL

    @property
    def is_problem(self) -> bool:
        return self.outcome in (WARN, FAIL)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict) -> CheckResult:
        known = {name: raw[name] for name in cls.__dataclass_fields__ if name in raw}
        return cls(**known)

    def lines(self) -> list[str]:
        """Plain-text lines for a terminal or an email: the verdict, the evidence, the fix."""
        lines = [f"{self.mark} {self.number}. {self.title}: {self.label.upper()} — {self.summary}"]
        lines += [f"     {line}" for line in self.evidence]
        if self.is_problem and self.remedy:
            link = f" ({self.link})" if self.link else ""
            lines.append(f"     Fix: {self.remedy}{link}")
        return lines


def worst(outcomes) -> str:
    """The run's outcome: fail beats warn beats pass; checks not run do not count."""
    result = PASS
    for outcome in outcomes:
        if SEVERITY.get(outcome, 0) > SEVERITY[result]:
            result = outcome
    return result


class DiagnosisRun(models.Model):
    """One run of "Check this connection": every check's result, in order. Runs are kept as history."""

    CONNECT, SCHEDULE, OPERATOR, COMMAND, GOAL_CREATED = "connect", "schedule", "operator", "command", "goal_created"
    TRIGGERS = [(CONNECT, "after Connect / Reconnect"), (SCHEDULE, "daily"), (OPERATOR, "Check this connection"),
                (COMMAND, "manage.py diagnose_connection"), (GOAL_CREATED, "after creating a goal")]

    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="diagnosis_runs")
    trigger = models.CharField(max_length=20, choices=TRIGGERS, default=SCHEDULE)
    requested_by = models.CharField(max_length=150, blank=True, help_text="The staff member who asked, if any.")
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=10, choices=OUTCOMES, default=PASS)
    note = models.TextField(blank=True, help_text="What happened just before this run (e.g. a goal created).")
    checks = models.JSONField(default=list, help_text="Each check's result, in order (CheckResult.to_json).")

    class Meta:
        verbose_name = "diagnosis run"
        ordering = ["-started_at", "-id"]
        indexes = [models.Index(fields=["connection", "-started_at"], name="diagnosis_latest")]

    def __str__(self) -> str:
        return f"{self.connection} · {self.started_at:%Y-%m-%d %H:%M} UTC · {self.outcome}"

    @property
    def results(self) -> list[CheckResult]:
        return [CheckResult.from_json(raw) for raw in self.checks or []]

    def result(self, key: str) -> CheckResult | None:
        return next((r for r in self.results if r.key == key), None)

    @property
    def counts(self) -> dict[str, int]:
        results = self.results
        return {outcome: sum(r.outcome == outcome for r in results) for outcome, _ in OUTCOMES}

    def counts_line(self) -> str:
        counts = self.counts
        parts = [f"{counts[PASS]} passed", f"{counts[WARN]} warning(s)", f"{counts[FAIL]} failed"]
        if counts[SKIP]:
            parts.append(f"{counts[SKIP]} not checked")
        return ", ".join(parts)

    def summary(self) -> dict:
        """What Connection.diagnosis_summary keeps: when, the outcome, and every problem's one line and fix."""
        kept = ("key", "number", "title", "outcome", "summary", "remedy", "link", "link_label")
        problems = [{k: r.to_json()[k] for k in kept} for r in self.results if r.is_problem]
        return {"run": self.pk, "at": self.started_at.isoformat(), "outcome": self.outcome,
                "counts": self.counts_line(), "problems": problems}

    def checklist_lines(self) -> list[str]:
        """The whole checklist as plain text (the command's output, the support details)."""
        head = (f"Diagnosis of {self.connection}, {self.started_at:%Y-%m-%d %H:%M} UTC "
                f"({self.get_trigger_display()}): {self.counts_line()}")
        lines = [head]
        if self.note:
            lines.append(f"Note: {self.note}")
        for result in self.results:
            lines += result.lines()
        return lines


@dataclass
class DiagnosisSummary:
    """The latest run as the card, the list and the digest read it from Connection.diagnosis_summary."""

    at: str = ""
    outcome: str = ""
    counts: str = ""
    problems: list[CheckResult] = field(default_factory=list)

    @classmethod
    def of(cls, connection: Connection) -> DiagnosisSummary:
        raw = connection.diagnosis_summary or {}
        problems = [CheckResult.from_json(p) for p in raw.get("problems") or [] if isinstance(p, dict)]
        return cls(raw.get("at", ""), raw.get("outcome", ""), raw.get("counts", ""), problems)

    @property
    def ran(self) -> bool:
        return bool(self.at)

    @property
    def failing(self) -> CheckResult | None:
        """The first failing check, in checklist order."""
        return next((p for p in self.problems if p.failed), None)

    @property
    def when(self) -> str:
        return self.at[:16].replace("T", " ") + " UTC" if self.at else "never"


class GoalReportDay(models.Model):
    """Microsoft's count for one goal and day, from the per-goal conversion report
    (docs/microsoft-api.md#per-goal-conversions), stored so the reconciliation panel renders without calling Microsoft.

    Every fetch writes a row for each day of its range and each goal (reported or mapped), zero where
    Microsoft had nothing: a day with a row was covered by the report fetched at `fetched_at`.
    """

    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="goal_report_days")
    date = models.DateField(help_text="The report day (TimePeriod) in the report time zone.")
    goal_name = models.CharField("Goal Name", max_length=100)
    goal_id = models.CharField(max_length=20, blank=True)
    conversions = models.DecimalField(max_digits=14, decimal_places=2, default=0,
                                      help_text="AllConversionsQualified: what Microsoft counts for the goal.")
    revenue = models.DecimalField(max_digits=16, decimal_places=2, default=0)
    fetched_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = "goal report day"
        ordering = ["goal_name", "-date"]
        constraints = [models.UniqueConstraint(fields=["connection", "goal_name", "date"],
                                               name="goal_report_unique_day")]

    def __str__(self) -> str:
        return f"{self.date} · {self.goal_name}: {self.conversions}"
