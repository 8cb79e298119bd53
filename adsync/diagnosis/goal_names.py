"""Check 4: every mapped Goal Name exists exactly as an Active offline goal, with a long enough conversion
window and enhanced conversions where conversions without msclkid are expected. A name with no goal of
any type and no near miss is offered for creation (adsync/diagnosis/fixes.py).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from urllib.parse import urlencode

from django.db.models import Count, F, Q

from adsync.connections import health
from adsync.diagnosis.context import Context, ago, result
from adsync.diagnosis.help_pages import HELP_ENHANCED, HELP_OFFLINE_GOALS
from adsync.links import card_url, connection_page_url
from adsync.microsoft.campaign import CampaignClient
from adsync.microsoft.errors import MicrosoftAdsError
from adsync.models import CheckResult, Connection, Push
from adsync.models.diagnosis import FAIL, PASS, SKIP, WARN
from adsync.push import goals
from adsync.push.goals import GoalBook

WINDOW_LOOKBACK = timedelta(days=30)  # goal windows are compared with this much click-to-conversion history


class _Findings:
    """Problems found while checking mappings: the first of the worst kind gives the check its one remedy."""

    def __init__(self):
        self.items: list[tuple[str, str, str, str]] = []  # (outcome, remedy, link, link label)

    def add(self, outcome: str, remedy: str, link: str, label: str) -> None:
        self.items.append((outcome, remedy, link, label))

    def verdict(self) -> tuple[str, str, str, str]:
        for outcome in (FAIL, WARN):
            found = next((item for item in self.items if item[0] == outcome), None)
            if found:
                return found
        return PASS, "", "", ""


def check_goal_names(ctx: Context) -> CheckResult:
    """Every mapped Goal Name: exists exactly, is an active offline goal, its window and enhanced conversions."""
    conn = ctx.connection
    mappings = list(conn.goal_mappings.order_by("event_name"))
    if not mappings:
        return result("goal_names", FAIL, "No event is mapped to a Goal Name, so nothing is sent.",
                      remedy="Map each event (purchase, lead…) to its Goal Name on the card.", link=card_url(conn.pk),
                      link_label="the card")
    evidence = []
    if ctx.api_ok:
        try:
            fetched = [goal for goal in goals.refresh_goals(conn) if goal.missing_since is None]
            evidence.append(f"Goal list fetched from Microsoft now ({len(fetched)} goal(s)).")
        except MicrosoftAdsError as err:
            ctx.goals_error = err
            health.record_failure(conn, Connection.GOAL_REFRESH, err)
            evidence.append(f"The goal list could not be fetched now: {err.describe()}")
    book = GoalBook(conn)
    if not book.known:
        outcome = WARN if ctx.goals_error else SKIP
        return result("goal_names", outcome, "Not checked: the account's goal list has never been fetched.", evidence,
                      remedy="Run the check again; if the goal list still cannot be fetched, read Microsoft's answer "
                             "above." if ctx.goals_error else "")
    if not evidence or ctx.goals_error:
        evidence.append(f"Checked against the goal list cached {ago(conn.goals_refreshed_at, ctx.now)}.")
    findings, missing = _Findings(), []
    hashed_only = _hashed_only_pending(conn, ctx.now)
    others = _other_goals(ctx, book, mappings, evidence)
    for mapping in mappings:
        evidence.append(_check_mapping(ctx, book, mapping, findings, missing, hashed_only, others))
    outcome, remedy, link, label = findings.verdict()
    summaries = {PASS: f"All {len(mappings)} mapped Goal Name(s) exist as active offline goals.",
                 WARN: "The Goal Names exist, with something to look at.",
                 FAIL: "A mapped Goal Name cannot receive conversions."}
    return result("goal_names", outcome, summaries[outcome], evidence, remedy=remedy, link=link, link_label=label,
                  data={"missing_goals": missing})


def _other_goals(ctx: Context, book: GoalBook, mappings, evidence: list[str]) -> dict[str, str]:
    """{name: type} of the account's goals of every type, fetched only when a mapped name has no offline goal:
    the goal cache holds offline goals only, and a Url goal of that name is not "missing"."""
    unmatched = [m for m in mappings if book.check(m.goal_name).goal is None]
    if not unmatched or not ctx.api_ok:
        return {}
    conn = ctx.connection
    client = CampaignClient(access_token=ctx.access_token, customer_id=conn.customer_id, account_id=conn.account_id)
    try:
        return {str(g.get("Name") or ""): str(g.get("Type") or "") for g in client.get_conversion_goals()}
    except MicrosoftAdsError as err:
        evidence.append(f"The account's goals of other types could not be listed: {err.describe()}")
        return {}


def _near_miss(name: str, names) -> str:
    folded = name.strip().casefold()
    return next((other for other in sorted(names) if other.strip().casefold() == folded and other != name), "")


def _check_mapping(ctx: Context, book: GoalBook, mapping, findings: _Findings, missing: list[str],
                   hashed_only: int, others: dict[str, str]) -> str:
    """One evidence line for one mapping; its problems go to `findings`."""
    conn = ctx.connection
    head = f"{mapping.event_name} → “{mapping.goal_name}”"
    check = book.check(mapping.goal_name)
    goal = check.goal
    if goal is None:
        other_type = others.get(mapping.goal_name)
        if other_type:
            findings.add(FAIL, f"Map an offline conversion goal instead of the {other_type} goal "
                               f"“{mapping.goal_name}”.", HELP_OFFLINE_GOALS, "Microsoft: offline conversions")
            return f"✖ {head}: a {other_type} goal, not an offline conversion goal."
        meant = check.did_you_mean or _near_miss(mapping.goal_name, others)
        if meant:
            findings.add(FAIL, f"Change the mapping of “{mapping.event_name}” to the exact Goal Name “{meant}” "
                               f"(copy-paste it).", card_url(conn.pk), "the card")
            return f"✖ {head}: no goal of that exact name; did you mean “{meant}”?"
        missing.append(mapping.goal_name)
        findings.add(FAIL, f"Create the offline conversion goal “{mapping.goal_name}” in Microsoft Ads (one click: "
                           f"“Create the goal”), or map the name of an existing goal.",
                     connection_page_url(conn.pk, "create-goal") + "?" + urlencode({"name": mapping.goal_name}),
                     "Create the goal")
        choices = ", ".join(f"“{name}”" for name in check.choices) or "none"
        return f"✖ {head}: no such goal in the account (offline goals there: {choices})."
    if not goal.is_offline:
        findings.add(FAIL, f"Map an offline conversion goal instead of the {goal.goal_type} goal “{goal.name}”.",
                     HELP_OFFLINE_GOALS, "Microsoft: offline conversions")
        return f"✖ {head}: a {goal.goal_type} goal, not an offline conversion goal."
    if goal.status != "Active":
        findings.add(FAIL, f"Set the goal “{goal.name}” to Active in Microsoft Ads (Conversions → Conversion goals).",
                     HELP_OFFLINE_GOALS, "Microsoft: offline conversions")
        return f"✖ {head}: the goal is {goal.status}."
    parts = ["offline goal, Active"]
    outcome = PASS
    window = goal.conversion_window_minutes
    if window:
        parts.append(f"{_days(window)} conversion window")
        late, total = _late_conversions(conn, mapping.goal_name, window, ctx.now)
        if late:
            outcome = WARN
            parts.append(f"{late} of {total} conversions of the last 30 days came later after their click than that")
            findings.add(WARN, f"Lengthen the conversion window of “{goal.name}” in Microsoft Ads (up to 90 days): "
                               f"conversions later than the window are rejected (5617).", HELP_OFFLINE_GOALS,
                         "Microsoft: offline conversions")
    if goal.enhanced_conversions:
        parts.append("enhanced conversions on")
    elif conn.enhanced_conversions:
        outcome = FAIL
        parts.append("enhanced conversions OFF although this card sends conversions with email/phone and no msclkid")
        findings.add(FAIL, f"Turn on enhanced conversions for “{goal.name}” in Microsoft Ads, or Microsoft rejects "
                           f"conversions without msclkid (5603).", HELP_ENHANCED, "Microsoft: enhanced conversions")
    elif hashed_only:
        outcome = WARN
        parts.append(f"enhanced conversions off, and {hashed_only} recent pending conversion(s) have an email or "
                     f"phone but no msclkid")
        findings.add(WARN, f"Turn on enhanced conversions for “{goal.name}” in Microsoft Ads and on this card, so "
                           f"conversions with an email or phone but no msclkid are sent.", HELP_ENHANCED,
                     "Microsoft: enhanced conversions")
    settles = book.settles_at(goal)
    if settles:
        outcome = WARN if outcome == PASS else outcome
        parts.append(f"first seen under 2 hours ago: rows wait until {settles:%H:%M} UTC (Microsoft's rule 5615)")
        findings.add(WARN, "Nothing to do: adsync holds this goal's rows until it is 2 hours old.", "", "")
    mark = {PASS: "✔", WARN: "⚠", FAIL: "✖"}[outcome]
    return f"{mark} {head}: " + "; ".join(parts) + "."


def _days(minutes: int) -> str:
    return f"{minutes // 1440}-day" if minutes % 1440 == 0 else f"{minutes}-minute"


def _late_conversions(conn: Connection, goal_name: str, window: int, now: datetime) -> tuple[int, int]:
    """(rows converting later after their click than the goal's window, rows with a known click), last 30 days."""
    counts = Push.objects.filter(connection=conn, kind=Push.CONVERSION, goal_name=goal_name,
                                 created_at__gte=now - WINDOW_LOOKBACK,
                                 click_time__isnull=False).aggregate(
        total=Count("id"), late=Count("id", filter=Q(conversion_time__gt=F("click_time") + timedelta(minutes=window))))
    return counts["late"], counts["total"]


def _hashed_only_pending(conn: Connection, now: datetime) -> int:
    """Recent pending_identity rows that have an email or phone: enhanced conversions would send them."""
    return (Push.objects.filter(connection=conn, status=Push.PENDING_IDENTITY, created_at__gte=now - WINDOW_LOOKBACK)
            .filter(~Q(hashed_email="") | ~Q(hashed_phone="")).count())
