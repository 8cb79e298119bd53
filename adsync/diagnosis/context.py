"""What one diagnosis run learns as it goes, handed from check to check.

Check 1 leaves a freshly refreshed access token and the account as the signed-in user sees it;
check 2 leaves whether Campaign Management accepted the credentials (and the auto-tagging answer
it fetched); later checks use them instead of calling Microsoft again, and skip what they cannot do.
Also here: each check's number and title, and the wording every check uses for times and shares.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils.timesince import timesince

from adsync.microsoft.customer import AdAccount
from adsync.microsoft.errors import MicrosoftAdsError
from adsync.models import CheckResult, Connection

# Each check's key and title, in the checklist's order (the number is the position).
CHECKLIST = [
    ("tokens", "Tokens and the signed-in user's role"),
    ("developer_token", "Developer token accepted"),
    ("auto_tagging", "Auto-tagging (msclkid) on the account"),
    ("goal_names", "Goal Names mapped"),
    ("snippet", "The snippet captures msclkid"),
    ("pending_identity", "Why conversions are pending_identity"),
    ("sync_activity", "Last flush and last insights sync"),
    ("errors", "Errors of the last 24 hours"),
    ("reconciliation", "Microsoft's count per goal vs what adsync sent"),
]
NUMBERS = {key: number for number, (key, _) in enumerate(CHECKLIST, start=1)}
TITLES = dict(CHECKLIST)


@dataclass
class Context:
    connection: Connection
    now: datetime
    sleep: Callable[[float], None] = time.sleep
    access_token: str = ""                 # check 1: a token Microsoft just issued
    account: AdAccount | None = None       # check 1: the account as the signed-in user reaches it
    api_ok: bool = False                   # check 2: Campaign Management accepted the credentials
    auto_tagging: bool | None = None       # check 2 fetched it, check 3 judges it
    goals_error: MicrosoftAdsError | None = None


def result(key: str, outcome: str, summary: str, evidence: list[str] | None = None, *, remedy: str = "",
           link: str = "", link_label: str = "", data: dict | None = None) -> CheckResult:
    """A CheckResult with the check's number and title filled in."""
    return CheckResult(key=key, number=NUMBERS[key], title=TITLES[key], outcome=outcome, summary=summary,
                       evidence=list(evidence or []), remedy=remedy, link=link, link_label=link_label,
                       data=dict(data or {}))


def ago(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "never"
    since = "just now" if now - moment < timedelta(minutes=1) else f"{timesince(moment, now, depth=1)} ago"
    return f"{moment:%Y-%m-%d %H:%M} UTC ({since})"


def share(part: int, whole: int) -> str:
    return f"{part / whole:.0%}" if whole else "—"
