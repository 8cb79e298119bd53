"""A client website (the snippet's public key, allowed origins, the browser's limits) and its server API secrets."""

from __future__ import annotations

import hashlib
import secrets

from django.db import models
from django.utils import timezone


def new_site_key() -> str:
    return "pk_" + secrets.token_hex(8)


def hash_api_secret(secret: str) -> str:
    """Server API secrets are random 32-byte tokens, so a plain SHA-256 is a safe lookup hash."""
    return hashlib.sha256(secret.encode()).hexdigest()


class Site(models.Model):
    """A client website that embeds the snippet and may call the server API."""

    name = models.CharField(max_length=200)
    key = models.CharField(
        "public site key", max_length=40, unique=True, default=new_site_key,
        help_text="Public: embedded in the snippet tag on the client's pages.",
    )
    allowed_origins = models.TextField(
        blank=True,
        help_text="One origin per line, e.g. https://shop.example.com. The snippet's calls "
        "from other origins are refused.",
    )
    default_currency = models.CharField(max_length=3, default="USD")
    default_country = models.CharField(
        max_length=2, default="US", help_text="ISO country used to read phone numbers written without +country code."
    )
    consent_required = models.BooleanField(
        "consent required", default=False,
        help_text="Visitors must grant ad storage consent (adsync.consent or UET consent mode) before adsync keeps "
        "their click id; a conversion reported without that consent is kept as skipped_no_consent and never sent. "
        "Add data-consent=\"required\" to the snippet tag too (docs/tracking.md, Consent).",
    )
    # What a browser may report: the site key is public, so anyone can send what the snippet sends
    # (docs/security.md).
    browser_value_ceiling = models.DecimalField(
        "largest browser value", max_digits=15, decimal_places=3, null=True, blank=True,
        help_text="A conversion the browser reports with a higher value (in any currency) is held for staff to "
        "release or drop (sync log, adsync:value_held). Empty: no ceiling. Signed conversions are not held.",
    )
    signed_browser_conversions = models.BooleanField(
        "signed browser conversions only", default=False,
        help_text="Refuse browser conversions without a valid signature: your server signs orderId|value|currency "
        "with the API secret and the page passes it to trackConversion (docs/tracking.md, signed conversions).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def origin_list(self) -> list[str]:
        return [line.strip().rstrip("/") for line in self.allowed_origins.splitlines() if line.strip()]

    def allows_origin(self, origin: str | None) -> bool:
        return bool(origin) and origin.rstrip("/") in self.origin_list()


class ApiSecret(models.Model):
    """A server API secret of a site, kept as its SHA-256 only (shown once, when issued).

    Two may be active at once, so a client can move to a new secret before the old one is
    revoked (adsync/sites/api_secrets.py issues, revokes and checks them).
    """

    MAX_ACTIVE = 2

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="api_secrets")
    secret_hash = models.CharField(max_length=64, unique=True, editable=False)
    hint = models.CharField(max_length=12, editable=False,
                            help_text="The secret's first characters, to tell secrets apart; not enough to use it.")
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True, help_text="Updated at most every 5 minutes.")
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "server API secret"
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.hint}…"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None
