"""Adjustments: a stored conversion restated (a new value) or retracted (a refund, a cancellation).

One row per request, as the site (server API) or an operator (admin) asked; (conversion, kind,
time) identifies it, so a repeated request is the same adjustment. What it does to the sync log is
adsync/intake/adjustments.py's business: an unsent push changes locally, a sent one gets a push of
its own (Push.kind restate or retract) that the flush sends with ApplyOfflineConversionAdjustments.
"""

from __future__ import annotations

from django.core.validators import MinValueValidator
from django.db import models

from adsync.models.conversions import Conversion


class Adjustment(models.Model):
    """A Restate or a Retract of one conversion (docs/microsoft-api.md#adjustments)."""

    RESTATE = "restate"
    RETRACT = "retract"
    KINDS = [(RESTATE, "Restate (new value)"), (RETRACT, "Retract (refund or cancellation)")]
    SOURCE_SERVER = Conversion.SOURCE_SERVER
    SOURCE_ADMIN = Conversion.SOURCE_ADMIN
    SOURCES = [(SOURCE_SERVER, "Server API"), (SOURCE_ADMIN, "Admin")]

    conversion = models.ForeignKey(Conversion, on_delete=models.CASCADE, related_name="adjustments", db_index=False)
    kind = models.CharField(max_length=10, choices=KINDS)
    adjusted_at = models.DateTimeField("adjustment time (UTC)",
                                       help_text="Sent to Microsoft as AdjustmentTime, whole seconds.")
    value = models.DecimalField(max_digits=15, decimal_places=3, null=True, blank=True,
                                validators=[MinValueValidator(0)], help_text="The new value (Restate only).")
    currency = models.CharField(max_length=3, blank=True)
    source = models.CharField(max_length=10, choices=SOURCES, default=SOURCE_SERVER)
    requested_by = models.CharField(max_length=150, blank=True, help_text="The staff member, for the admin's actions.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            # Idempotency: the same (order, kind, time) asked twice is one adjustment.
            models.UniqueConstraint(fields=["conversion", "kind", "adjusted_at"], name="adjustment_once"),
        ]
        ordering = ["adjusted_at", "id"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} of {self.conversion} at {self.adjusted_at:%Y-%m-%d %H:%M:%S} UTC"
