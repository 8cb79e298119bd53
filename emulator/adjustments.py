"""ApplyOfflineConversionAdjustments: restate or retract an offline conversion the emulator received.

https://learn.microsoft.com/en-us/advertising/campaign-management-service/applyofflineconversionadjustments?view=bingads-13
https://learn.microsoft.com/en-us/advertising/campaign-management-service/offlineconversionadjustment?view=bingads-13

Same two stages as ApplyOfflineConversions (emulator/rules.py): the whole body is read first (a
date that cannot be parsed fails the whole request; 5600 empty, 5601 over 1,000 items), then each
item runs the checks below in order and the first failing code is its BatchError.

An adjustment must name the original conversion exactly: the same goal name, the same click id
(or, without one, the same hashes) and the same ConversionTime as the upload it adjusts. Microsoft
documents no code for "no such conversion", so the emulator answers with the nearest ones:
5604 when the click id never converted for that goal, 5603 when the hashes never did, and 5607
(conversion time invalid) when the click or hashes did convert, but not at that ConversionTime.

Accepted Restates change the value reports show (the latest AdjustmentTime wins, whatever order
they arrive in); a Retract takes the conversion out of reports. A Retract of a conversion already
retracted is accepted silently (a retry must be harmless); a Restate of one gets 5627.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from emulator import rules
from emulator.faults import batch_error, deserialization_fault, operation_fault
from emulator.models import (
    EmulatorAccount,
    EmulatorAdjustment,
    EmulatorConversion,
    EmulatorGoal,
    dedup_key,
)

RESTATE, RETRACT = EmulatorAdjustment.RESTATE, EmulatorAdjustment.RETRACT
# No limit is documented for adjustments; the emulator applies ApplyOfflineConversions' 1,000.
MAX_ADJUSTMENTS = rules.MAX_CONVERSIONS


@dataclass
class Adjustment:
    """One request item after deserialization; empty strings stand for null."""

    name: str
    conversion_time: datetime | None
    adjustment_type: str
    adjustment_time: datetime | None
    value: float | None
    currency: str
    msclkid: str
    hashed_email: str
    hashed_phone: str

    @property
    def has_hashes(self) -> bool:
        return bool(self.hashed_email or self.hashed_phone)

    def key(self) -> tuple:
        return dedup_key(self.name, self.msclkid, self.hashed_email, self.hashed_phone, self.conversion_time)

    def identity(self) -> tuple:
        """The original conversion's identity without its time: which click (or hashes) converted for which goal."""
        return self.key()[:-1]


# --- Stage 1: deserialization and request-level limits ---------------------------------------

def parse_adjustments(body: dict) -> list[Adjustment | None]:
    raw_items = body.get("OfflineConversionAdjustments")
    if raw_items is not None and not isinstance(raw_items, list):
        raise deserialization_fault("OfflineConversionAdjustments must be an array.")
    items = [_parse_item(raw) for raw in raw_items or []]
    if not items:
        raise operation_fault(5600, "campaign")
    if len(items) > MAX_ADJUSTMENTS:
        raise operation_fault(5601, "campaign")
    return items


def _parse_item(raw) -> Adjustment | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise deserialization_fault("Each OfflineConversionAdjustment must be an object.")
    return Adjustment(
        name=rules.string_field(raw, "ConversionName"),
        conversion_time=rules.parse_datetime(raw.get("ConversionTime")),
        adjustment_type=rules.string_field(raw, "AdjustmentType"),
        adjustment_time=rules.parse_datetime(raw.get("AdjustmentTime")),
        value=rules.number_field(raw, "AdjustmentValue"),
        currency=rules.string_field(raw, "AdjustmentCurrencyCode"),
        msclkid=rules.string_field(raw, "MicrosoftClickId"),
        hashed_email=rules.string_field(raw, "HashedEmailAddress"),
        hashed_phone=rules.string_field(raw, "HashedPhoneNumber"),
    )


# --- Stage 2: per-item checks ------------------------------------------------------------------

@dataclass
class Context:
    """The account's offline goals, the received conversions the items may adjust, and the clock."""

    goals: dict[str, EmulatorGoal]
    originals: dict[tuple, EmulatorConversion]       # by dedup key (goal, click or hashes, time)
    converted: set[tuple]                             # (goal, click or hashes) that converted at some time
    now: datetime


def item_error(item: Adjustment | None, ctx: Context) -> int | None:
    """The first failing rule's code, or None when the adjustment is accepted."""
    if item is None:
        return 5602
    for check in (_check_required, _check_identity, _check_times, _check_value, _check_original):
        code = check(item, ctx)
        if code:
            return code
    return None


def _check_required(item: Adjustment, ctx: Context) -> int | None:
    if not item.name:
        return 5605
    if item.conversion_time is None:
        return 5608
    if item.adjustment_type not in (RESTATE, RETRACT):
        return 5618
    if item.adjustment_time is None:
        return 5619
    return None


def _check_identity(item: Adjustment, ctx: Context) -> int | None:
    if not item.msclkid and not item.has_hashes:
        return 5603
    if "@" in item.hashed_email:
        return 8004
    if item.name not in ctx.goals:
        return 5606
    return None


def _check_times(item: Adjustment, ctx: Context) -> int | None:
    if item.conversion_time > ctx.now + rules.FUTURE_SKEW:
        return 5614
    if item.conversion_time < ctx.now - rules.MAX_AGE:
        return 5609
    if item.adjustment_time > ctx.now + rules.FUTURE_SKEW:
        return 5622
    if item.adjustment_time < item.conversion_time:
        return 5620
    return None


def _check_value(item: Adjustment, ctx: Context) -> int | None:
    if item.adjustment_type == RESTATE and item.value is None:
        return 5625
    if item.adjustment_type == RETRACT and item.value is not None:
        return 5624
    if item.value is not None and item.value < 0:
        return 5610
    if item.adjustment_type == RESTATE and item.currency and not rules.is_known_currency(item.currency):
        return 5611
    return None


def _check_original(item: Adjustment, ctx: Context) -> int | None:
    original = ctx.originals.get(item.key())
    if original is None:
        if item.identity() in ctx.converted:
            return 5607
        return 5604 if item.msclkid else 5603
    if original.retracted and item.adjustment_type == RESTATE:
        return 5627
    return None


# --- The operation -------------------------------------------------------------------------------

def apply_offline_conversion_adjustments(account: EmulatorAccount, body: dict, tracking_id: str) -> dict:
    """Validate every item, apply and record the accepted ones, and answer PartialErrors (reverse Index order)."""
    items = parse_adjustments(body)
    errors = []
    with transaction.atomic():
        ctx = _context(account, items)
        changed: dict[int, EmulatorConversion] = {}
        records = []
        for index, item in enumerate(items):
            code = item_error(item, ctx)
            if code:
                errors.append(batch_error(code, index))
                continue
            original = ctx.originals[item.key()]
            if _apply(original, item):
                changed[original.pk] = original
            records.append(EmulatorAdjustment(
                account=account, conversion=original, adjustment_type=item.adjustment_type,
                adjustment_time=item.adjustment_time, value=item.value,
                currency=item.currency.upper() if item.adjustment_type == RESTATE else "", tracking_id=tracking_id))
        EmulatorConversion.objects.bulk_update(
            changed.values(), ["retracted", "restated_value", "restated_currency", "restated_at"])
        EmulatorAdjustment.objects.bulk_create(records)
    return {"PartialErrors": list(reversed(errors))}


def _apply(conversion: EmulatorConversion, item: Adjustment) -> bool:
    """Change the conversion as the adjustment says; False when it changes nothing (a repeated Retract, an older Restate)."""
    if item.adjustment_type == RETRACT:
        if conversion.retracted:
            return False
        conversion.retracted = True
        return True
    if conversion.restated_at is not None and item.adjustment_time < conversion.restated_at:
        return False
    conversion.restated_value = item.value
    conversion.restated_currency = item.currency.upper()
    conversion.restated_at = item.adjustment_time
    return True


def _context(account: EmulatorAccount, items: list[Adjustment | None]) -> Context:
    """Load, and lock for the transaction, every original conversion the items could name."""
    present = [item for item in items if item is not None]
    names = {item.name for item in present}
    identities = Q()
    for field, values in (("msclkid", {i.msclkid for i in present if i.msclkid}),
                          ("hashed_email", {i.hashed_email for i in present if not i.msclkid and i.hashed_email}),
                          ("hashed_phone", {i.hashed_phone for i in present if not i.msclkid and i.hashed_phone})):
        if values:
            identities |= Q(**{f"{field}__in": values})
    candidates = []
    if identities:
        candidates = list(EmulatorConversion.objects.select_for_update().filter(
            identities, account=account, duplicate=False, goal_name__in=names))
    goals = account.goals.filter(type=EmulatorGoal.OFFLINE, status__in=[EmulatorGoal.ACTIVE, EmulatorGoal.PAUSED])
    return Context(
        goals={goal.name: goal for goal in goals},
        originals={conversion.dedup_key(): conversion for conversion in candidates},
        converted={conversion.dedup_key()[:-1] for conversion in candidates},
        now=timezone.now(),
    )
