"""Restating or retracting a stored conversion (server API PATCH / DELETE, the sync log's admin actions).

Reference: docs/microsoft-api.md#adjustments. What happens per sync-log row of the conversion:

- not sent yet (queued, pending_identity, error): a Restate changes the value it will be sent with;
  a Retract cancels it (status cancelled, `adsync:retracted`). Nothing goes to Microsoft.
- sent, or being sent right now (claimed by a flush): a row of its own (kind restate / retract)
  is queued, naming the original exactly as it was sent; the flush sends it after the conversion,
  with ApplyOfflineConversionAdjustments.

(conversion, kind, time) identifies an adjustment, so a repeated request changes nothing. A
retract is final: asking again returns it, and a conversion retracted cannot be restated.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from adsync.models import Adjustment, Conversion, Push, format_conversion_time
from adsync.push import transitions
from adsync.push.guards import CLOCK_SKEW
from adsync.push.transitions import MICROSOFT_WINDOW


class AdjustmentRefused(ValueError):
    """A request adsync will not carry out: `field: problem`, and the HTTP status that fits it."""

    def __init__(self, field: str, problem: str, status: int = 422) -> None:
        super().__init__(f"{field}: {problem}")
        self.field, self.problem, self.status = field, problem, status


@dataclass(frozen=True)
class Adjusted:
    """An adjustment as stored (`created` False for a repeat), what changed locally and what was queued."""

    adjustment: Adjustment
    created: bool
    changed_locally: int = 0
    queued: int = 0


def adjust(conversion: Conversion, kind: str, *, at: datetime | None = None, value: Decimal | None = None,
           currency: str = "", source: str = Adjustment.SOURCE_SERVER, requested_by: str = "",
           now: datetime | None = None) -> Adjusted:
    """Restate (`value`, optional `currency`) or retract `conversion` at time `at` (default now)."""
    now = now or timezone.now()
    at = (at or now).replace(microsecond=0)
    _check_request(conversion, kind, at, value, now)
    with transaction.atomic():
        # One adjustment of a conversion at a time, and its rows held still while we look at them:
        # a flush cannot record a result for them in between (it waits), nor claim them (SKIP LOCKED).
        conversion = Conversion.objects.select_for_update().get(pk=conversion.pk)
        list(Push.objects.of_conversion(conversion).select_for_update().values_list("id", flat=True))
        repeat = _repeat(conversion, kind, at)
        if repeat is not None:
            return Adjusted(repeat, created=False)
        if kind == Adjustment.RESTATE and conversion.retracted_at is not None:
            raise AdjustmentRefused("orderId", "this conversion was retracted; a retracted conversion cannot be "
                                               "restated", status=409)
        adjustment = Adjustment.objects.create(
            conversion=conversion, kind=kind, adjusted_at=at, value=value if kind == Adjustment.RESTATE else None,
            currency=(currency or conversion.currency) if kind == Adjustment.RESTATE else "", source=source,
            requested_by=requested_by)
        changed = _apply_locally(conversion, adjustment)
        originals = transitions.possibly_at_microsoft(conversion)
        if originals and conversion.occurred_at < now - MICROSOFT_WINDOW:
            raise AdjustmentRefused("orderId", "the conversion is more than 90 days old and was sent to Microsoft, "
                                               "which accepts no adjustment of it any more")
        queued = transitions.create_adjustment_pushes(adjustment, originals)
    return Adjusted(adjustment, created=True, changed_locally=changed, queued=queued)


def _check_request(conversion: Conversion, kind: str, at: datetime, value: Decimal | None, now: datetime) -> None:
    """Microsoft's rules that the request alone can break (docs/microsoft-api.md#adjustments)."""
    if kind not in (Adjustment.RESTATE, Adjustment.RETRACT):
        raise AdjustmentRefused("kind", "must be restate or retract", status=400)
    if kind == Adjustment.RESTATE and value is None:
        raise AdjustmentRefused("value", "is required to restate a conversion", status=400)
    if kind == Adjustment.RETRACT and value is not None:
        raise AdjustmentRefused("value", "a retract carries no value", status=400)
    if conversion.erased_at is not None:
        raise AdjustmentRefused("orderId", "this conversion's personal data was erased; it cannot be adjusted",
                                status=409)
    if at > now + CLOCK_SKEW:
        raise AdjustmentRefused("time", "must not be in the future", status=400)
    if at < conversion.occurred_at:
        raise AdjustmentRefused("time", f"must not be before the conversion time "
                                        f"({format_conversion_time(conversion.occurred_at)})", status=400)


def _repeat(conversion: Conversion, kind: str, at: datetime) -> Adjustment | None:
    """The stored adjustment a request repeats: the same (kind, time); for a retract, any retract."""
    same = Adjustment.objects.filter(conversion=conversion, kind=kind)
    if kind == Adjustment.RETRACT:
        return same.order_by("adjusted_at", "id").first()
    return same.filter(adjusted_at=at).first()


def _apply_locally(conversion: Conversion, adjustment: Adjustment) -> int:
    """The conversion and its unsent rows take the adjustment; returns how many rows changed."""
    if adjustment.kind == Adjustment.RETRACT:
        conversion.retracted_at = adjustment.adjusted_at
        conversion.save(update_fields=["retracted_at"])
        return transitions.retract_unsent(conversion)
    newer = Adjustment.objects.filter(conversion=conversion, kind=Adjustment.RESTATE,
                                      adjusted_at__gt=adjustment.adjusted_at).exists()
    if newer:  # an older restate arriving late: Microsoft keeps the latest too
        return 0
    conversion.value, conversion.currency = adjustment.value, adjustment.currency
    conversion.save(update_fields=["value", "currency"])
    return transitions.restate_unsent(conversion, adjustment.value, adjustment.currency)

