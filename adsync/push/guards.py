"""Pre-send checks that mirror Microsoft's rules, so adsync catches a bad row before Microsoft does.

Reference: docs/microsoft-api.md#time-rules and #conversion-goals.
A row failing a check becomes `error` with an `adsync:` symbol (distinguishable from
Microsoft's codes) and is not sent; a row that is merely early (a click under an hour old,
a goal first seen under 2 hours ago, a time a few minutes ahead) is held and sent later.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils import timezone

from adsync.conf import conf
from adsync.models import ADSYNC_ERROR_PREFIX, Push
from adsync.push.goals import GoalBook
from adsync.push.transitions import MICROSOFT_WINDOW

CLOCK_SKEW = timedelta(minutes=5)
# What Microsoft accepts as a hashed email or phone: SHA-256 as 64 lower-case hex characters.
HASHED_IDENTIFIER = re.compile(r"[0-9a-f]{64}")

SEND, HOLD, FAIL = "send", "hold", "fail"
HELD_SYMBOL = ADSYNC_ERROR_PREFIX + "held"


@dataclass
class Verdict:
    action: str
    symbol: str = ""
    reason: str = ""
    until: datetime | None = None

    @classmethod
    def fail(cls, symbol: str, reason: str) -> Verdict:
        return cls(FAIL, ADSYNC_ERROR_PREFIX + symbol, reason)

    @classmethod
    def hold(cls, until: datetime, reason: str) -> Verdict:
        return cls(HOLD, HELD_SYMBOL, reason, until)


def click_hold() -> timedelta:
    return timedelta(minutes=conf.click_hold_minutes)


def preflight(push: Push, book: GoalBook, now: datetime | None = None) -> Verdict:
    """Decide whether `push` may be sent now, from the row alone (no extra query)."""
    now = now or timezone.now()
    check = book.check(push.goal_name)
    if not check.ok:
        symbol = "goal_not_found" if check.goal is None else "goal_unusable"
        return Verdict.fail(symbol, check.message())
    if not push.msclkid and check.goal is not None and not check.goal.enhanced_conversions:
        return Verdict.fail("enhanced_conversions_off",
                            f'No msclkid, and enhanced conversions are off for the goal "{check.goal.name}" in '
                            f"Microsoft Ads: Microsoft would reject a conversion matched by hashed email or phone "
                            f"only. Turn them on for the goal, Refresh goals, then Replay.")
    return _identity_verdict(push) or _time_verdict(push, check.goal, now) or _settling_verdict(book, check.goal) \
        or Verdict(SEND)


def _identity_verdict(push: Push) -> Verdict | None:
    if not (push.msclkid or push.hashed_email or push.hashed_phone):
        return Verdict.fail("no_identity", "No msclkid and no hashed email or phone: Microsoft cannot match it.")
    for label, value in (("email", push.hashed_email), ("phone", push.hashed_phone)):
        if value and not HASHED_IDENTIFIER.fullmatch(value):
            return Verdict.fail("bad_hash", f"The hashed {label} is not a lower-case SHA-256 hex digest.")
    if push.value is not None and push.value < 0:
        return Verdict.fail("negative_value", "The conversion value is negative.")
    return None


@dataclass(frozen=True)
class Refusal:
    """A conversion time Microsoft refuses whatever happens later: the sync log's `reason` (and `symbol`),
    and the ingest's `problem`, said of the field "time" (tracking/payloads.py, adsync/intake/record.py)."""

    symbol: str
    reason: str
    problem: str


def time_refusal(moment: datetime, click: datetime | None, now: datetime) -> Refusal | None:
    """Why Microsoft would refuse a conversion at `moment` (clicked at `click`, if known), or None.

    The one rule behind both the pre-send check and the ingest's 4xx (docs/microsoft-api.md#time-rules).
    """
    if moment > now + CLOCK_SKEW:
        return Refusal("future_time", f"The conversion time {moment:%Y-%m-%d %H:%M:%S} UTC is in the future.",
                       "is more than 5 minutes in the future")
    if moment < now - MICROSOFT_WINDOW:
        return Refusal("older_than_90_days", "The conversion is more than 90 days old; Microsoft no longer accepts it.",
                       "is more than 90 days ago; Microsoft accepts offline conversions up to 90 days old")
    if click is None:
        return None
    # Whole seconds, as Microsoft compares: the conversion time is stored truncated, the click time is not,
    # so a conversion in the same second as its click must not look earlier than it.
    if moment < click.replace(microsecond=0):
        return Refusal("before_click", "The conversion time is earlier than the click time (check time zones).",
                       f"is earlier than the click ({click:%Y-%m-%dT%H:%M:%SZ}); check the time zone of the time "
                       f"you send")
    if moment > click + MICROSOFT_WINDOW:
        return Refusal("after_click_window", "The conversion is more than 90 days after the click.",
                       f"is more than 90 days after the click ({click:%Y-%m-%dT%H:%M:%SZ})")
    return None


def _time_verdict(push: Push, goal, now: datetime) -> Verdict | None:
    moment = push.conversion_time
    refusal = time_refusal(moment, push.click_time, now)
    if refusal is not None:
        return Verdict.fail(refusal.symbol, refusal.reason)
    if moment > now:
        return Verdict.hold(moment + timedelta(seconds=1), "The conversion time is a few seconds ahead: held.")
    click = push.click_time
    if click is None:
        return None
    window = goal.conversion_window_minutes if goal else None
    if window and moment > click + timedelta(minutes=window):
        return Verdict.fail("outside_goal_window",
                            f"The conversion is outside the goal's {window // 1440}-day conversion window.")
    if now < click + click_hold():
        return Verdict.hold(click + click_hold(), "The click is less than an hour old; Microsoft asks to wait.")
    return None


def _settling_verdict(book: GoalBook, goal) -> Verdict | None:
    ready = book.settles_at(goal)
    if ready:
        return Verdict.hold(ready, "The goal was first seen less than 2 hours ago (Microsoft's 5615 rule).")
    return None
