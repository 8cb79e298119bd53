"""Server API secrets: issued (shown once), revoked, checked; and the signatures of signed browser conversions.

Only a secret's SHA-256 is stored (adsync.models.ApiSecret). Two secrets may be active at once,
so a client's servers move to a new one before the old one is revoked; each is revoked on its own.

A site in "signed browser conversions" mode accepts a browser conversion only with
`signature` = HMAC-SHA256 of "orderId|value|currency" (value with two decimals, e.g. 420.50, empty
when there is none; currency as the conversion will carry it), keyed with the SHA-256 hex of one of
the site's active API secrets: the client's server, which knows the secret, signs the order it
renders on the thank-you page; a forger, who knows only the public site key, cannot
(docs/tracking.md#signed-browser-conversions).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal

from django.db import transaction
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from adsync.models import ApiSecret, Site, hash_api_secret

PREFIX = "sk_"
HINT_LENGTH = 7  # "sk_" and 4 of the 43 random characters: tells secrets apart, useless to an attacker
LAST_USED_EVERY = timedelta(minutes=5)  # at most one write per secret per 5 minutes


class TooManyActive(Exception):
    """Two secrets are active already: one must be revoked before a third is issued."""


def issue(site: Site) -> str:
    """A new active secret for `site`; only its hash is kept, so the caller shows the return value once."""
    with transaction.atomic():
        Site.objects.select_for_update().filter(pk=site.pk).first()  # one issue at a time per site
        if site.api_secrets.filter(revoked_at=None).count() >= ApiSecret.MAX_ACTIVE:
            raise TooManyActive(f"{ApiSecret.MAX_ACTIVE} secrets are active already: revoke one first")
        secret = PREFIX + secrets.token_urlsafe(32)
        ApiSecret.objects.create(site=site, secret_hash=hash_api_secret(secret), hint=secret[:HINT_LENGTH])
    return secret


def revoke(api_secret: ApiSecret) -> bool:
    """Revoke at once (the next call with it is a 401); False if it was revoked already."""
    return ApiSecret.objects.filter(pk=api_secret.pk, revoked_at=None).update(revoked_at=timezone.now()) == 1


@sensitive_variables("secret")
def site_for(secret: str) -> Site | None:
    """The site whose active secret this is, or None; notes when the secret was last used."""
    if not secret:
        return None
    row = ApiSecret.objects.filter(secret_hash=hash_api_secret(secret), revoked_at=None).select_related("site").first()
    if row is None:
        return None
    now = timezone.now()
    if row.last_used_at is None or row.last_used_at < now - LAST_USED_EVERY:
        ApiSecret.objects.filter(pk=row.pk).update(last_used_at=now)
    return row.site


# --- Signed browser conversions -------------------------------------------------------------------

def signed_message(order_id: str | None, value: Decimal | None, currency: str) -> bytes:
    """What the client's server signs: "orderId|value|currency", value with two decimals or empty."""
    amount = "" if value is None else str(value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))
    return f"{order_id or ''}|{amount}|{currency}".encode()


def signature(secret_hash: str, order_id: str | None, value: Decimal | None, currency: str) -> str:
    return hmac.new(secret_hash.encode(), signed_message(order_id, value, currency), hashlib.sha256).hexdigest()


def valid_signature(site: Site, signed: str, order_id: str | None, value: Decimal | None, currency: str) -> bool:
    """True when `signed` is the signature of this order under one of the site's active secrets."""
    if not signed:
        return False
    keys = ApiSecret.objects.filter(site=site, revoked_at=None).values_list("secret_hash", flat=True)
    return any(hmac.compare_digest(signature(key, order_id, value, currency), signed.lower()) for key in keys)
