"""Microsoft's ApplyOfflineConversions rules, as plain functions (docs/microsoft-api.md#request-body to #error-codes).

Two stages, like the real service:
1. `parse_conversions` reads the whole body. Anything that cannot be deserialized (a
   ConversionTime that is not a date, a value that is not a number) fails the whole request,
   with no item index, before any rule runs. Then 5600 (empty) and 5601 (over 1,000).
2. `item_error` runs the per-item checks in order and returns the first failing code, which
   the caller reports as a BatchError with the item's Index.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

import pycountry

from emulator.faults import deserialization_fault, operation_fault
from emulator.models import EmulatorClick, EmulatorGoal

MAX_CONVERSIONS = 1000
FUTURE_SKEW = timedelta(seconds=60)
MAX_AGE = timedelta(days=90)
GOAL_MIN_AGE = timedelta(hours=2)
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class OfflineConversion:
    """One request item after deserialization; empty strings stand for null."""

    name: str
    time: datetime | None
    msclkid: str
    hashed_email: str
    hashed_phone: str
    value: float | None
    currency: str

    @property
    def has_hashes(self) -> bool:
        return bool(self.hashed_email or self.hashed_phone)


@dataclass
class Context:
    """What the per-item checks look up: the account's offline goals and clicks, the clock, the switches."""

    goals: dict[str, EmulatorGoal]
    clicks: dict[str, EmulatorClick]
    now: datetime
    enforce_goal_age: bool = False

    def goal(self, item: OfflineConversion) -> EmulatorGoal | None:
        return self.goals.get(item.name)

    def click(self, item: OfflineConversion) -> EmulatorClick | None:
        return self.clicks.get(item.msclkid)


# --- Stage 1: deserialization and request-level limits ---------------------------------------

def parse_conversions(body: dict) -> list[OfflineConversion | None]:
    raw_items = body.get("OfflineConversions")
    if raw_items is not None and not isinstance(raw_items, list):
        raise deserialization_fault("OfflineConversions must be an array.")
    items = [_parse_item(raw) for raw in raw_items or []]
    if not items:
        raise operation_fault(5600, "campaign")
    if len(items) > MAX_CONVERSIONS:
        raise operation_fault(5601, "campaign")
    return items


def _parse_item(raw) -> OfflineConversion | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise deserialization_fault("Each OfflineConversion must be an object.")
    return OfflineConversion(
        name=string_field(raw, "ConversionName"),
        time=parse_datetime(raw.get("ConversionTime")),
        msclkid=string_field(raw, "MicrosoftClickId"),
        hashed_email=string_field(raw, "HashedEmailAddress"),
        hashed_phone=string_field(raw, "HashedPhoneNumber"),
        value=number_field(raw, "ConversionValue"),
        currency=string_field(raw, "ConversionCurrencyCode"),
    )


def string_field(raw: dict, key: str) -> str:
    value = raw.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise deserialization_fault(f"The value '{value}' cannot be parsed as the type 'String' ({key}).")
    return value


def number_field(raw: dict, key: str) -> float | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise deserialization_fault(f"The value '{value}' cannot be parsed as the type 'Double' ({key}).")
    return float(value)


def parse_datetime(value) -> datetime | None:
    """An ISO-8601 dateTime, UTC when no offset is given; anything else fails the whole request."""
    if value is None or value == "":
        return None
    try:
        if not isinstance(value, str):
            raise ValueError
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise deserialization_fault(f"The value '{value}' cannot be parsed as the type 'DateTime'.") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt_timezone.utc)
    return moment.astimezone(dt_timezone.utc)


# --- Stage 2: per-item checks, in the order Microsoft reports them ---------------------------

Check = Callable[[OfflineConversion, Context], "int | None"]


def check_required(item: OfflineConversion, ctx: Context) -> int | None:
    if not item.name:
        return 5605
    if item.time is None:
        return 5608
    if not item.msclkid and not item.has_hashes:
        return 5603
    return None


def check_goal(item: OfflineConversion, ctx: Context) -> int | None:
    """The name must match an offline goal exactly: 'purchase ' is not 'Purchase'."""
    return 5606 if ctx.goal(item) is None else None


def check_identity(item: OfflineConversion, ctx: Context) -> int | None:
    if "@" in item.hashed_email:
        return 8004
    if not item.msclkid:
        # Hashed identity alone counts only for goals with enhanced conversions (docs/microsoft-api.md#hashing).
        return None if ctx.goal(item).is_enhanced_conversions_enabled else 5603
    return 5604 if ctx.click(item) is None else None


def check_time(item: OfflineConversion, ctx: Context) -> int | None:
    if item.time > ctx.now + FUTURE_SKEW:
        return 5614
    if item.time < ctx.now - MAX_AGE:
        return 5609
    click = ctx.click(item) if item.msclkid else None
    if click is None:
        return None
    # Whole seconds: clients send ConversionTime truncated to the second (docs/microsoft-api.md#request-body examples).
    if item.time < click.clicked_at.replace(microsecond=0):
        return 5616
    if item.time > click.clicked_at + ctx.goal(item).window:
        return 5617
    return None


def check_goal_age(item: OfflineConversion, ctx: Context) -> int | None:
    if ctx.enforce_goal_age and ctx.now - ctx.goal(item).created_at < GOAL_MIN_AGE:
        return 5615
    return None


def check_value(item: OfflineConversion, ctx: Context) -> int | None:
    if item.value is not None and item.value < 0:
        return 5610
    if item.currency and not is_known_currency(item.currency):
        return 5611
    return None


CHECKS: tuple[Check, ...] = (check_required, check_goal, check_identity, check_time, check_goal_age, check_value)


def item_error(item: OfflineConversion | None, ctx: Context) -> int | None:
    """The first failing rule's code, or None when the conversion is accepted."""
    if item is None:
        return 5602
    for check in CHECKS:
        code = check(item, ctx)
        if code:
            return code
    return None


def is_known_currency(code: str) -> bool:
    return pycountry.currencies.get(alpha_3=code.upper()) is not None
