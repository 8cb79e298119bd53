"""The ingest endpoints: the snippet's /t/v1/collect and the server API /api/v1/conversions.

Every rejected body must store nothing, so validation tests assert the row counts too.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from decimal import Decimal
from unittest import mock

import pytest
import time_machine
from django.db import IntegrityError
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from adsync.intake import inbox
from adsync.intake import record as ingest
from adsync.intake.reports import ConversionPayload
from adsync.models import Click, Connection, Conversion, GoalMapping, Hit, Push, Site
from adsync.push import transitions
from adsync.sites import api_secrets

pytestmark = pytest.mark.django_db

ORIGIN = "https://shop.example.com"
MSCLKID = "f894f652ea334e739002f7167ab8f8e3"
# docs/microsoft-api.md#hashing: Microsoft's CAPI examples.
PHONE_VECTOR = "c59475d96e9f01d7d18d06cfad84dd02333207f02c0c2c5663ef2782cda0390e"
EMAIL_VECTOR = "ec81f3ac7b2b19675bab9d54cf416f9f18cff87c97da5cca82c0f0891bc40602"
NOW = datetime(2026, 11, 20, 14, 3, 11, 654321, tzinfo=dt_timezone.utc)

_seq = itertools.count(1)


# --- Factories ---------------------------------------------------------------------------------

@pytest.fixture
def make_shop(db):
    def make(**kwargs) -> Site:
        n = next(_seq)
        defaults = {"name": f"Shop {n}", "key": f"pk_shop{n}", "allowed_origins": f"{ORIGIN}\nhttp://localhost:8000"}
        return Site.objects.create(**{**defaults, **kwargs})
    return make


@pytest.fixture
def shop(make_shop) -> Site:
    return make_shop()


@pytest.fixture
def make_goal(db):
    """A connection of `site` that maps `event` to a Microsoft goal."""
    def make(site: Site, event: str = "purchase", goal_name: str = "Purchase", **kwargs) -> Connection:
        connection = Connection.objects.create(site=site, status=Connection.ACTIVE, account_id="187654321", **kwargs)
        GoalMapping.objects.create(connection=connection, event_name=event, goal_name=goal_name)
        return connection
    return make


@pytest.fixture
def goal(shop, make_goal) -> Connection:
    return make_goal(shop)


@pytest.fixture
def secret(shop) -> str:
    return api_secrets.issue(shop)


def make_click(site: Site, visitor_id: str = "visitor-1", msclkid: str = MSCLKID, **kwargs) -> Click:
    return Click.objects.create(site=site, visitor_id=visitor_id, msclkid=msclkid, **kwargs)


# --- Helpers -------------------------------------------------------------------------------------

def collect(client, body, origin: str | None = ORIGIN, *, store: bool = True):
    """POST to the browser endpoint the way the snippet does (text/plain, from a page's origin),
    then let the worker store the inbox (adsync/intake/inbox.py), as its schedule does."""
    raw = body if isinstance(body, (str, bytes)) else json.dumps(body)
    headers = {"Origin": origin} if origin else {}
    response = client.post("/t/v1/collect", raw, content_type="text/plain;charset=UTF-8", headers=headers)
    if store:
        inbox.drain()
    return response


def api(client, secret: str | None, body):
    raw = body if isinstance(body, (str, bytes)) else json.dumps(body)
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    return client.post("/api/v1/conversions", raw, content_type="application/json", headers=headers)


def conversion_body(site: Site, /, **fields) -> dict:
    return {"site": site.key, "type": "conversion", "event": "purchase", "orderId": "A-1", "value": 49.9,
            "currency": "USD", **fields}


def counts() -> tuple[int, int, int]:
    return Conversion.objects.count(), Click.objects.count(), Push.objects.count()


def nothing_stored() -> bool:
    return counts() == (0, 0, 0) and not Hit.objects.exists()


# --- Browser ingest: clicks ------------------------------------------------------------------------

def test_a_click_report_stores_the_click_with_its_landing_url(client, shop):
    url = f"{ORIGIN}/shoes?msclkid={MSCLKID}"
    with time_machine.travel(NOW, tick=False):
        response = collect(client, {"site": shop.key, "type": "click", "visitorId": "v1", "msclkid": MSCLKID,
                                    "url": url})

    assert response.status_code == 202
    assert response.json() == {"ok": True, "accepted": "click"}
    click = Click.objects.get()
    assert (click.site, click.visitor_id, click.msclkid, click.landing_url) == (shop, "v1", MSCLKID, url)
    assert click.clicked_at == NOW


def test_a_repeated_msclkid_keeps_the_first_click(client, shop):
    first = {"site": shop.key, "type": "click", "visitorId": "v1", "msclkid": MSCLKID, "url": f"{ORIGIN}/a"}
    collect(client, first)
    response = collect(client, {**first, "visitorId": "v2", "url": f"{ORIGIN}/b"})

    assert response.status_code == 202
    click = Click.objects.get()
    assert (click.visitor_id, click.landing_url) == ("v1", f"{ORIGIN}/a")


def test_a_click_keeps_the_msclkid_case_and_folds_a_dashed_uuid(client, shop):
    collect(client, {"site": shop.key, "type": "click", "visitorId": "v1", "msclkid": "AbC_123-x"})
    collect(client, {"site": shop.key, "type": "click", "visitorId": "v1",
                     "msclkid": "F894F652-EA33-4E73-9002-F7167AB8F8E3"})

    assert sorted(Click.objects.values_list("msclkid", flat=True)) == ["AbC_123-x", MSCLKID]


@pytest.mark.parametrize("fields, error", [
    ({"msclkid": None}, "msclkid: is required"),
    ({"visitorId": None}, "visitorId: is required"),
    ({"msclkid": "not a click id!"}, "msclkid: must be 1-100 letters, digits, '_' or '-'"),
    ({"url": "https://shop.example.com/?" + "x" * 2000}, "url: must be at most 2000 characters"),
    ({"url": 5}, "url: must be a string"),
])
def test_an_invalid_click_is_refused_and_nothing_is_stored(client, shop, fields, error):
    body = {"site": shop.key, "type": "click", "visitorId": "v1", "msclkid": MSCLKID, **fields}
    response = collect(client, {k: v for k, v in body.items() if v is not None})

    assert response.status_code == 400
    assert response.json() == {"error": error}
    assert nothing_stored()


# --- Browser ingest: conversions -------------------------------------------------------------------

def test_a_conversion_with_an_msclkid_gets_one_queued_push_and_the_clicks_time(client, shop, goal):
    click = make_click(shop, clicked_at=NOW - timedelta(hours=3))
    with time_machine.travel(NOW, tick=False):
        response = collect(client, conversion_body(shop, msclkid=MSCLKID, visitorId="v1", value=99.99))

    assert response.status_code == 202
    assert response.json() == {"ok": True, "accepted": "conversion"}
    conversion = Conversion.objects.get()
    assert (conversion.event_name, conversion.order_id, conversion.value, conversion.currency, conversion.msclkid) == (
        "purchase", "A-1", Decimal("99.990"), "USD", MSCLKID)
    assert (conversion.hashed_email, conversion.hashed_phone) == ("", "")
    assert conversion.click_time == click.clicked_at
    assert conversion.occurred_at == NOW.replace(microsecond=0)
    assert conversion.source == Conversion.SOURCE_BROWSER
    push = Push.objects.get()
    assert (push.connection, push.goal_name, push.msclkid, push.status) == (goal, "Purchase", MSCLKID, Push.QUEUED)
    assert push.conversion_time == conversion.occurred_at


def test_a_conversion_without_msclkid_takes_the_visitors_latest_click(client, shop, goal):
    make_click(shop, visitor_id="v1", msclkid="older", clicked_at=NOW - timedelta(days=2))
    latest = make_click(shop, visitor_id="v1", msclkid="latest", clicked_at=NOW - timedelta(hours=1))
    make_click(shop, visitor_id="someone-else", msclkid="other", clicked_at=NOW - timedelta(minutes=5))
    with time_machine.travel(NOW, tick=False):
        collect(client, conversion_body(shop, visitorId="v1"))

    conversion = Conversion.objects.get()
    assert (conversion.msclkid, conversion.click_time, conversion.visitor_id) == ("latest", latest.clicked_at, "v1")
    assert Push.objects.get().status == Push.QUEUED


def test_a_click_earlier_in_the_same_second_is_attributed(client, shop):
    make_click(shop, visitor_id="v1", clicked_at=NOW - timedelta(microseconds=1))
    with time_machine.travel(NOW, tick=False):
        collect(client, conversion_body(shop, visitorId="v1"))

    assert Conversion.objects.get().msclkid == MSCLKID


def test_an_unknown_msclkid_is_kept_without_a_click_time(client, shop):
    collect(client, conversion_body(shop, msclkid="FromSomewhereElse", visitorId="v1"))

    conversion = Conversion.objects.get()
    assert (conversion.msclkid, conversion.click_time) == ("FromSomewhereElse", None)


def test_a_conversion_without_any_click_waits_for_identity(client, shop, goal):
    collect(client, conversion_body(shop, visitorId="never-clicked"))

    assert Push.objects.get().status == Push.PENDING_IDENTITY


def test_an_event_no_goal_maps_is_stored_without_pushes(client, shop, goal):
    collect(client, conversion_body(shop, event="newsletter", msclkid=MSCLKID))

    assert counts() == (1, 0, 0)


def test_every_connection_mapping_the_event_gets_its_own_push(client, shop, make_goal):
    make_goal(shop, goal_name="Purchase")
    make_goal(shop, goal_name="Online purchase")
    make_goal(shop, event="lead", goal_name="Lead")

    collect(client, conversion_body(shop, msclkid=MSCLKID))

    assert sorted(Push.objects.values_list("goal_name", flat=True)) == ["Online purchase", "Purchase"]


def test_a_repeated_order_from_the_browser_changes_nothing(client, shop, goal):
    collect(client, conversion_body(shop, msclkid=MSCLKID, value=10))
    again = collect(client, conversion_body(shop, msclkid="another", value=20))

    assert again.status_code == 202  # accepted; the worker finds the order already stored
    assert counts() == (1, 0, 1) and not Hit.objects.exists()
    conversion = Conversion.objects.get()
    assert (conversion.msclkid, conversion.value) == (MSCLKID, Decimal("10.000"))


def test_conversions_without_an_order_id_are_never_merged(client, shop):
    collect(client, conversion_body(shop, orderId=None))
    collect(client, conversion_body(shop, orderId=""))

    assert list(Conversion.objects.values_list("order_id", flat=True)) == [None, None]


def test_the_same_order_id_under_another_event_is_another_conversion(client, shop):
    collect(client, conversion_body(shop, event="purchase"))
    collect(client, conversion_body(shop, event="refund_request"))

    assert Conversion.objects.count() == 2


def test_the_browser_cannot_backdate_and_unknown_keys_are_ignored(client, shop):
    with time_machine.travel(NOW, tick=False):
        response = collect(client, conversion_body(shop, time="2020-01-01T00:00:00Z", somethingNew=1))

    assert response.status_code == 202
    assert Conversion.objects.get().occurred_at == NOW.replace(microsecond=0)


# --- Browser ingest: site, CORS, method, body --------------------------------------------------------

def test_an_allowed_origin_is_echoed_and_no_cookie_is_set(client, shop):
    response = collect(client, conversion_body(shop), origin=ORIGIN + "/")

    assert response.status_code == 202
    assert response["Access-Control-Allow-Origin"] == ORIGIN + "/"
    assert "Origin" in response["Vary"]
    assert not response.cookies  # no CSRF cookie, no session


def test_the_snippet_endpoint_keeps_security_headers_and_ignores_staff_sessions(client, shop, admin_user):
    """tracking/middleware.py answers after SecurityMiddleware and before the session and sign-in
    middleware: a staff member browsing a client site sends their session cookie along, and it is
    neither read nor renewed."""
    client.force_login(admin_user)
    with CaptureQueriesContext(db_connection) as queries:
        response = collect(client, conversion_body(shop))

    assert response.status_code == 202
    assert not response.cookies
    assert "Cookie" not in response.get("Vary", "")
    assert response["X-Content-Type-Options"] == "nosniff"  # SecurityMiddleware still runs first
    assert "X-Frame-Options" not in response  # the short path: the rest of the stack did not run
    assert not [q for q in queries if "django_session" in q["sql"] or "auth_user" in q["sql"]]


def test_the_short_path_also_serves_an_instance_mounted_under_a_prefix(client, shop):
    body = json.dumps(conversion_body(shop))
    response = client.post("/t/v1/collect", body, content_type="text/plain", headers={"Origin": ORIGIN},
                           SCRIPT_NAME="/adsync")

    assert response.status_code == 202
    assert "X-Frame-Options" not in response


def test_a_refused_origin_gets_403_and_nothing_is_stored(client, shop):
    response = collect(client, conversion_body(shop), origin="https://evil.example")

    assert response.status_code == 403
    assert response.json() == {"error": "origin: https://evil.example is not an allowed origin for this site"}
    assert "Access-Control-Allow-Origin" not in response
    assert nothing_stored()


def test_an_origin_allowed_for_another_site_is_refused(client, shop, make_shop):
    other = make_shop(allowed_origins="https://other.example")

    response = collect(client, conversion_body(shop), origin="https://other.example")

    assert response.status_code == 403
    assert other.allows_origin("https://other.example")
    assert nothing_stored()


def test_a_call_without_origin_is_refused_and_nothing_is_stored(client, shop):
    """Every browser sends Origin with the snippet's call: one without it is a script, not the snippet (servers
    report through the authenticated API)."""
    response = collect(client, conversion_body(shop), origin=None)

    assert response.status_code == 403
    assert response.json() == {"error": "origin: the Origin header is required: servers report through "
                                        "/api/v1/conversions"}
    assert not Hit.objects.exists()


def test_a_validation_error_is_readable_by_an_allowed_origin(client, shop):
    response = collect(client, conversion_body(shop, value="49.90"))

    assert response.status_code == 400
    assert response["Access-Control-Allow-Origin"] == ORIGIN


def test_a_preflight_from_an_allowed_origin_is_answered(client, shop):
    response = client.options("/t/v1/collect", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"})

    assert response.status_code == 204
    assert response["Access-Control-Allow-Origin"] == ORIGIN
    assert response["Access-Control-Allow-Methods"] == "POST"
    assert response["Access-Control-Allow-Headers"] == "Content-Type"
    assert int(response["Access-Control-Max-Age"]) > 0
    assert "Origin" in response["Vary"]


def test_a_preflight_from_an_unknown_origin_is_refused(client, shop):
    response = client.options("/t/v1/collect", headers={"Origin": "https://evil.example"})

    assert response.status_code == 403
    assert "Access-Control-Allow-Origin" not in response


def test_a_preflight_naming_a_site_is_checked_against_that_site(client, shop, make_shop):
    make_shop(allowed_origins="https://other.example")

    refused = client.options(f"/t/v1/collect?site={shop.key}", headers={"Origin": "https://other.example"})
    allowed = client.options(f"/t/v1/collect?site={shop.key}", headers={"Origin": ORIGIN})

    assert (refused.status_code, allowed.status_code) == (403, 204)


def test_an_unknown_site_key_is_404(client, shop):
    response = collect(client, conversion_body(shop, site="pk_nope"))

    assert response.status_code == 404
    assert response.json() == {"error": "site: unknown site key"}
    assert nothing_stored()


@pytest.mark.parametrize("fields, error", [
    ({"site": None}, "site: is required"),
    ({"site": 12}, "site: must be a string"),
    ({"type": None}, "type: is required"),
    ({"type": "pageview"}, 'type: must be "click" or "conversion"'),
])
def test_site_and_type_are_required(client, shop, fields, error):
    body = {k: v for k, v in conversion_body(shop, **fields).items() if v is not None}
    response = collect(client, body)

    assert (response.status_code, response.json()) == (400, {"error": error})
    assert nothing_stored()


@pytest.mark.parametrize("method", ["get", "put", "delete", "patch"])
def test_the_collect_endpoint_only_takes_post(client, shop, method):
    response = getattr(client, method)("/t/v1/collect")

    assert response.status_code == 405
    assert response.json()["error"].startswith("method:")
    assert "POST" in response["Allow"]


@pytest.mark.parametrize("raw, error", [
    ("{", "body: is not valid JSON"),
    ("", "body: is not valid JSON"),
    ("[1, 2]", "body: must be a JSON object"),
    ('"a string"', "body: must be a JSON object"),
    (b"\xff\xfe{}", "body: is not UTF-8 text"),
    ("[" * 5000 + "]" * 5000, "body: is not valid JSON"),
])
def test_a_body_that_is_not_a_json_object_is_400(client, shop, raw, error):
    response = collect(client, raw)

    assert (response.status_code, response.json()) == (400, {"error": error})
    assert nothing_stored()


def test_a_body_over_the_limit_is_413(client, shop, settings):
    settings.ADSYNC_MAX_BODY_BYTES = 300
    response = collect(client, conversion_body(shop, padding="x" * 300))

    assert response.status_code == 413
    assert response.json() == {"error": "body: is larger than 300 bytes"}
    assert nothing_stored()


# --- Validation rules, through both endpoints ---------------------------------------------------------

def via_collect(client, site: Site, secret: str, fields: dict):
    return collect(client, {k: v for k, v in conversion_body(site, **fields).items() if v is not None})


def via_api(client, site: Site, secret: str, fields: dict):
    body = {"event": "purchase", "orderId": "A-1", "value": 49.9, "currency": "USD", **fields}
    return api(client, secret, {k: v for k, v in body.items() if v is not None})


@pytest.fixture(params=[via_collect, via_api], ids=["collect", "api"])
def send(request, client, shop, secret):
    return lambda **fields: request.param(client, shop, secret, fields)


EVENT_SHAPE = "event: must be 1-100 characters of A-Z a-z 0-9 _ . : -"


@pytest.mark.parametrize("fields, error", [
    ({"event": None}, "event: is required"),
    ({"event": ""}, "event: is required"),
    ({"event": 5}, "event: must be a string"),
    ({"event": ["purchase"]}, "event: must be a string"),
    ({"event": "buy now!"}, EVENT_SHAPE),
    ({"event": "x" * 101}, EVENT_SHAPE),
    ({"orderId": 1.5}, "orderId: must be a string or an integer"),
    ({"orderId": True}, "orderId: must be a string or an integer"),
    ({"orderId": {"id": 1}}, "orderId: must be a string or an integer"),
    ({"orderId": "x" * 201}, "orderId: must be at most 200 characters"),
    ({"value": "49.90"}, "value: must be a number"),
    ({"value": True}, "value: must be a number"),
    ({"value": [1]}, "value: must be a number"),
    ({"value": -0.01}, "value: must be 0 or more"),
    ({"value": 1_000_000_000_000}, "value: must be at most 999999999999"),
    ({"value": float("nan")}, "value: must be a finite number"),
    ({"value": float("inf")}, "value: must be a finite number"),
    ({"currency": "dollars"}, "currency: must be at most 3 characters"),
    ({"currency": "ZZZ"}, "currency: must be a 3-letter ISO 4217 code, e.g. USD"),
    ({"currency": "US"}, "currency: must be a 3-letter ISO 4217 code, e.g. USD"),
    ({"currency": 840}, "currency: must be a string"),
    ({"email": 5}, "email: must be a string"),
    ({"phone": 14255551234}, "phone: must be a string"),
    ({"msclkid": "has spaces in it"}, "msclkid: must be 1-100 letters, digits, '_' or '-'"),
    ({"msclkid": "x" * 101}, "msclkid: must be at most 100 characters"),
    ({"visitorId": "not/valid"}, "visitorId: must be 1-64 characters of A-Z a-z 0-9 _ -"),
    ({"visitorId": "v" * 65}, "visitorId: must be at most 64 characters"),
])
def test_an_invalid_field_is_400_naming_it_and_nothing_is_stored(send, goal, fields, error):
    response = send(**fields)

    assert response.status_code == 400
    assert response.json() == {"error": error}
    assert nothing_stored()


@pytest.mark.parametrize("fields, error", [
    ({"email": "John at Contoso dot com"}, "email: is not a valid address"),
    ({"email": "John@Contoso"}, "email: is not a valid address"),
    ({"phone": "+1 (425) 55"}, "phone: is not a valid phone number"),
    ({"phone": "call me maybe"}, "phone: is not a valid phone number"),
])
def test_an_invalid_email_or_phone_is_refused_without_echoing_it(send, fields, error):
    response = send(**fields)

    assert response.status_code == 400
    assert response.json()["error"].startswith(error)
    raw = next(iter(fields.values()))
    assert raw not in response.content.decode()
    assert nothing_stored()


@pytest.mark.parametrize("sent, stored", [
    (99.99, Decimal("99.990")),
    (100, Decimal("100.000")),
    (0, Decimal("0.000")),
    (-0.0, Decimal("0.000")),
    (1.0005, Decimal("1.001")),
    (1.0004, Decimal("1.000")),
    (2.0015, Decimal("2.002")),
    (999999999999, Decimal("999999999999.000")),
])
def test_values_keep_three_decimals_rounded_half_up(send, sent, stored):
    response = send(value=sent)

    assert response.status_code in (201, 202)
    assert Conversion.objects.get().value == stored


def test_currency_is_upper_cased_and_defaults_to_the_sites(send, shop):
    shop.default_currency = "EUR"
    shop.save()

    send(orderId="1", currency="gbp")
    send(orderId="2", currency=None)

    assert list(Conversion.objects.order_by("order_id").values_list("currency", flat=True)) == ["GBP", "EUR"]


def test_an_integer_order_id_is_stored_as_text(send):
    send(orderId=12345)
    send(orderId="12345")

    assert list(Conversion.objects.values_list("order_id", flat=True)) == ["12345"]


def test_email_and_phone_reach_the_conversion_only_as_microsofts_hashes(send, goal):
    response = send(email="John@Contoso.com", phone="+1 (425) 555-1234", msclkid=MSCLKID)

    assert response.status_code in (201, 202)
    conversion = Conversion.objects.get()
    assert (conversion.hashed_email, conversion.hashed_phone) == (EMAIL_VECTOR, PHONE_VECTOR)
    push = Push.objects.get()
    assert (push.hashed_email, push.hashed_phone) == (EMAIL_VECTOR, PHONE_VECTOR)
    stored = json.dumps([list(Conversion.objects.values().get().values()), list(Push.objects.values().get().values())],
                        default=str).lower()
    for fragment in ("contoso", "john", "(425)", "555-1234", "4255551234"):
        assert fragment not in stored
        assert fragment not in response.content.decode().lower()


def test_a_phone_without_country_code_is_read_in_the_sites_country(send, shop):
    shop.default_country = "GB"
    shop.save()

    send(phone="020 7946 0018")

    assert Conversion.objects.get().hashed_phone == hashlib.sha256(b"+442079460018").hexdigest()


def test_an_already_hashed_email_passes_through(send):
    send(email=EMAIL_VECTOR.upper())

    assert Conversion.objects.get().hashed_email == EMAIL_VECTOR


def test_an_empty_email_or_phone_is_no_identifier(send, goal):
    response = send(email="", phone="  ")

    assert response.status_code in (201, 202)
    conversion = Conversion.objects.get()
    assert (conversion.hashed_email, conversion.hashed_phone) == ("", "")


def test_a_hashed_email_without_click_waits_unless_the_connection_sends_enhanced_conversions(send, shop, make_goal):
    make_goal(shop, goal_name="Classic")
    make_goal(shop, goal_name="Enhanced", enhanced_conversions=True)

    send(email="John@Contoso.com")

    assert dict(Push.objects.values_list("goal_name", "status")) == {
        "Classic": Push.PENDING_IDENTITY, "Enhanced": Push.QUEUED}


# --- Server API -------------------------------------------------------------------------------------

def test_the_api_requires_a_bearer_secret(client, shop, secret):
    missing = api(client, None, {"event": "purchase"})
    wrong = api(client, "sk_wrong", {"event": "purchase"})
    basic = client.post("/api/v1/conversions", "{}", content_type="application/json",
                        headers={"Authorization": "Basic dXNlcjpwYXNz"})

    for response in (missing, wrong, basic):
        assert response.status_code == 401
        assert response["WWW-Authenticate"].startswith("Bearer")
        assert response.json()["error"].startswith("authorization: ")
    assert 'error="invalid_token"' in wrong["WWW-Authenticate"]
    assert nothing_stored()


def test_the_secret_decides_the_site(client, shop, make_shop):
    other = make_shop()
    other_secret = api_secrets.issue(other)

    api(client, other_secret, {"event": "purchase", "orderId": "A-1"})

    assert Conversion.objects.get().site == other


def test_one_conversion_is_created_with_201(client, shop, secret, goal):
    with time_machine.travel(NOW, tick=False):
        response = api(client, secret, {"event": "purchase", "orderId": "A-1", "value": 99.99, "currency": "USD",
                                        "msclkid": MSCLKID})

    assert response.status_code == 201
    body = response.json()
    conversion = Conversion.objects.get()
    assert body["id"] == conversion.pk
    assert (body["event"], body["orderId"], body["created"], body["time"]) == (
        "purchase", "A-1", True, "2026-11-20T14:03:11Z")
    assert body["pushes"] == [{"connection": goal.pk, "goalName": "Purchase", "status": "queued"}]
    assert conversion.source == Conversion.SOURCE_SERVER


def test_a_repeated_order_id_is_200_created_false_and_changes_nothing(client, shop, secret, goal):
    first = api(client, secret, {"event": "purchase", "orderId": "A-1", "value": 10, "msclkid": MSCLKID})
    again = api(client, secret, {"event": "purchase", "orderId": "A-1", "value": 20})

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["created"] is False
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["pushes"] == first.json()["pushes"]
    assert counts() == (1, 0, 1)
    assert Conversion.objects.get().value == Decimal("10.000")


def test_a_batch_is_stored_whole_and_answers_per_item(client, shop, secret, goal):
    api(client, secret, {"event": "purchase", "orderId": "old"})

    response = api(client, secret, {"conversions": [
        {"event": "purchase", "orderId": "old"},
        {"event": "purchase", "orderId": "new", "msclkid": MSCLKID},
        {"event": "purchase", "orderId": "new"},
    ]})

    assert response.status_code == 201
    items = response.json()["conversions"]
    assert [(i["orderId"], i["created"]) for i in items] == [("old", False), ("new", True), ("new", False)]
    assert items[1]["pushes"] == [{"connection": goal.pk, "goalName": "Purchase", "status": "queued"}]
    assert counts() == (2, 0, 2)


def test_a_batch_of_repeats_is_200(client, shop, secret):
    api(client, secret, {"event": "purchase", "orderId": "A-1"})

    response = api(client, secret, {"conversions": [{"event": "purchase", "orderId": "A-1"}]})

    assert response.status_code == 200
    assert response.json()["conversions"][0]["created"] is False


def test_one_invalid_item_rejects_the_whole_batch(client, shop, secret, goal):
    response = api(client, secret, {"conversions": [
        {"event": "purchase", "orderId": "1", "value": 10},
        {"event": "purchase", "orderId": "2", "value": "ten"},
        "not an object",
        {"event": "purchase", "orderId": "4", "email": "nobody"},
    ]})

    assert response.status_code == 400
    assert response.json() == {"error": [
        "conversions[1].value: must be a number",
        "conversions[2]: must be a JSON object",
        "conversions[3].email: is not a valid address",
    ]}
    assert nothing_stored()


@pytest.mark.parametrize("body, error", [
    ({"conversions": []}, "conversions: must hold 1 to 100 items"),
    ({"conversions": [{"event": "purchase"}] * 101}, "conversions: must hold 1 to 100 items"),
    ({"conversions": {"event": "purchase"}}, "conversions: must be a list"),
    ({"conversions": [], "event": "purchase"}, 'event: is not allowed beside "conversions"'),
    ({"event": "purchase", "order_id": "A-1"}, "order_id: is not a known field"),
    ({"event": "purchase", "site": "pk_x"}, "site: is not a known field"),
])
def test_a_malformed_batch_or_unknown_key_is_400(client, shop, secret, settings, body, error):
    settings.ADSYNC_MAX_BODY_BYTES = 64 * 1024
    response = api(client, secret, body)

    assert (response.status_code, response.json()) == (400, {"error": error})
    assert nothing_stored()


def test_an_unexpected_failure_mid_batch_stores_nothing(shop):
    items = [ConversionPayload(event="purchase", order_id=str(n)) for n in range(3)]
    real = transitions.create_pushes
    calls = itertools.count()

    def fail_on_third(conversion):
        if next(calls) == 2:
            raise RuntimeError("boom")
        return real(conversion)

    with mock.patch.object(transitions, "create_pushes", side_effect=fail_on_third), pytest.raises(RuntimeError):
        ingest.record_conversions(shop, items, source=Conversion.SOURCE_SERVER)

    assert nothing_stored()


def test_the_api_takes_a_conversion_time_with_an_offset(client, shop, secret):
    with time_machine.travel(NOW, tick=False):
        api(client, secret, {"event": "purchase", "orderId": "1", "time": "2026-11-20T14:03:11.999Z"})
        api(client, secret, {"event": "purchase", "orderId": "2", "time": "2026-11-20T16:00:00.5+02:00"})
        api(client, secret, {"event": "purchase", "orderId": "3", "time": "2026-11-20T14:08:00Z"})  # +4m49s

    times = dict(Conversion.objects.values_list("order_id", "occurred_at"))
    assert times == {
        "1": datetime(2026, 11, 20, 14, 3, 11, tzinfo=dt_timezone.utc),
        "2": datetime(2026, 11, 20, 14, 0, 0, tzinfo=dt_timezone.utc),
        "3": datetime(2026, 11, 20, 14, 8, 0, tzinfo=dt_timezone.utc),
    }


def test_without_a_time_the_conversion_happened_now_in_whole_seconds(client, shop, secret):
    with time_machine.travel(NOW, tick=False):
        api(client, secret, {"event": "purchase"})

    assert Conversion.objects.get().occurred_at == NOW.replace(microsecond=0)


@pytest.mark.parametrize("time, error", [
    ("2026-11-20T14:03:11", "time: must include a UTC offset, e.g. 2026-11-20T14:03:11Z"),
    ("2026-11-20", "time: must include a UTC offset, e.g. 2026-11-20T14:03:11Z"),
    ("2026-11-20T14:09:12Z", "time: is more than 5 minutes in the future"),
    ("2026-11-20T16:09:12+02:00", "time: is more than 5 minutes in the future"),
    ("yesterday", "time: is not an ISO-8601 date-time, e.g. 2026-11-20T14:03:11Z"),
    ("2026-13-01T00:00:00Z", "time: is not an ISO-8601 date-time, e.g. 2026-11-20T14:03:11Z"),
    (1763647391, "time: must be an ISO-8601 string, e.g. 2026-11-20T14:03:11Z"),
])
def test_an_invalid_time_is_400(client, shop, secret, time, error):
    with time_machine.travel(NOW, tick=False):
        response = api(client, secret, {"event": "purchase", "time": time})

    assert (response.status_code, response.json()) == (400, {"error": error})
    assert nothing_stored()


def test_an_api_conversion_with_a_known_msclkid_copies_the_click_time(client, shop, secret):
    click = make_click(shop, clicked_at=NOW - timedelta(days=1))

    api(client, secret, {"event": "purchase", "msclkid": "F894F652-EA33-4E73-9002-F7167AB8F8E3"})  # folded

    conversion = Conversion.objects.get()
    assert (conversion.msclkid, conversion.click_time) == (MSCLKID, click.clicked_at)


def test_an_api_conversion_with_the_visitors_cookie_is_attributed(client, shop, secret):
    with time_machine.travel(NOW - timedelta(hours=2), tick=False):
        collect(client, {"site": shop.key, "type": "click", "visitorId": "vid-123", "msclkid": MSCLKID})

    with time_machine.travel(NOW, tick=False):
        response = api(client, secret, {"event": "purchase", "orderId": "A-1", "visitorId": "vid-123",
                                        "time": "2026-11-20T13:00:00Z"})

    assert response.json()["msclkid"] == MSCLKID
    assert Conversion.objects.get().click_time == NOW - timedelta(hours=2)


def test_a_click_after_the_conversion_time_is_not_attributed(client, shop, secret):
    make_click(shop, visitor_id="v1", clicked_at=NOW - timedelta(minutes=30))

    with time_machine.travel(NOW, tick=False):
        api(client, secret, {"event": "purchase", "visitorId": "v1", "time": "2026-11-20T13:00:00Z"})

    assert Conversion.objects.get().msclkid == ""


def test_the_api_only_takes_post(client, secret):
    response = client.get("/api/v1/conversions", headers={"Authorization": f"Bearer {secret}"})

    assert response.status_code == 405
    assert response["Allow"] == "POST"


def test_an_api_body_over_the_limit_is_413(client, shop, secret, settings):
    settings.ADSYNC_MAX_BODY_BYTES = 100
    response = api(client, secret, {"event": "purchase", "orderId": "x" * 100})

    assert response.status_code == 413
    assert nothing_stored()


# --- Server API: reading a conversion back ---------------------------------------------------------------

def test_a_conversion_can_be_read_back_with_its_pushes(client, shop, secret, goal):
    api(client, secret, {"event": "purchase", "orderId": "A/1", "msclkid": MSCLKID, "value": 5})
    Push.objects.update(status=Push.ERROR, error_code=5604, error_symbol="OfflineConversionMicrosoftClickIdInvalid",
                        error_message="The click ID is invalid.", attempts=1)

    response = client.get("/api/v1/conversions/A/1?event=purchase", headers={"Authorization": f"Bearer {secret}"})

    assert response.status_code == 200
    body = response.json()
    assert (body["orderId"], body["event"], body["value"], body["msclkid"]) == ("A/1", "purchase", 5.0, MSCLKID)
    assert body["pushes"] == [{
        "connection": goal.pk, "goalName": "Purchase", "status": "error", "kind": "conversion", "attempts": 1,
        "sentAt": None, "errorCode": 5604, "errorSymbol": "OfflineConversionMicrosoftClickIdInvalid",
        "errorMessage": "The click ID is invalid.",
    }]


def test_reading_back_needs_the_event_when_the_order_id_is_shared(client, shop, secret):
    api(client, secret, {"event": "purchase", "orderId": "A-1"})
    api(client, secret, {"event": "lead", "orderId": "A-1"})
    auth = {"Authorization": f"Bearer {secret}"}

    ambiguous = client.get("/api/v1/conversions/A-1", headers=auth)
    lead = client.get("/api/v1/conversions/A-1?event=lead", headers=auth)

    assert ambiguous.status_code == 400
    assert ambiguous.json()["error"].startswith("event: ")
    assert (lead.status_code, lead.json()["event"]) == (200, "lead")


def test_reading_back_is_404_for_unknown_or_other_sites_orders(client, shop, secret, make_shop):
    other = make_shop()
    other_secret = api_secrets.issue(other)
    api(client, other_secret, {"event": "purchase", "orderId": "theirs"})

    response = client.get("/api/v1/conversions/theirs", headers={"Authorization": f"Bearer {secret}"})
    unauthenticated = client.get("/api/v1/conversions/theirs")

    assert response.status_code == 404
    assert unauthenticated.status_code == 401


# --- The ingest service -----------------------------------------------------------------------------

def test_a_race_on_the_same_order_returns_the_winners_conversion(shop, goal):
    payload = ConversionPayload(event="purchase", order_id="A-1", msclkid=MSCLKID)
    winner = ingest.record_conversion(shop, payload, source=Conversion.SOURCE_SERVER)

    # The loser does not look before inserting (ingest inserts first): the unique constraint decides.
    loser = ingest.record_conversion(shop, payload, source=Conversion.SOURCE_SERVER)

    assert loser.created is False
    assert loser.conversion.pk == winner.conversion.pk
    assert [p.pk for p in loser.pushes] == [p.pk for p in winner.pushes]
    assert counts() == (1, 0, 1)


def test_an_integrity_error_without_an_order_id_is_not_hidden(shop):
    payload = ConversionPayload(event="purchase")
    with mock.patch.object(transitions, "create_pushes", side_effect=IntegrityError("unexpected")), \
            pytest.raises(IntegrityError):
        ingest.record_conversion(shop, payload, source=Conversion.SOURCE_SERVER)

    assert nothing_stored()


def test_recording_uses_the_current_time_when_none_is_given(shop):
    with time_machine.travel(NOW, tick=False):
        recorded = ingest.record_conversion(shop, ConversionPayload(event="purchase"), source="server")

    assert recorded.conversion.occurred_at == NOW.replace(microsecond=0)
    assert timezone.is_aware(recorded.conversion.occurred_at)
