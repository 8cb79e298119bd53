"""The snippet's inbox: reports accepted by POST /t/v1/collect, waiting for the worker to store them.

The public endpoint validates, hashes and inserts one `Hit`, then answers 202: the queries that
storing a click or a conversion takes (order-id dedupe, click attribution, late matching, one
sync-log row per mapped goal) run in the worker (adsync/intake/inbox.py), so a burst of visitors
costs the web server one INSERT each (tracking/accept.py). The server API stays synchronous.
"""

from __future__ import annotations

import zlib

from django.db import models
from django.utils import timezone

from adsync.models.sites import Site

LANES = 8  # drains that can store at once on PostgreSQL; a visitor's hits all share one lane


def lane_of(visitor_id: str) -> int:
    """The drain lane of a visitor's hits: the same in every process (crc32, not the salted hash())."""
    return zlib.crc32(visitor_id.encode()) % LANES


class Hit(models.Model):
    CLICK = "click"
    CONVERSION = "conversion"
    KINDS = [(CLICK, "click"), (CONVERSION, "conversion")]

    # No index but the primary key: inserting is the hot path, the worker reads in id order.
    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="+", db_index=False)
    kind = models.CharField(max_length=10, choices=KINDS)
    payload = models.JSONField(help_text="The validated report: hashes only, never a raw email or phone.")
    received_at = models.DateTimeField(default=timezone.now,
                                       help_text="The click or conversion time: when the browser reported it.")
    error = models.TextField(blank=True, help_text="Why storing it failed; such a hit waits for 'Process again'.")
    # A database default too: a web process still running the code before this field inserts lane 0.
    lane = models.PositiveSmallIntegerField(
        db_default=0, help_text="Every hit of one visitor has the same lane; one drain at a time stores a lane, in order.")

    class Meta:
        # Created by the tracking app before the inbox moved here: the table keeps its name.
        db_table = "tracking_hit"
        verbose_name = "inbox hit"
        verbose_name_plural = "inbox (hits not yet stored)"

    def __str__(self) -> str:
        return f"{self.kind} #{self.pk}"
