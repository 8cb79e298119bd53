"""What a site reported: clicks (msclkid landings) and conversions (business events)."""

from __future__ import annotations

from datetime import timedelta

from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from adsync.conf import conf
from adsync.models.sites import Site


class Click(models.Model):
    """A landing with msclkid, reported by the snippet: ties a first-party visitor to a click."""

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="clicks")
    visitor_id = models.CharField(max_length=64, db_index=True)
    msclkid = models.CharField(max_length=100)
    clicked_at = models.DateTimeField(default=timezone.now)
    landing_url = models.URLField(max_length=2000, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["site", "msclkid"], name="click_unique_per_site"),
        ]
        indexes = [
            models.Index(fields=["site", "visitor_id", "-clicked_at"], name="click_visitor_latest"),
            models.Index(fields=["clicked_at"], name="click_retention"),
        ]

    def __str__(self) -> str:
        return self.msclkid

    @classmethod
    def latest_for_visitor(cls, site: Site, visitor_id: str, before) -> Click | None:
        if not visitor_id:
            return None
        window_start = before - timedelta(days=conf.retention_days)
        return (
            cls.objects.filter(site=site, visitor_id=visitor_id, clicked_at__lte=before, clicked_at__gte=window_start)
            .order_by("-clicked_at")
            .first()
        )


class Conversion(models.Model):
    """One business event (a purchase, a lead...). A repeated (site, event, order id) is the same conversion."""

    SOURCE_BROWSER = "browser"
    SOURCE_SERVER = "server"
    SOURCE_ADMIN = "admin"
    SOURCES = [(SOURCE_BROWSER, "Browser snippet"), (SOURCE_SERVER, "Server API"), (SOURCE_ADMIN, "Admin test")]

    # The visitor's ad storage consent as adsync decided it when the conversion arrived (adsync/intake/consent.py).
    CONSENT_NOT_ASKED = ""
    CONSENT_GRANTED = "granted"
    CONSENT_DENIED = "denied"
    CONSENT_MISSING = "missing"
    CONSENTS = [(CONSENT_NOT_ASKED, "not asked (consent not required, no signal)"), (CONSENT_GRANTED, "granted"),
                (CONSENT_DENIED, "denied"), (CONSENT_MISSING, "no signal, and the site requires consent")]

    # No index of its own: conversion_site_time leads with the site (one index less per stored conversion).
    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="conversions", db_index=False)
    event_name = models.CharField(max_length=100)
    order_id = models.CharField(max_length=200, null=True, blank=True)
    value = models.DecimalField(max_digits=15, decimal_places=3, null=True, blank=True,
                                validators=[MinValueValidator(0)])
    currency = models.CharField(max_length=3, blank=True)
    occurred_at = models.DateTimeField("conversion time (UTC)", default=timezone.now)
    visitor_id = models.CharField(max_length=64, blank=True)
    msclkid = models.CharField(max_length=100, blank=True)
    click_time = models.DateTimeField(null=True, blank=True)
    hashed_email = models.CharField(max_length=64, blank=True)
    hashed_phone = models.CharField(max_length=64, blank=True)
    source = models.CharField(max_length=10, choices=SOURCES, default=SOURCE_BROWSER)
    consent = models.CharField("ad storage consent", max_length=10, choices=CONSENTS, blank=True,
                               default=CONSENT_NOT_ASKED)
    retracted_at = models.DateTimeField(
        null=True, blank=True, help_text="When the site retracted it (a refund or cancellation): never sent again.")
    erased_at = models.DateTimeField(
        null=True, blank=True, help_text="When the person's data was erased on request: only an anonymous line is left.")
    # The snippet's key for the call that reported a conversion without an order id: a retried call
    # (the browser did not see the first answer) finds it stored and changes nothing.
    idempotency_key = models.CharField(max_length=64, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["site", "event_name", "order_id"], name="conversion_unique_order",
                condition=Q(order_id__isnull=False),
            ),
            models.UniqueConstraint(
                fields=["site", "idempotency_key"], name="conversion_unique_call", condition=~Q(idempotency_key=""),
            ),
        ]
        indexes = [
            models.Index(fields=["site", "-occurred_at"], name="conversion_site_time"),
            # The sync log's search by order id (adsync/admin/large_tables.py).
            models.Index(fields=["order_id"], name="conversion_order_id"),
            # adsync/intake/matching.py on every ingest with an msclkid: only the few conversions
            # still waiting for a click are indexed, so a busy site does not scan its recent history.
            models.Index(fields=["site", "visitor_id"], name="conversion_pending_visitor", condition=Q(msclkid="")),
            models.Index(fields=["site", "hashed_email"], name="conversion_pending_email", condition=Q(msclkid="")),
            models.Index(fields=["site", "hashed_phone"], name="conversion_pending_phone", condition=Q(msclkid="")),
        ]

    def __str__(self) -> str:
        return f"{self.event_name} {self.order_id or ''}".strip()

    @property
    def has_hashed_pii(self) -> bool:
        return bool(self.hashed_email or self.hashed_phone)

    @property
    def without_consent(self) -> bool:
        """True when the visitor denied ad storage, or gave no signal where the site requires one: never sent."""
        return self.consent in (self.CONSENT_DENIED, self.CONSENT_MISSING)
