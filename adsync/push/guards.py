"""Pre-send checks that mirror Microsoft's rules, so adsync catches a bad row before Microsoft does.

Reference: docs/microsoft-api.md#time-rules and #conversion-goals.
A row failing a check becomes `error` with an `adsync:` symbol (distinguishable from
Microsoft's codes) and is not sent; a row that is merely early (a click under an hour old,
a goal first seen under 2 hours ago, a time a few minutes ahead) is held and sent later.
Adjustments (docs/microsoft-api.md#adjustments) have checks of their own (`preflight_adjustment`):
they wait for the conversion they adjust to be sent, and are cancelled if it never will be.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.utils import timezone

from adsync.conf import conf
from adsync.models import ADSYNC_ERROR_PREFIX, Push
from adsync.push.goals import GoalBook
from adsync.push.transitions import MICROSOFT_WINDOW

CLOCK_SKEW = timedelta(minutes=5)
# What Microsoft accepts as a hashed email or phone: SHA-256 as 64 lower-case hex characters.
HASHED_IDENTIFIER = re.compile(r"[0-9a-f]{64}")

SEND, HOLD, FAIL, CANCEL = "send", "hold", "fail", "cancel"
# How long an adjustment waits when its conversion is still on its way (about one flush).
ORIGINAL_WAIT = timedelta(minutes=2)
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

    @classmethod
    def cancel(cls, symbol: str, reason: str) -> Verdict:
        return cls(CANCEL, ADSYNC_ERROR_PREFIX + symbol, reason)


def click_hold() -> timedelta:
    return timedelta(minutes=conf.click_hold_minutes)


def preflight(push: Push, book: GoalBook, now: datetime | None = None, originals: Originals | None = None) -> Verdict:
    """Decide whether `push` may be sent now, from the row alone (no extra query; an adjustment reads its
    conversion's row from `originals`, loaded once per batch, or here when none is given)."""
    now = now or timezone.now()
    if push.kind != Push.CONVERSION:
        return preflight_adjustment(push, book, originals or Originals.load([push]), now)
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


# --- Adjustments ----------------------------------------------------------------------------------

@dataclass
class Originals:
    """For a batch of adjustment rows: the state of each conversion row they adjust (by conversion and
    connection), and when each conversion was retracted. One query per batch."""

    status: dict[tuple[int, int], str] = field(default_factory=dict)
    retracted_at: dict[int, datetime] = field(default_factory=dict)

    @classmethod
    def load(cls, pushes) -> Originals:
        ids = {push.conversion_id for push in pushes if push.kind != Push.CONVERSION}
        originals = cls()
        if not ids:
            return originals
        rows = Push.objects.filter(conversion_id__in=ids, kind=Push.CONVERSION).values_list(
            "conversion_id", "connection_id", "status", "conversion__retracted_at")
        for conversion_id, connection_id, status, retracted_at in rows:
            originals.status[(conversion_id, connection_id)] = status
            if retracted_at:
                originals.retracted_at[conversion_id] = retracted_at
        return originals


def preflight_adjustment(push: Push, book: GoalBook, originals: Originals, now: datetime) -> Verdict:
    """An adjustment goes out after its conversion was accepted, inside Microsoft's window, with the
    fields its type needs (docs/microsoft-api.md#adjustments)."""
    original = originals.status.get((push.conversion_id, push.connection_id))
    if original == Push.QUEUED:
        return Verdict.hold(now + ORIGINAL_WAIT, "Waits for the conversion it adjusts to be sent first.")
    if original != Push.SENT:
        return Verdict.cancel("original_not_sent", f"The conversion it adjusts never reached Microsoft (that row is "
                                                   f"{original or 'gone'}): there is nothing to adjust.")
    restate = push.kind == Push.RESTATE
    if restate and push.value is None:
        return Verdict.fail("restate_without_value", "A Restate needs the new value.")
    if not restate and push.value is not None:
        return Verdict.fail("retract_with_value", "A Retract carries no value.")
    retracted = originals.retracted_at.get(push.conversion_id)
    if restate and retracted is not None and push.adjustment_time >= retracted:
        return Verdict.fail("restate_after_retract", "The conversion was retracted before this time: a retracted "
                                                     "conversion cannot be restated.")
    check = book.check(push.goal_name)
    if book.known and check.goal is None:
        return Verdict.fail("goal_not_found", check.message())
    return _identity_verdict(push) or _adjustment_time_verdict(push, now) or Verdict(SEND)


def _adjustment_time_verdict(push: Push, now: datetime) -> Verdict | None:
    moment = push.adjustment_time
    if moment is None:
        return Verdict.fail("no_adjustment_time", "The adjustment has no time.")
    if moment > now + CLOCK_SKEW:
        return Verdict.fail("future_adjustment_time",
                            f"The adjustment time {moment:%Y-%m-%d %H:%M:%S} UTC is in the future.")
    if moment > now:
        return Verdict.hold(moment + timedelta(seconds=1), "The adjustment time is a few seconds ahead: held.")
    if moment < push.conversion_time:
        return Verdict.fail("adjustment_before_conversion", "The adjustment time is earlier than the conversion time.")
    if push.conversion_time < now - MICROSOFT_WINDOW:
        return Verdict.fail("older_than_90_days", "The conversion is more than 90 days old; Microsoft no longer "
                                                  "accepts adjustments to it.")
    return None
