"""Staff members' notification choices (the daily digest, the immediate alerts)."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class StaffNotificationPreference(models.Model):
    """A staff member's opt-in to the daily sync digest and the immediate alerts (adsync/notify/)."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                                related_name="adsync_notifications")
    digest = models.BooleanField("daily sync digest", default=True)
    alerts = models.BooleanField("immediate alerts", default=True,
                                 help_text="Token expired, or a flush with more errors than the threshold.")

    class Meta:
        verbose_name = "staff notification preference"

    def __str__(self) -> str:
        return f"{self.user} notifications"

    @classmethod
    def addresses(cls, kind: str) -> list[str]:
        """Email addresses of active staff who opted in to `kind` ("digest" or "alerts")."""
        rows = cls.objects.filter(**{kind: True}, user__is_active=True, user__is_staff=True).exclude(user__email="")
        return sorted(set(rows.values_list("user__email", flat=True)))
