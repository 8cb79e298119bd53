"""Fixes the checklist can apply itself: creating a mapped offline conversion goal that does not exist.

The card's confirmation page (adsync/admin/diagnosis.py) offers only Goal Names the latest checklist
found mapped and missing from the account, of any goal type, with no near miss: a name differing
only in case or spaces from an existing goal is a typo in the mapping, and Microsoft would refuse
it anyway (5317 compares names without case). The job calls AddConversionGoals (OfflineConversion, account scope, each
conversion's own value) and refreshes the goal cache; the goal then waits Microsoft's 2 hours
before uploads, which adsync holds for (docs/microsoft-api.md#conversion-goals).
"""

from __future__ import annotations

from dataclasses import dataclass

from adsync.connections import tokens
from adsync.microsoft.campaign import CampaignClient
from adsync.microsoft.errors import MicrosoftAdsError
from adsync.models import Connection
from adsync.push import goals
from adsync.push.goals import GoalBook

DEFAULT_WINDOW_DAYS = 30   # Microsoft's default window (43,200 minutes)
MAX_WINDOW_DAYS = 90       # the longest window Microsoft allows for offline goals
COUNT_ALL, COUNT_UNIQUE = "All", "Unique"
COUNT_TYPES = [(COUNT_ALL, "All: every conversion counts (purchases, renewals)"),
               (COUNT_UNIQUE, "Unique: one conversion per ad click (leads, sign-ups)")]


def creatable_goal_names(connection: Connection) -> list[str]:
    """Goal Names the latest checklist found missing (no goal of any type, no near miss) that are still mapped
    and still absent from the cached goal list."""
    run = connection.diagnosis_runs.order_by("-started_at", "-id").first()
    check = run.result("goal_names") if run else None
    if check is None:
        return []
    book = GoalBook(connection)
    mapped = set(connection.goal_mappings.values_list("goal_name", flat=True))
    return sorted(name for name in check.data.get("missing_goals", []) if name in mapped and name not in book.by_name)


@dataclass
class GoalCreation:
    """What the job did, as one sentence for the checklist's note."""

    name: str
    goal_id: str = ""
    error: MicrosoftAdsError | None = None
    already_there: bool = False

    def note(self) -> str:
        if self.already_there:
            return f"The goal “{self.name}” already exists in Microsoft Ads; nothing was created."
        if self.error is not None:
            hint = f" — {self.error.hint}" if self.error.hint else ""
            return f"Could not create the goal “{self.name}”: {self.error.describe()}{hint}"
        return (f"Created the offline conversion goal “{self.name}” (goal id {self.goal_id}) in Microsoft Ads. Its rows "
                f"are held for 2 hours, as Microsoft asks for a new goal.")


def create_goal(connection: Connection, name: str, window_minutes: int, count_type: str) -> GoalCreation:
    """AddConversionGoals for one mapped name, then refresh the goal cache. Never raises MicrosoftAdsError."""
    outcome = GoalCreation(name)
    try:
        goals.refresh_goals(connection)
        if GoalBook(connection).by_name.get(name) is not None:
            outcome.already_there = True
            return outcome
        client = CampaignClient(access_token=tokens.access_token_for(connection), customer_id=connection.customer_id,
                                account_id=connection.account_id)
        outcome.goal_id = client.add_offline_conversion_goal(name, window_minutes, count_type)
        goals.refresh_goals(connection)
    except MicrosoftAdsError as err:
        outcome.error = err
    return outcome
