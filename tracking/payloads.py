"""Parse and validate ingest bodies (snippet and server API) into dataclasses.

Every problem raises PayloadError naming the field and the problem, e.g. "value: must be a
number". Messages never contain the submitted value: email and phone are personal data, and
echoing nothing at all is the simplest rule that cannot leak. Email and phone are hashed here
(adsync.intake.identity), so the raw values go no further than this module.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from datetime import timezone as dt_timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pycountry
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest
from django.views.decorators.debug import sensitive_variables

from adsync.conf import conf
from adsync.intake.identity import IdentifierError, clean_msclkid, hash_email, hash_phone
from adsync.intake.landing import clean_landing_url
from adsync.intake.reports import ClickPayload, ConversionPayload
from adsync.models import Site
from adsync.push.guards import time_refusal

# Used with fullmatch: "$" would also accept a trailing newline ("purchase\n").
EVENT_SHAPE = re.compile(r"[A-Za-z0-9_.:\-]{1,100}")
VISITOR_SHAPE = re.compile(r"[A-Za-z0-9_\-]{1,64}")
KEY_SHAPE = re.compile(r"[A-Za-z0-9_\-]{8,64}")
SIGNATURE_SHAPE = re.compile(r"[0-9a-fA-F]{64}")
MAX_ORDER_ID = 200
MAX_URL = 2000
MAX_VALUE = Decimal("999999999999")
VALUE_STEP = Decimal("0.001")
# Far older than anything Microsoft takes (90 days), and far from datetime.min, where date arithmetic overflows.
MIN_TIME = datetime(2000, 1, 1, tzinfo=dt_timezone.utc)
MAX_BATCH = 100
_SURROGATE = re.compile("[\ud800-\udfff]")
UNSTORABLE = "must not contain NUL characters or unpaired surrogates"

# The server API is a developer contract: a misspelt key ("order_id") is an error, not a silent
# loss. The snippet's keys are ignored when unknown, so an older cached snippet never loses data.
API_FIELDS = frozenset({"event", "orderId", "value", "currency", "time", "msclkid", "visitorId", "email", "phone",
                        "consent"})


class PayloadError(ValueError):
    """A rejected body: `status` is the HTTP status, `detail` the JSON error ("field: problem")."""

    def __init__(self, field: str, problem: str, status: int = 400) -> None:
        super().__init__(f"{field}: {problem}")
        self.field, self.problem, self.status = field, problem, status

    @property
    def detail(self) -> str | list[str]:
        return str(self)


class BatchPayloadError(PayloadError):
    """Some items of a batch are invalid; `detail` lists one "conversions[i].field: problem" per item."""

    def __init__(self, errors: list[PayloadError]) -> None:
        super().__init__("conversions", f"{len(errors)} invalid item(s)")
        self.errors = errors

    @property
    def detail(self) -> list[str]:
        return [str(error) for error in self.errors]


# --- The body ---------------------------------------------------------------------------------

@sensitive_variables("body")
def read_json(request: HttpRequest) -> dict[str, Any]:
    """The body as a JSON object, whatever the Content-Type (the snippet sends text/plain)."""
    limit = conf.max_body_bytes
    too_big = PayloadError("body", f"is larger than {limit} bytes", status=413)
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        raise too_big
    try:
        body = request.body
    except RequestDataTooBig:
        raise too_big from None
    if len(body) > limit:
        raise too_big
    return parse_json(body)


@sensitive_variables("body", "data")
def parse_json(body: bytes) -> dict[str, Any]:
    try:
        # Decimal keeps 49.90 exact; NaN and Infinity still arrive as floats and fail the finite check.
        data = json.loads(body.decode("utf-8"), parse_float=Decimal)
    except UnicodeDecodeError:
        raise PayloadError("body", "is not UTF-8 text") from None
    except (ValueError, RecursionError):
        raise PayloadError("body", "is not valid JSON") from None
    if not isinstance(data, dict):
        raise PayloadError("body", "must be a JSON object")
    return data


def site_key(data: dict[str, Any]) -> str:
    key = _string(data, "site", max_length=40)
    if not key:
        raise PayloadError("site", "is required")
    return key


# --- The snippet's body (POST /t/v1/collect) ----------------------------------------------------

@sensitive_variables("data")
def parse_collect(data: dict[str, Any], site: Site) -> ClickPayload | ConversionPayload:
    kind = data.get("type")
    if kind == "click":
        return parse_click(data)
    if kind == "conversion":
        report = parse_conversion(data, site, accept_time=False)
        return replace(report, idempotency_key=_idempotency_key(data))
    if kind is None:
        raise PayloadError("type", "is required")
    raise PayloadError("type", 'must be "click" or "conversion"')


@sensitive_variables("data")
def parse_click(data: dict[str, Any]) -> ClickPayload:
    visitor_id = _visitor_id(data)
    if not visitor_id:
        raise PayloadError("visitorId", "is required")
    msclkid = _msclkid(data)
    if not msclkid:
        raise PayloadError("msclkid", "is required")
    # Origin, path, msclkid and utm_* only: the rest of a query string may hold personal data.
    return ClickPayload(visitor_id=visitor_id, msclkid=msclkid,
                        url=clean_landing_url(_string(data, "url", max_length=MAX_URL)),
                        ad_storage=consent_signals(data, strict=False)[0])


def signature(data: dict[str, Any]) -> str:
    """The conversion's signature (signed browser conversions, adsync/sites/api_secrets.py), "" if none."""
    raw = _string(data, "signature", max_length=64)
    if raw and not SIGNATURE_SHAPE.fullmatch(raw):
        raise PayloadError("signature", "must be 64 hexadecimal characters (HMAC-SHA256)")
    return raw.lower()


def _idempotency_key(data: dict[str, Any]) -> str:
    """The snippet's key for this call: its retries carry the same one, so they are stored once."""
    key = _string(data, "idempotencyKey", max_length=64)
    if key and not KEY_SHAPE.fullmatch(key):
        raise PayloadError("idempotencyKey", "must be 8-64 characters of A-Z a-z 0-9 _ -")
    return key


# --- The server API's body (POST /api/v1/conversions) --------------------------------------------

@sensitive_variables("data", "items")
def parse_api(data: dict[str, Any], site: Site, now: datetime) -> tuple[list[ConversionPayload], bool]:
    """(conversions, is_batch). A batch is all-or-nothing: any invalid item rejects the whole body."""
    if "conversions" not in data:
        return [parse_api_conversion(data, site, now)], False
    extra = sorted(set(data) - {"conversions"})
    if extra:
        raise PayloadError(_key_label(extra[0]), 'is not allowed beside "conversions"')
    items = data["conversions"]
    if not isinstance(items, list):
        raise PayloadError("conversions", "must be a list")
    if not 1 <= len(items) <= MAX_BATCH:
        raise PayloadError("conversions", f"must hold 1 to {MAX_BATCH} items")
    parsed: list[ConversionPayload] = []
    errors: list[PayloadError] = []
    for index, item in enumerate(items):
        try:
            if not isinstance(item, dict):
                raise PayloadError("", "must be a JSON object")
            parsed.append(parse_api_conversion(item, site, now))
        except PayloadError as error:
            field = f"conversions[{index}]" + (f".{error.field}" if error.field else "")
            errors.append(PayloadError(field, error.problem))
    if errors:
        raise BatchPayloadError(errors)
    return parsed, True


def parse_api_conversion(data: dict[str, Any], site: Site, now: datetime) -> ConversionPayload:
    unknown = sorted(set(data) - API_FIELDS)
    if unknown:
        raise PayloadError(_key_label(unknown[0]), "is not a known field")
    return parse_conversion(data, site, accept_time=True, now=now)


# --- One conversion, either source -----------------------------------------------------------------

@sensitive_variables("data", "email", "phone")
def parse_conversion(
    data: dict[str, Any], site: Site, *, accept_time: bool, now: datetime | None = None
) -> ConversionPayload:
    event = data.get("event")
    if event is None or event == "":
        raise PayloadError("event", "is required")
    if not isinstance(event, str):
        raise PayloadError("event", "must be a string")
    if not EVENT_SHAPE.fullmatch(event):
        raise PayloadError("event", "must be 1-100 characters of A-Z a-z 0-9 _ . : -")
    value = _value(data)
    occurred_at = _time(data, now or datetime.now(dt_timezone.utc)) if accept_time else None
    email = _string(data, "email", max_length=320)
    phone = _string(data, "phone", max_length=64)
    ad_storage, ad_user_data = consent_signals(data, strict=accept_time)
    return ConversionPayload(
        event=event,
        order_id=_order_id(data),
        value=value,
        currency=_currency(data, site),
        occurred_at=occurred_at,
        msclkid=_msclkid(data),
        visitor_id=_visitor_id(data),
        hashed_email=_identifier("email", hash_email, email) if email else "",
        hashed_phone=_identifier("phone", lambda raw: hash_phone(raw, site.default_country), phone) if phone else "",
        ad_storage=ad_storage,
        ad_user_data=ad_user_data,
    )


# --- Fields -----------------------------------------------------------------------------------

def storable(text: str) -> bool:
    """False for text PostgreSQL refuses: NUL, or an unpaired surrogate (JSON's \\u0000 and \\ud800 decode to both).

    Such text would make a query fail with a 500; validated early, it is a 400 like any bad value.
    """
    return "\x00" not in text and not _SURROGATE.search(text)


@sensitive_variables("data", "raw", "text")
def _string(data: dict[str, Any], field: str, *, max_length: int) -> str:
    """An optional string field, stripped; absent, null and "" all read as ""."""
    raw = data.get(field)
    if raw is None:
        return ""
    if not isinstance(raw, str):
        raise PayloadError(field, "must be a string")
    if not storable(raw):
        raise PayloadError(field, UNSTORABLE)
    text = raw.strip()
    if len(text) > max_length:
        raise PayloadError(field, f"must be at most {max_length} characters")
    return text


def _order_id(data: dict[str, Any]) -> str | None:
    raw = data.get("orderId")
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = str(raw)
    elif raw is not None and not isinstance(raw, str):
        raise PayloadError("orderId", "must be a string or an integer")
    if raw and not storable(raw):
        raise PayloadError("orderId", UNSTORABLE)
    text = (raw or "").strip()
    if len(text) > MAX_ORDER_ID:
        raise PayloadError("orderId", f"must be at most {MAX_ORDER_ID} characters")
    return text or None


def _value(data: dict[str, Any]) -> Decimal | None:
    raw = data.get("value")
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, (int, float, Decimal)):
        raise PayloadError("value", "must be a number")
    value = Decimal(raw) if isinstance(raw, int) else Decimal(str(raw)) if isinstance(raw, float) else raw
    if not value.is_finite():
        raise PayloadError("value", "must be a finite number")
    if value < 0:
        raise PayloadError("value", "must be 0 or more")
    if value > MAX_VALUE:
        raise PayloadError("value", f"must be at most {MAX_VALUE}")
    return abs(value.quantize(VALUE_STEP, rounding=ROUND_HALF_UP))  # abs: -0 becomes 0


def _currency(data: dict[str, Any], site: Site | None) -> str:
    code = _string(data, "currency", max_length=3).upper()
    if not code:
        return site.default_currency if site else ""
    if len(code) != 3 or pycountry.currencies.get(alpha_3=code) is None:
        raise PayloadError("currency", "must be a 3-letter ISO 4217 code, e.g. USD")
    return code


def _time(data: dict[str, Any], now: datetime) -> datetime | None:
    """An aware moment in UTC, or None for "now". Truncation to seconds happens when stored."""
    raw = data.get("time")
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str):
        raise PayloadError("time", "must be an ISO-8601 string, e.g. 2026-11-20T14:03:11Z")
    try:
        moment = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise PayloadError("time", "is not an ISO-8601 date-time, e.g. 2026-11-20T14:03:11Z") from None
    if moment.tzinfo is None:
        raise PayloadError("time", "must include a UTC offset, e.g. 2026-11-20T14:03:11Z")
    try:
        moment = moment.astimezone(dt_timezone.utc)
    except OverflowError:
        raise PayloadError("time", "is out of range") from None
    if moment < MIN_TIME:
        raise PayloadError("time", "must be 2000-01-01 or later")
    refusal = time_refusal(moment, None, now)  # the rule the pre-send check applies (adsync/push/guards.py)
    if refusal is not None:
        raise PayloadError("time", refusal.problem)
    return moment


def _msclkid(data: dict[str, Any]) -> str:
    raw = _string(data, "msclkid", max_length=100)
    return _identifier("msclkid", clean_msclkid, raw) if raw else ""


def _visitor_id(data: dict[str, Any]) -> str:
    visitor_id = _string(data, "visitorId", max_length=64)
    if visitor_id and not VISITOR_SHAPE.fullmatch(visitor_id):
        raise PayloadError("visitorId", "must be 1-64 characters of A-Z a-z 0-9 _ -")
    return visitor_id


@sensitive_variables("raw")
def _identifier(field: str, clean: Callable[[str], str], raw: str) -> str:
    try:
        return clean(raw)
    except IdentifierError as error:
        # identity's messages start with the field's name and never hold the value.
        problem = str(error).removeprefix(f"{field} ").removeprefix(f"{field}: ")
        raise PayloadError(field, problem) from None


def _key_label(key: str) -> str:
    """An unknown key, shortened: it is client text, so keep the message bounded."""
    return key if len(key) <= 40 else key[:40] + "…"


# --- Consent (adsync/intake/consent.py decides what it allows) ----------------------------------------

CONSENT_KEYS = {"adStorage": "ad_storage", "adUserData": "ad_user_data"}


def consent_signals(data: dict[str, Any], *, strict: bool) -> tuple[str, str]:
    """(ad storage, ad user data) from `"consent": {"adStorage": "granted"|"denied", "adUserData": ...}`;
    "" where not given. The server API (`strict`) refuses keys it does not know; the snippet's are ignored."""
    raw = data.get("consent")
    if raw is None:
        return "", ""
    if not isinstance(raw, dict):
        raise PayloadError("consent", 'must be an object, e.g. {"adStorage": "granted"}')
    unknown = sorted(set(raw) - set(CONSENT_KEYS))
    if strict and unknown:
        raise PayloadError(f"consent.{_key_label(unknown[0])}", "is not a known field (adStorage, adUserData)")
    signals = []
    for key in CONSENT_KEYS:
        value = raw.get(key)
        if value not in (None, "", "granted", "denied"):
            raise PayloadError(f"consent.{key}", 'must be "granted" or "denied"')
        signals.append(value or "")
    return signals[0], signals[1]


# --- Adjustments (PATCH and DELETE /api/v1/conversions/<order id>) -----------------------------------

RESTATE_FIELDS = frozenset({"value", "currency", "time"})
RETRACT_FIELDS = frozenset({"time"})


@dataclass(frozen=True)
class AdjustmentRequest:
    """A validated restate (value, currency) or retract; `time` None means now."""

    value: Decimal | None = None
    currency: str = ""
    time: datetime | None = None


def parse_restate(data: dict[str, Any], now: datetime) -> AdjustmentRequest:
    """`{"value": 25.0, "currency": "EUR", "time": "…"}`: the new value is required."""
    _only(data, RESTATE_FIELDS)
    if data.get("value") is None:
        raise PayloadError("value", "is required to restate a conversion")
    currency = ""
    if data.get("currency") not in (None, ""):
        currency = _currency(data, site=None)
    return AdjustmentRequest(value=_value(data), currency=currency, time=_time(data, now))


def parse_retract(data: dict[str, Any], now: datetime) -> AdjustmentRequest:
    """`{"time": "…"}` or no body at all (the time may also come as `?time=`)."""
    _only(data, RETRACT_FIELDS)
    return AdjustmentRequest(time=_time(data, now))


def read_optional_json(request: HttpRequest) -> dict[str, Any]:
    """The body as for read_json, but an empty body is an empty object (a DELETE usually has none)."""
    try:
        empty = not request.body.strip()
    except RequestDataTooBig:
        empty = False  # read_json answers 413
    return {} if empty else read_json(request)


def _only(data: dict[str, Any], allowed: frozenset[str]) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise PayloadError(_key_label(unknown[0]), "is not a known field (" + ", ".join(sorted(allowed)) + ")")
