"""The sync log's "Restate value" and "Retract" actions: a form and confirmation page, then
adsync/intake/adjustments.py per selected conversion (operators only, like every state change)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pycountry
from django import forms
from django.contrib import messages
from django.contrib.admin import helpers
from django.core.validators import MinValueValidator
from django.template.response import TemplateResponse
from django.utils import timezone

from adsync.formats import count
from adsync.intake.adjustments import AdjustmentRefused, adjust
from adsync.models import Adjustment, Conversion, Push
from adsync.push.transitions import MICROSOFT_WINDOW


class AdjustmentForm(forms.Form):
    """What an operator enters: the new value (Restate only), its currency, and when it happened."""

    value = forms.DecimalField(label="New value", required=False, max_digits=15, decimal_places=3,
                               validators=[MinValueValidator(0)])
    currency = forms.CharField(label="Currency", required=False, max_length=3,
                               help_text="ISO 4217, e.g. USD. Empty: the conversion's currency.")
    time = forms.DateTimeField(label="Adjustment time (UTC)", required=False,
                               help_text="When the refund, cancellation or change happened, e.g. 2026-11-20 14:03:11. "
                                         "Empty: now.")

    def __init__(self, *args, kind: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.kind = kind
        if kind == Adjustment.RETRACT:
            del self.fields["value"], self.fields["currency"]
        else:
            self.fields["value"].required = True

    def clean_currency(self) -> str:
        code = (self.cleaned_data.get("currency") or "").strip().upper()
        if code and pycountry.currencies.get(alpha_3=code) is None:
            raise forms.ValidationError("Not an ISO 4217 currency code, e.g. USD.")
        return code


@dataclass
class Planned:
    """One selected conversion and what the adjustment will do to each of its sync-log rows."""

    conversion: Conversion
    effects: list[str]
    refused: str = ""


def plan(conversion: Conversion, rows: list[Push], kind: str) -> Planned:
    """Say, before anything changes, what happens to each row (adsync/intake/adjustments.py decides for real)."""
    now = timezone.now()
    if conversion.erased_at:
        return Planned(conversion, [], "its personal data was erased")
    if kind == Adjustment.RESTATE and conversion.retracted_at:
        return Planned(conversion, [], "it was retracted; a retracted conversion cannot be restated")
    effects = []
    for row in rows:
        if row.status == Push.SENT or (row.status == Push.QUEUED and row.claimed_until and row.claimed_until >= now):
            if conversion.occurred_at < now - MICROSOFT_WINDOW:
                return Planned(conversion, [], "it was sent more than 90 days ago; Microsoft accepts no adjustment")
            verb = "a Restate" if kind == Adjustment.RESTATE else "a Retract"
            effects.append(f"{row.connection}: {row.status} → {verb} is queued for Microsoft")
        elif row.status in (Push.QUEUED, Push.PENDING_IDENTITY, Push.ERROR):
            change = "takes the new value" if kind == Adjustment.RESTATE else "cancelled, never sent"
            effects.append(f"{row.connection}: {row.status}, not sent yet → {change} (nothing goes to Microsoft)")
        else:
            effects.append(f"{row.connection}: {row.status} → unchanged")
    return Planned(conversion, effects)


MAX_ROWS = 500  # one page of decisions an operator can read


def adjustment_action(model_admin, request, queryset, kind: str):
    """The action's two steps: the page (first call, or an invalid form), then the adjustment."""
    selected = queryset.filter(kind=Push.CONVERSION)
    rows = list(selected.select_related("conversion", "connection__site")
                .order_by("conversion_id", "id")[:MAX_ROWS + 1])
    if len(rows) > MAX_ROWS:
        model_admin.message_user(request, f"Select at most {MAX_ROWS} rows to adjust at once.", messages.ERROR)
        return None
    by_conversion: dict[int, list[Push]] = {}
    for row in rows:
        by_conversion.setdefault(row.conversion_id, []).append(row)
    planned = [plan(group[0].conversion, group, kind) for group in by_conversion.values()]
    form = AdjustmentForm(request.POST if "apply" in request.POST else None, kind=kind)
    if form.is_bound and form.is_valid():
        return _apply(model_admin, request, planned, kind, form.cleaned_data)
    label = "Restate value" if kind == Adjustment.RESTATE else "Retract (refund or cancellation)"
    return TemplateResponse(request, "admin/adsync/push/adjust.html", {
        **model_admin.admin_site.each_context(request),
        "title": label, "label": label, "kind": kind, "form": form, "planned": planned,
        "skipped": queryset.exclude(kind=Push.CONVERSION).count(), "queryset": rows,
        "action": request.POST.get("action", ""), "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        "opts": model_admin.model._meta,
    })


def _apply(model_admin, request, planned: list[Planned], kind: str, data: dict) -> None:
    at = data.get("time")
    if at and at > timezone.now() + timedelta(minutes=5):
        model_admin.message_user(request, "The adjustment time is in the future: nothing was changed.", messages.ERROR)
        return
    done = refused = 0
    for item in planned:
        try:
            adjust(item.conversion, kind, at=at, value=data.get("value"), currency=data.get("currency") or "",
                   source=Adjustment.SOURCE_ADMIN, requested_by=request.user.get_username())
            done += 1
        except AdjustmentRefused as error:
            refused += 1
            model_admin.message_user(request, f"{item.conversion}: {error.problem}", messages.WARNING)
    model_admin.message_user(request, f"{count(done, 'conversion')} adjusted; adjustments of sent conversions go to "
                                      f"Microsoft on the next flush." + (f" {refused} refused." if refused else ""))
