"""The audit trail of erasures ("forget this person"): who and when, never what was erased."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class Erasure(models.Model):
    """One erasure of a person's data (adsync/intake/forget.py). It holds no identifier of the person:
    only who asked, when, through which tool, the kinds of key used and how many rows changed."""

    VIA_ADMIN = "admin"
    VIA_COMMAND = "command"
    VIAS = [(VIA_ADMIN, "Admin"), (VIA_COMMAND, "manage.py forget_visitor")]

    erased_at = models.DateTimeField(default=timezone.now)
    actor = models.CharField(max_length=150, help_text="The staff member (admin) or the --actor of the command.")
    via = models.CharField(max_length=10, choices=VIAS)
    keys = models.CharField(max_length=100, help_text="The kinds of key searched (e.g. email, order id), not values.")
    counts = models.JSONField(default=dict, help_text="How many rows of each kind were deleted or made anonymous.")

    class Meta:
        ordering = ["-erased_at", "-id"]
        verbose_name = "erasure (audit)"
        verbose_name_plural = "erasures (audit)"

    def __str__(self) -> str:
        return f"Erasure by {self.actor} at {self.erased_at:%Y-%m-%d %H:%M} UTC"
