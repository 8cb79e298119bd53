"""Fuzzing the public endpoints: request strategies and the properties every answer must keep.

Shared by tests/tracking/test_fuzz.py (a few hundred requests per endpoint, part of the suite) and
bench/fuzz_public_endpoints.py (10,000 and more, with a summary). Requests go through Django's
test client against whatever database the caller set up (SQLite in both).

The properties (docs/reliability.md, "Fuzzing"):
1. never a 5xx, nor an exception out of a view;
2. a 4xx stores nothing: the Click, Conversion, Push and inbox counts are unchanged;
3. a 2xx stores only valid rows (model validation plus the ingest rules), and only a POST
   to an ingest endpoint stores anything at all; a 202 from the snippet's endpoint is stored by
   the worker's inbox run (adsync/intake/inbox.py) without error;
4. no SQL parameter holds a NUL character or an unpaired surrogate: PostgreSQL refuses both
   (a 500 in production) while SQLite may accept them, so the harness reports them on SQLite.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from datetime import timezone as dt_timezone
from urllib.parse import quote

from django.core.exceptions import ValidationError
from django.db import connection as db_connection
from django.test import Client
from django.utils import timezone
from hypothesis import strategies as st

from adsync.intake import inbox
from adsync.models import (
    ApiSecret,
    Click,
    Connection,
    Conversion,
    GoalMapping,
    Hit,
    Push,
    Site,
    hash_api_secret,
)

SITE_KEY = "pk_fuzz"
ORIGIN = "https://shop.example.com"
INGEST_PATHS = ("/t/v1/collect", "/api/v1/conversions")

EVENT = re.compile(r"[A-Za-z0-9_.:\-]{1,100}")
TOKEN = re.compile(r"[A-Za-z0-9_\-]{1,100}")
VISITOR = re.compile(r"[A-Za-z0-9_\-]{1,64}")
HASH = re.compile(r"[0-9a-f]{64}")
CURRENCY = re.compile(r"[A-Z]{3}")


# --- The site under attack ---------------------------------------------------------------------

SECRET = "sk_fuzz_" + "s" * 40  # fixed, so the strategies below are built once per process


def make_target() -> None:
    """A site with an allowed origin, an API secret, and a connection mapping "purchase" (so pushes get made)."""
    site = Site.objects.create(name="Fuzz shop", key=SITE_KEY, allowed_origins=ORIGIN)
    ApiSecret.objects.create(site=site, secret_hash=hash_api_secret(SECRET), hint=SECRET[:7])
    connection = Connection.objects.create(site=site, status=Connection.ACTIVE, account_id="187654321",
                                           enhanced_conversions=True)
    GoalMapping.objects.create(connection=connection, event_name="purchase", goal_name="Purchase")


# --- Strategies -----------------------------------------------------------------------------------

class Raw(str):
    """JSON text inserted as-is, for numbers Python's encoder never writes (1e999, -0, 00)."""


NASTY_TEXT = ["", " ", "\x00", "a\x00b", "\ud800", "x\udfff@example.com", "\u202e", "\U0001f4a5", "purchase\n",
              " purchase", "null", "NaN", "-1", "1e999", "<script>", "'; DROP TABLE adsync_conversion;--",
              "\u00e9" * 300, "x" * 5000, "\r\n", "%00", "../../etc/passwd"]
RAW_NUMBERS = ["1e999", "-1e999", "1e-999", "-0", "-0.0", "0.0005", "0.0015", "999999999999.9995",
               "1000000000000", "123456789012345678901234567890", "NaN", "Infinity", "-Infinity"]


TEXTS = st.one_of(
    st.text(max_size=40),
    st.sampled_from(NASTY_TEXT),
    st.text(alphabet=st.characters(categories=["Cs", "Cc", "Cf", "Zl", "Zp"]), max_size=8),
    st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=120),
)
NUMBERS = st.one_of(
    st.integers(), st.integers(min_value=-(10 ** 30), max_value=10 ** 30),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(RAW_NUMBERS).map(Raw),
    st.from_regex(r"\A-?(0|[1-9][0-9]{0,20})(\.[0-9]{1,12})?([eE][+-]?[0-9]{1,4})?\Z").map(Raw),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXTS)
ANY_JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXTS, inner, max_size=4),
                        max_leaves=12)


def tweaked(valid: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """A valid string with something glued to either end: a newline, a space, a NUL, a surrogate."""
    glue = st.sampled_from(["\n", " ", "\t", "\x00", "\ud800", "\udfff", "\u00e9", "\u200b", "x" * 200])
    return st.one_of(st.tuples(valid, glue).map("".join), st.tuples(glue, valid).map("".join))


def wrong(valid: st.SearchStrategy) -> st.SearchStrategy:
    """Anything a field should not hold, from a wrong type to a valid value with a stray character."""
    return st.one_of(SCALARS, ANY_JSON, tweaked(valid.filter(lambda v: isinstance(v, str))))


ZONES = {"Z": dt_timezone.utc, "+02:00": dt_timezone(timedelta(hours=2)),
         "-05:30": dt_timezone(-timedelta(hours=5, minutes=30)), "+14:00": dt_timezone(timedelta(hours=14)),
         "-12:00": dt_timezone(-timedelta(hours=12))}


def recent_times(low: int, high: int) -> st.SearchStrategy[str]:
    """ISO-8601 moments `low`..`high` seconds from now (computed at draw time) in assorted UTC offsets."""
    def moment(seconds: int, zone: str) -> str:
        text = (timezone.now() + timedelta(seconds=seconds)).astimezone(ZONES[zone]).isoformat()
        return text.replace("+00:00", "Z")
    return st.builds(moment, st.integers(low, high), st.sampled_from(sorted(ZONES)))


VALID = {
    "site": st.just(SITE_KEY),
    "event": st.one_of(st.sampled_from(["purchase", "purchase", "lead", "a:b.c-d_e", "E" * 100]),
                       st.from_regex(r"[A-Za-z0-9_.:\-]{1,100}", fullmatch=True)),
    "orderId": st.one_of(st.text(min_size=1, max_size=200).filter(lambda t: t.strip() and "\x00" not in t),
                         st.integers(min_value=-(10 ** 20), max_value=10 ** 20), st.just("o" * 200)),
    "value": st.one_of(st.integers(0, 10 ** 6), st.decimals(0, 999999999999, places=3).map(lambda d: Raw(str(d))),
                       st.sampled_from(["0", "0.0005", "0.0004", "999999999999", "1e2", "49.90", "-0"]).map(Raw)),
    "currency": st.sampled_from(["USD", "eur", "JPY", " gbp ", None, ""]),
    "msclkid": st.one_of(st.sampled_from(["test_msclkid_123", "f894f652ea334e739002f7167ab8f8e3", "k" * 100]),
                         st.from_regex(r"[A-Za-z0-9_\-]{1,100}", fullmatch=True), st.uuids().map(str)),
    "visitorId": st.one_of(st.just("v" * 64), st.from_regex(r"[A-Za-z0-9_\-]{1,64}", fullmatch=True)),
    "email": st.one_of(st.sampled_from(["customer@example.com", "A.B+x@Example.COM", " x@y.co ", "e" * 64]),
                       st.emails()),
    "phone": st.sampled_from(["+14255551234", "(425) 555-1234", "+44 20 7946 0958", "f" * 64]),
    "url": st.one_of(st.just(ORIGIN + "/?msclkid=x"), st.text(max_size=100).filter(lambda t: "\x00" not in t),
                     st.just("y" * 2000)),
    "time": st.one_of(recent_times(-90 * 86400, 290), st.just(None), st.just("")),
}
WRONG = {key: wrong(strategy) for key, strategy in VALID.items()}
WRONG["time"] = st.one_of(WRONG["time"], recent_times(400, 10 ** 8), st.datetimes().map(lambda d: d.isoformat()),
                          st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
                          st.sampled_from(["0001-01-01T00:00:00Z", "0001-01-01T00:00:00+14:00", "0001-03-01T00:00:00Z",
                                           "9999-12-31T23:59:59-14:00", "2026-02-30T00:00:00Z", "1999-12-31T23:59:59Z",
                                           "2026-01-01T00:00:00.123456789Z", "2026-W01"]))
WRONG["value"] = st.one_of(WRONG["value"], NUMBERS)
WRONG["msclkid"] = st.one_of(WRONG["msclkid"], st.just("k" * 101), st.just("a b"))
WRONG["event"] = st.one_of(WRONG["event"], st.just("E" * 101), st.just("buy now!"))


@st.composite
def mutated(draw, required: tuple[str, ...], optional: tuple[str, ...], fixed: dict | None = None) -> dict:
    """A valid body, then 0-2 mutations (a wrong value, a missing key) and sometimes unknown keys."""
    body = dict(fixed or {})
    for key in required:
        body[key] = draw(VALID[key])
    for key in optional:
        if draw(st.booleans()):
            body[key] = draw(VALID[key])
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 2]))):
        key = draw(st.sampled_from(sorted(required + optional + tuple(fixed or ()))))
        if draw(st.integers(0, 3)) == 3:
            body.pop(key, None)
        else:
            body[key] = draw(WRONG.get(key, SCALARS))
    if draw(st.integers(0, 9)) == 9:
        body.update(draw(st.dictionaries(TEXTS, SCALARS, min_size=1, max_size=2)))
    return body


CONVERSION_KEYS = ("orderId", "value", "currency", "msclkid", "visitorId", "email", "phone")
BROWSER_CONVERSION = mutated(("site", "event"), CONVERSION_KEYS + ("url",), {"type": "conversion"})
CLICK = mutated(("site", "visitorId", "msclkid"), ("url",), {"type": "click"})
API_CONVERSION = mutated(("event",), CONVERSION_KEYS + ("time",))
API_BODY = st.one_of(
    API_CONVERSION, API_CONVERSION, API_CONVERSION,
    st.fixed_dictionaries({"conversions": st.lists(API_CONVERSION, min_size=1, max_size=5)}),
    st.fixed_dictionaries({"conversions": st.one_of(st.just([]), ANY_JSON, st.lists(
        st.one_of(st.just({"event": "lead"}), SCALARS), min_size=99, max_size=102))}),
    st.tuples(st.fixed_dictionaries({"conversions": st.lists(API_CONVERSION, max_size=2)}), API_CONVERSION).map(
        lambda pair: {**pair[1], **pair[0]}),
)


def encode(value) -> str:
    """JSON text, with Raw numbers verbatim and lone surrogates escaped (json.dumps does both)."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{encode(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(encode(v) for v in value) + "]"
    return json.dumps(value, allow_nan=True)


def bodies(shapes: st.SearchStrategy) -> st.SearchStrategy[bytes]:
    """Well-formed JSON of the given shapes, random JSON, random bytes, broken text, oversized bodies."""
    as_json = shapes.map(lambda v: encode(v).encode())
    return st.one_of(
        as_json, as_json, as_json, as_json, as_json, as_json, as_json, as_json,
        ANY_JSON.map(lambda v: encode(v).encode()),
        st.binary(max_size=300),
        st.text(max_size=100).map(lambda t: t.encode("utf-8")),
        as_json.map(lambda b: b[: max(1, len(b) // 2)]),  # truncated
        st.sampled_from([b"", b"{", b"[" * 15000, b"{}" * 10, b'{"a":' * 3000, b"\xef\xbb\xbf{}", b"\xff\xfe{}",
                         b'{"site": "\xed\xa0\x80"}']),
        st.integers(min_value=16 * 1024 - 50, max_value=40 * 1024).map(lambda n: b'{"site": "' + b"x" * n + b'"}'),
    )


# What an HTTP/1.1 server hands Django: visible Latin-1 text (servers refuse control characters).
HEADER_VALUES = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
                        max_size=60)
ORIGINS = st.one_of(st.just(ORIGIN), st.just(ORIGIN + "/"), st.just("https://evil.example"), st.just("null"),
                    HEADER_VALUES)
OTHER_HEADERS = st.dictionaries(
    st.sampled_from(["Accept", "Cookie", "Referer", "X-Forwarded-For", "Access-Control-Request-Method",
                     "Access-Control-Request-Headers", "User-Agent", "X-Requested-With"]), HEADER_VALUES, max_size=3)
GOOD_AUTH = st.just(f"Bearer {SECRET}")
ANY_AUTH = st.one_of(st.none(), HEADER_VALUES)  # None: no header
BAD_AUTH = st.one_of(HEADER_VALUES, st.just("Bearer"), st.just("Bearer "), st.just("Basic dXNlcjpwYXNz"),
                     st.just(f"Bearer {SECRET}x"), st.just(f"bearer  {SECRET[:-1]}"),
                     HEADER_VALUES.map("Bearer ".__add__))


def headers(auth: st.SearchStrategy) -> st.SearchStrategy[dict]:
    named = st.fixed_dictionaries({"Authorization": auth}, optional={"Origin": ORIGINS})
    return st.tuples(named, OTHER_HEADERS).map(
        lambda pair: {name: value for name, value in {**pair[1], **pair[0]}.items() if value is not None})


CONTENT_TYPES = st.one_of(
    st.sampled_from(["text/plain", "application/json", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
                     "multipart/form-data; boundary=x", "application/octet-stream", "", "*/*",
                     "text/html; charset=latin-1"]),
    HEADER_VALUES,
)


def quoted(text: str) -> str:
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


@dataclass(frozen=True)
class FuzzRequest:
    method: str
    path: str
    body: bytes = b""
    content_type: str = "application/octet-stream"
    headers: dict = field(default_factory=dict)

    def describe(self) -> str:
        return f"{self.method} {self.path} ct={self.content_type!r} headers={self.headers!r} body={self.body[:300]!r}"


def _api(auth: st.SearchStrategy) -> st.SearchStrategy[FuzzRequest]:
    post = st.builds(FuzzRequest, method=st.sampled_from(["POST"] * 5 + ["PUT", "DELETE"]),
                     path=st.just("/api/v1/conversions"), body=bodies(API_BODY), content_type=CONTENT_TYPES,
                     headers=headers(auth))
    detail_path = st.tuples(TEXTS, st.one_of(st.just(""), TEXTS)).map(
        lambda p: "/api/v1/conversions/" + (quoted(p[0]) or "x") + ("?event=" + quoted(p[1]) if p[1] else ""))
    detail = st.builds(FuzzRequest, method=st.sampled_from(["GET", "HEAD", "POST"]), path=detail_path,
                       headers=headers(auth))
    return st.one_of(post, post, post, detail)


QUERIES = st.one_of(st.just(""), TEXTS.map(lambda t: "?" + quoted(t)),
                    st.binary(max_size=20).map(lambda b: "?" + quote(b)))
REQUESTS = {
    "collect": st.builds(
        FuzzRequest, method=st.sampled_from(["POST"] * 6 + ["GET", "PUT", "DELETE", "PATCH", "HEAD"]),
        path=st.just("/t/v1/collect"), body=bodies(st.one_of(BROWSER_CONVERSION, CLICK)), content_type=CONTENT_TYPES,
        headers=headers(ANY_AUTH)),
    "preflight": st.builds(
        FuzzRequest, method=st.just("OPTIONS"),
        path=st.one_of(st.just(f"?site={SITE_KEY}"), TEXTS.map(lambda t: "?site=" + quoted(t)), QUERIES).map(
            "/t/v1/collect".__add__),
        body=st.one_of(st.just(b""), st.binary(max_size=50)), content_type=CONTENT_TYPES, headers=headers(ANY_AUTH)),
    "api": _api(GOOD_AUTH),
    "api_unauthenticated": _api(BAD_AUTH),
    "snippet": st.builds(
        FuzzRequest, method=st.sampled_from(["GET", "GET", "HEAD", "POST", "OPTIONS", "PUT"]),
        path=QUERIES.map("/t/v1/adsync.js".__add__), body=st.binary(max_size=50), content_type=CONTENT_TYPES,
        headers=headers(ANY_AUTH)),
}


ENDPOINTS = tuple(REQUESTS)


# --- Sending and judging --------------------------------------------------------------------------

MODELS = (Click, Conversion, Push, Hit)


@dataclass(frozen=True)
class Snapshot:
    counts: tuple[int, ...]
    last_ids: tuple[int, ...]

    @classmethod
    def take(cls) -> Snapshot:
        counts = tuple(model.objects.count() for model in MODELS)
        last = tuple(model.objects.order_by("-pk").values_list("pk", flat=True).first() or 0 for model in MODELS)
        return cls(counts, last)


@dataclass
class Outcome:
    status: int
    problems: list[str]


@contextmanager
def postgres_text_rules(found: list[str]) -> Iterator[None]:
    """Note every SQL parameter PostgreSQL would refuse: NUL characters and unpaired surrogates."""
    def wrapper(execute, sql, params, many, context):
        for value in _flat(params, many):
            if isinstance(value, str) and not storable(value):
                found.append(f"SQL parameter PostgreSQL refuses: {value[:60]!r} in {sql[:80]}")
        return execute(sql, params, many, context)

    with db_connection.execute_wrapper(wrapper):
        yield


def _flat(params, many: bool) -> list:
    if params is None:
        return []
    rows = params if many else [params]
    values = []
    for row in rows:
        values.extend(row.values() if isinstance(row, dict) else row)
    return values


def storable(text: str) -> bool:
    """True when PostgreSQL can store the text: no NUL, and encodable as UTF-8."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def send(client: Client, request: FuzzRequest) -> Outcome:
    """Send one request and judge it; the database changes are compared before and after."""
    before = Snapshot.take()
    refused: list[str] = []
    try:
        with postgres_text_rules(refused):
            response = client.generic(request.method, request.path, data=request.body,
                                      content_type=request.content_type, headers=request.headers)
            status = response.status_code
            if 200 <= status < 300:
                inbox.drain()  # the worker's half of the snippet's ingest (adsync/intake/inbox.py)
    except Exception as error:  # noqa: BLE001 - an exception out of a view is a 500 under a real server
        status, refused = 500, refused + [f"exception: {type(error).__name__}: {str(error)[:200]}"]
    problems = refused + judge(request, status, before, Snapshot.take())
    failed = list(Hit.objects.exclude(error="").values_list("error", flat=True))
    problems += [f"accepted, then the worker could not store it: {error[:200]}" for error in failed]
    Hit.objects.all().delete()
    if status >= 500:
        problems.insert(0, f"status {status}")
    return Outcome(status, list(dict.fromkeys(problems)))


def judge(request: FuzzRequest, status: int, before: Snapshot, after: Snapshot) -> list[str]:
    stores = request.method == "POST" and request.path in INGEST_PATHS and 200 <= status < 300
    if not stores:
        return [] if after.counts == before.counts else [f"stored rows on {status}: {before.counts} -> {after.counts}"]
    problems = []
    for model, last_id in zip(MODELS, before.last_ids, strict=True):
        for row in model.objects.filter(pk__gt=last_id):
            problems += [f"{model.__name__} {row.pk}: {p}" for p in row_problems(row)]
    return problems


def row_problems(row) -> list[str]:
    """Why a stored row is invalid: model validation, storable text, and the ingest rules."""
    problems = []
    try:
        # landing_url is "as the browser sent it" (docs/tracking.md §7), not a validated URL.
        row.full_clean(exclude=["landing_url"], validate_unique=False, validate_constraints=False)
    except ValidationError as error:
        problems.append(f"fails model validation: {error.message_dict}")
    for f in row._meta.concrete_fields:
        value = getattr(row, f.attname)
        if isinstance(value, str) and not storable(value):
            problems.append(f"{f.name} holds text PostgreSQL refuses")
    checks = _RULES.get(type(row), {})
    for name, ok in checks.items():
        value = getattr(row, name)
        if not ok(value):
            problems.append(f"{name}={value!r} breaks the ingest rules")
    return problems


def _optional(pattern: re.Pattern) -> callable:
    return lambda v: v in ("", None) or bool(pattern.fullmatch(v))


def _not_future(moment) -> bool:
    return moment <= timezone.now() + timedelta(minutes=5)


_RULES = {
    Conversion: {"event_name": lambda v: bool(EVENT.fullmatch(v)), "msclkid": _optional(TOKEN),
                 "visitor_id": _optional(VISITOR), "hashed_email": _optional(HASH), "hashed_phone": _optional(HASH),
                 "currency": _optional(CURRENCY), "value": lambda v: v is None or 0 <= v <= 999999999999,
                 "occurred_at": _not_future, "order_id": lambda v: v is None or 0 < len(v) <= 200},
    Click: {"msclkid": lambda v: bool(TOKEN.fullmatch(v)), "visitor_id": lambda v: bool(VISITOR.fullmatch(v)),
            "landing_url": lambda v: len(v) <= 2000},
    Push: {"msclkid": _optional(TOKEN), "hashed_email": _optional(HASH), "hashed_phone": _optional(HASH),
           "conversion_time": _not_future},
}
