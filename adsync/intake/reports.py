"""What the snippet and the server API report, once validated (tracking/payloads.py builds them).

Plain values only: email and phone arrive here already normalised and hashed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal


@dataclass(frozen=True)
class ClickPayload:
    visitor_id: str
    msclkid: str
    url: str = ""
    ad_storage: str = ""  # the visitor's consent signal: "granted", "denied" or "" (none given)


@dataclass(frozen=True)
class ConversionPayload:
    """A validated conversion. Only hashes of email and phone are kept."""

    event: str
    order_id: str | None = None
    value: Decimal | None = None
    currency: str = ""
    occurred_at: datetime | None = None  # None: the moment it is recorded
    msclkid: str = ""
    visitor_id: str = ""
    hashed_email: str = ""
    hashed_phone: str = ""
    # The visitor's consent signals (adsync/intake/consent.py): "granted", "denied" or "" (none given).
    ad_storage: str = ""
    ad_user_data: str = ""
    # The snippet's key for the call: a retry of it (the browser saw no answer) is stored once.
    idempotency_key: str = ""
    # The client's server signed orderId|value|currency (adsync/sites/api_secrets.py): not held for review.
    signed: bool = False
