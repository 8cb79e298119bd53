"""Campaign performance per day, as Microsoft's report gave it (adsync/insights/sync.py writes it)."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from adsync.models.connections import Connection


class CampaignInsight(models.Model):
    """One campaign's numbers for one day, from Microsoft's campaign performance report
    (docs/microsoft-api.md#reporting).

    Written only by adsync/insights/sync.py, as an upsert on (connection, date, campaign_id): a re-sync
    replaces the numbers of the days it fetched and never duplicates a row.
    """

    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="insights")
    date = models.DateField(help_text="The report day (TimePeriod) in the report time zone, see docs/insights.md.")
    campaign_id = models.CharField("Campaign ID", max_length=20)
    campaign_name = models.CharField(max_length=256, blank=True)
    impressions = models.PositiveBigIntegerField(default=0)
    clicks = models.PositiveBigIntegerField(default=0)
    spend = models.DecimalField(max_digits=16, decimal_places=2, default=0)
    conversions = models.DecimalField(max_digits=14, decimal_places=2, default=0)
    revenue = models.DecimalField(max_digits=16, decimal_places=2, default=0)
    currency = models.CharField(max_length=3, blank=True, help_text="The account currency (CurrencyCode)")
    synced_at = models.DateTimeField(default=timezone.now, help_text="When adsync last wrote these numbers")

    class Meta:
        verbose_name = "campaign insight"
        ordering = ["-date", "campaign_name"]
        constraints = [
            models.UniqueConstraint(fields=["connection", "date", "campaign_id"], name="insight_unique_day"),
        ]
        indexes = [models.Index(fields=["-date"], name="insight_recent")]

    def __str__(self) -> str:
        return f"{self.date} · {self.campaign_name or self.campaign_id}"
