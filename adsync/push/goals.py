"""The account's conversion goals, cached, and the Goal Name check that guards every push.

Microsoft may silently drop a conversion whose ConversionName matches no goal instead of
answering 5606 (docs/microsoft-api.md#conversion-goals), so this check, not Microsoft's error,
is the real guard. The daily `adsync:goals` job refreshes every active connection's cache.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from django.utils import timezone

from adsync.connections import tokens
from adsync.microsoft.campaign import CampaignClient
from adsync.models import AccountGoal, Connection

log = logging.getLogger(__name__)

GOAL_SETTLING_TIME = timedelta(hours=2)  # 5615: "must wait 2 hours after the goal was created"


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
