"""How numbers read to people: counts with the right plural, and money with its currency's decimals."""

from __future__ import annotations

from decimal import Decimal

# ISO 4217 minor units that are not 2 (https://www.iso.org/iso-4217-currency-codes.html).
_MINOR_UNITS = {
    **dict.fromkeys(["BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND",
                     "VUV", "XAF", "XOF", "XPF"], 0),
    **dict.fromkeys(["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"], 3),
    "CLF": 4, "UYW": 4,
}


def minor_units(currency: str) -> int:
    return _MINOR_UNITS.get((currency or "").upper(), 2)


def money(value: Decimal | float | int | None, currency: str = "") -> str:
    """"49.90 USD", "1,500 JPY", "1.250 KWD": the currency's own decimals, and never fewer than the
    value has (49.905 USD stays 49.905: what adsync stores and sends is shown, not rounded away)."""
    if value is None:
        return "—"
    value = Decimal(str(value)) if not isinstance(value, Decimal) else value
    places = minor_units(currency)
    exponent = value.normalize().as_tuple().exponent
    needed = -exponent if isinstance(exponent, int) and exponent < 0 else 0
    text = f"{value:,.{max(places, needed)}f}"
    return f"{text} {currency.upper()}".strip()


def count(n: int, singular: str, plural: str | None = None) -> str:
    """"1 row", "3 rows", "2 sync-log entries" (with `plural` when adding an s is wrong)."""
    return f"{n:,} {singular if n == 1 else plural or singular + 's'}"
