"""A client website: the snippet's public key, the server API secret's hash, allowed origins."""

from __future__ import annotations

import hashlib
import secrets

from django.db import models


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
    api_secret_hash = models.CharField(max_length=64, blank=True, editable=False, db_index=True)
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
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def origin_list(self) -> list[str]:
        return [line.strip().rstrip("/") for line in self.allowed_origins.splitlines() if line.strip()]

    def allows_origin(self, origin: str | None) -> bool:
        return bool(origin) and origin.rstrip("/") in self.origin_list()

    def rotate_api_secret(self) -> str:
        """Issue a new server API secret; only its hash is kept, so show the return value once."""
        secret = "sk_" + secrets.token_urlsafe(32)
        self.api_secret_hash = hash_api_secret(secret)
        self.save(update_fields=["api_secret_hash"])
        return secret

    @classmethod
    def for_api_secret(cls, secret: str) -> Site | None:
        if not secret:
            return None
        return cls.objects.filter(api_secret_hash=hash_api_secret(secret)).first()
