"""The account's conversion goals, cached, and the Goal Name check that guards every push.

Microsoft may silently drop a conversion whose ConversionName matches no goal instead of
answering 5606 (reference §1.9, §4), so this check, not Microsoft's error, is the real guard.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from django.db.models import Q
from django.utils import timezone

from adsync import tokens
from adsync.microsoft.campaign import CampaignClient
from adsync.microsoft.errors import GOAL_NOT_FOUND_CODE, MicrosoftAdsError
from adsync.models import ADSYNC_ERROR_PREFIX, AccountGoal, Connection, GoalMapping, Push

log = logging.getLogger(__name__)

GOAL_SETTLING_TIME = timedelta(hours=2)  # 5615: "must wait 2 hours after the goal was created"
MICROSOFT_WINDOW = timedelta(days=90)


def refresh_goals(connection: Connection) -> list[AccountGoal]:
    """Fetch the account's offline goals and upsert the cache; goals gone from the answer are flagged."""
    client = CampaignClient(access_token=tokens.access_token_for(connection),
                            customer_id=connection.customer_id, account_id=connection.account_id)
    fetched = client.get_offline_conversion_goals()
    now = timezone.now()
    # Microsoft returns no creation time. Goals already there on adsync's first look at the
    # account are taken as established; only goals that appear later wait the 2 hours (5615).
    first_seen = now - GOAL_SETTLING_TIME if connection.goals_refreshed_at is None else now
    seen_ids = []
    for raw in fetched:
        goal_id = str(raw.get("Id") or "")
        if not goal_id:
            continue
        seen_ids.append(goal_id)
        values = {
            "name": raw.get("Name") or "",
            "goal_type": raw.get("Type") or "OfflineConversion",
            "status": raw.get("Status") or "Active",
            "conversion_window_minutes": raw.get("ConversionWindowInMinutes"),
            "enhanced_conversions": bool(raw.get("IsEnhancedConversionsEnabled")),
            "last_seen_at": now,
            "missing_since": None,
        }
        AccountGoal.objects.update_or_create(connection=connection, goal_id=goal_id, defaults=values,
                                             create_defaults={**values, "first_seen_at": first_seen})
    connection.account_goals.exclude(goal_id__in=seen_ids).filter(missing_since__isnull=True).update(missing_since=now)
    Connection.objects.filter(pk=connection.pk).update(goals_refreshed_at=now)
    connection.goals_refreshed_at = now
    return list(connection.account_goals.all())


def refresh_goals_for(connection_id: int) -> str:
    """Task entry point (admin action): takes an id so no secret is pickled into the queue."""
    connection = Connection.objects.get(pk=connection_id)
    try:
        return f"{len(refresh_goals(connection))} goal(s)"
    except MicrosoftAdsError as err:
        connection.record_error(f"Goal refresh failed: {err.describe()}")
        return f"failed: {err.describe()}"


def refresh_all_goals() -> str:
    """Daily schedule: refresh every active connection's goals; one failure does not stop the rest."""
    lines = []
    for connection in Connection.objects.filter(status=Connection.ACTIVE):
        try:
            goals = refresh_goals(connection)
            lines.append(f"connection {connection.pk}: {len(goals)} goal(s)")
        except MicrosoftAdsError as err:
            connection.record_error(f"Goal refresh failed: {err.describe()}")
            lines.append(f"connection {connection.pk}: failed: {err.describe()}")
    return "; ".join(lines) or "no active connection"


@dataclass
class GoalCheck:
    """The verdict on one Goal Name. `problem` is empty when the name is usable."""

    name: str
    problem: str = ""
    did_you_mean: str = ""
    goal: AccountGoal | None = None
    choices: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problem

    def message(self) -> str:
        if self.ok:
            return ""
        hint = f' Did you mean "{self.did_you_mean}"?' if self.did_you_mean else ""
        return f"{self.problem}{hint}"


class GoalBook:
    """The cached goals of one connection, loaded once and checked many times (one query)."""

    def __init__(self, connection: Connection):
        self.connection = connection
        self.known = connection.goals_refreshed_at is not None
        self.goals = list(connection.account_goals.filter(missing_since__isnull=True))
        self.by_name = {g.name: g for g in self.goals}

    def check(self, name: str) -> GoalCheck:
        result = GoalCheck(name=name, choices=sorted(g.name for g in self.goals if g.is_offline))
        if not self.known:
            return result  # never fetched: nothing to compare against, Microsoft decides
        goal = self.by_name.get(name)
        if goal is None:
            result.problem = f'No conversion goal named "{name}" exists in this account (names are case-sensitive).'
            result.did_you_mean = self._near_miss(name)
        elif not goal.is_offline:
            result.problem = f'"{name}" is a {goal.goal_type} goal, not an offline conversion goal.'
        elif goal.status != "Active":
            result.problem = f'The goal "{name}" is {goal.status} in Microsoft Ads.'
        result.goal = goal
        return result

    def _near_miss(self, name: str) -> str:
        folded = name.strip().casefold()
        for goal in self.goals:
            if goal.name.strip().casefold() == folded:
                return goal.name
        return ""

    def settles_at(self, goal: AccountGoal | None):
        """When a goal first seen recently becomes usable (5615), or None if it already is."""
        if goal is None:
            return None
        ready = goal.first_seen_at + GOAL_SETTLING_TIME
        return ready if ready > timezone.now() else None


def requeue_after_mapping_change(mapping: GoalMapping) -> int:
    """A fixed Goal Name retries that mapping's goal-not-found rows still inside Microsoft's window.

    Rows Microsoft rejected with 5606 and rows our own goal check held back are re-queued with
    the new name; queued rows not yet sent simply take the new name. Nothing else is re-sent.
    """
    now = timezone.now()
    rows = Push.objects.filter(connection=mapping.connection, conversion__event_name=mapping.event_name)
    rows.filter(status=Push.QUEUED).update(goal_name=mapping.goal_name, updated_at=now)
    failed = rows.filter(status=Push.ERROR, conversion_time__gte=now - MICROSOFT_WINDOW).filter(
        Q(error_code=GOAL_NOT_FOUND_CODE) | Q(error_symbol=ADSYNC_ERROR_PREFIX + "goal_not_found")
    )
    pushes = list(failed.only("id", "connection_id", "msclkid", "hashed_email", "hashed_phone", "conversion_time"))
    for push in pushes:
        push.goal_name = mapping.goal_name
        push.dedupe_key = push.compute_dedupe_key()
    taken = set(Push.objects.filter(dedupe_key__in=[p.dedupe_key for p in pushes if p.dedupe_key])
                .values_list("dedupe_key", flat=True))
    pushes = [p for p in pushes if p.dedupe_key not in taken]  # already pushed under that goal
    for push in pushes:
        push.status, push.attempts, push.next_attempt_at, push.updated_at = Push.QUEUED, 0, now, now
        push.error_code, push.error_symbol, push.error_message = None, "", ""
    Push.objects.bulk_update(pushes, ["status", "goal_name", "dedupe_key", "attempts", "next_attempt_at",
                                      "error_code", "error_symbol", "error_message", "updated_at"], batch_size=500)
    requeued = len(pushes)
    log.info("mapping %s changed: %s row(s) re-queued", mapping.pk, requeued)
    return requeued
