"""Normalising and hashing personal identifiers the way Microsoft matches them.

Reference: docs/microsoft-api.md#hashing. Email: trim, lower-case, drop `+alias`
and every dot before `@`, drop spaces and accents. Phone: E.164 with the leading `+`.
Both are then SHA-256 as 64 lower-case hex characters. Values that already are such a
digest pass through unchanged (clients that hash on their side).
Raw values never leave this module: errors name the field, never the value.
"""

import hashlib
import re
import unicodedata

import phonenumbers

SHA256_HEX = re.compile(r"^[0-9a-fA-F]{64}$")
_EMAIL_SHAPE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MSCLKID_SHAPE = re.compile(r"^[A-Za-z0-9_\-]{1,100}$")
_UUID_DASHED = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


class IdentifierError(ValueError):
    """A personal identifier that cannot be normalised. The message never holds the value."""


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _strip_accents(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def normalize_email(raw: str) -> str:
    email = _strip_accents(raw.strip().lower()).replace(" ", "")
    if not _EMAIL_SHAPE.match(email):
        raise IdentifierError("email is not a valid address")
    local, domain = email.rsplit("@", 1)
    local = local.split("+", 1)[0].replace(".", "")
    if not local or domain.startswith(".") or domain.endswith("."):
        raise IdentifierError("email is not a valid address")
    return f"{local}@{domain}"


def normalize_phone(raw: str, default_region: str | None) -> str:
    try:
        number = phonenumbers.parse(raw.strip(), (default_region or "").upper() or None)
    except phonenumbers.NumberParseException:
        raise IdentifierError("phone is not a valid phone number (use +<country code> or the site's country)") from None
    if not phonenumbers.is_possible_number(number):
        raise IdentifierError("phone is not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def hash_email(raw: str) -> str:
    if SHA256_HEX.match(raw.strip()):
        return raw.strip().lower()
    return sha256_hex(normalize_email(raw))


def hash_phone(raw: str, default_region: str | None) -> str:
    if SHA256_HEX.match(raw.strip()):
        return raw.strip().lower()
    return sha256_hex(normalize_phone(raw, default_region))


def clean_msclkid(raw: str) -> str:
    """The click id as Microsoft gave it; a dashed UUID is folded to the 32-hex form (docs/microsoft-api.md#msclkid)."""
    value = raw.strip()
    if _UUID_DASHED.match(value):
        value = value.replace("-", "").lower()
    if not MSCLKID_SHAPE.match(value):
        raise IdentifierError("msclkid must be 1-100 letters, digits, '_' or '-'")
    return value
