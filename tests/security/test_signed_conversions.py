"""Signed browser conversions: the signature docs/tracking.md tells clients to compute is the one adsync checks."""

from __future__ import annotations

import hashlib
import hmac
import re
from decimal import Decimal
from pathlib import Path

import pytest

from adsync.sites import api_secrets

DOC = Path(__file__).resolve().parents[2] / "docs" / "tracking.md"


def documented_python(api_secret: str, order_id: str, value: float, currency: str) -> str:
    """The Python lines of docs/tracking.md, as a client's server would run them."""
    key = hashlib.sha256(api_secret.encode()).hexdigest().encode()
    return hmac.new(key, f"{order_id}|{value:.2f}|{currency}".encode(), hashlib.sha256).hexdigest()


def test_the_documented_worked_example_is_what_adsync_checks():
    example = re.search(r"the signature\s+`([0-9a-f]{64})`", DOC.read_text()).group(1)
    key = api_secrets.hash_api_secret("sk_example_secret")

    assert api_secrets.signature(key, "A-1001", Decimal("49.9"), "USD") == example
    assert documented_python("sk_example_secret", "A-1001", 49.90, "USD") == example


@pytest.mark.parametrize("value", [420.5, 0, 19.999, 1e6])
def test_a_client_following_the_documentation_signs_what_adsync_checks(value):
    key = api_secrets.hash_api_secret("sk_live_secret")

    assert documented_python("sk_live_secret", "B-7", value, "EUR") == \
        api_secrets.signature(key, "B-7", Decimal(str(value)).quantize(Decimal("0.001")), "EUR")


def test_another_order_value_or_currency_gives_another_signature():
    key = api_secrets.hash_api_secret("sk_live_secret")
    signed = api_secrets.signature(key, "B-7", Decimal("10"), "EUR")

    for other in [("B-8", Decimal("10"), "EUR"), ("B-7", Decimal("10.01"), "EUR"), ("B-7", Decimal("10"), "USD")]:
        assert api_secrets.signature(key, *other) != signed
