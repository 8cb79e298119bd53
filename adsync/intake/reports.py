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
