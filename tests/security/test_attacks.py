"""Every attack of issue #15, tried again: each test is named after the attack and fails on the code before the fix.

The snippet's site key is public, so a forger can post anything the snippet posts. These tests
play the forger against the real endpoints (Django's test client), let the worker store the
inbox and the flush call Microsoft (mocked at the HTTP boundary with `responses`), and check
what a client would notice in their ad account. docs/security.md maps each threat to its test.
The attacks that need several processes, a browser or a production start live beside this file
(test_production.py, test_two_web_processes.py) and in tests/tracking/test_database_blip.py.
"""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core import mail
from django.db import OperationalError
from django.db import connection as db_connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django.views.debug import ExceptionReporter

from adsync.intake import inbox
from adsync.jobs import run_flush as flush_conversions
from adsync.models import ApiSecret, Click, Conversion, Hit, Push, Site, format_conversion_time
from adsync.push import transitions
from adsync.sites import api_secrets
from tests.conftest import APPLY_URL, form_fields
from tracking import limits

pytestmark = pytest.mark.django_db

ORIGIN = "https://shop.example.com"
REAL_CLICK = "f894f652ea334e739002f7167ab8f8e3"
ATTACKER_CLICK = "0c6e1a7a9d8b4f3e8a2b5c4d3e2f1a0b"
VICTIM_EMAIL = "victim@example.org"


@pytest.fixture
def shop(site: Site) -> Site:
    return site  # allowed origin https://shop.example.com (tests/conftest.py)


@pytest.fixture
def secret(shop) -> str:
    return api_secrets.issue(shop)


def collect(client, body: dict, *, origin: str | None = ORIGIN, address: str = "203.0.113.7", drain: bool = True):
    """The forger's POST, as the snippet makes it (text/plain), from `address`; then the worker's inbox run."""
    headers = {"Origin": origin} if origin else {}
    response = client.post("/t/v1/collect", json.dumps(body), content_type="text/plain", headers=headers,
                           REMOTE_ADDR=address)
    if drain:
        inbox.drain()
    return response


def api(client, secret: str, body: dict):
    return client.post("/api/v1/conversions", json.dumps(body), content_type="application/json",
                       headers={"Authorization": f"Bearer {secret}"})


def purchase(site: Site, **fields) -> dict:
    return {"site": site.key, "type": "conversion", "event": "purchase", **fields}


def ok(tracking_id: str = "tracking-1"):
    return {"json": {"PartialErrors": []}, "headers": {"TrackingId": tracking_id}}


def sent_to_microsoft(mocked) -> list[dict]:
    return [item for call in mocked.calls if call.request.url == APPLY_URL
            for item in json.loads(call.request.body)["OfflineConversions"]]


# --- Order-id squatting --------------------------------------------------------------------------------

def test_order_id_squatting_a_browser_report_first_does_not_lose_the_real_sale(client, shop, connection, secret,
                                                                                mocked):
    collect(client, purchase(shop, orderId="A-5002", value=0))  # the squatter, first

    answer = api(client, secret, {"event": "purchase", "orderId": "A-5002", "value": 420.50, "currency": "USD",
                                  "msclkid": REAL_CLICK})
    mocked.post(APPLY_URL, **ok())
    flush_conversions()

    assert answer.status_code == 201
    assert (answer.json()["created"], answer.json()["replacedBrowserReport"]) == (True, True)
    conversion = Conversion.objects.get()
    assert (conversion.value, conversion.msclkid, conversion.source) == (Decimal("420.500"), REAL_CLICK, "server")
    [sent] = sent_to_microsoft(mocked)
    assert (sent["ConversionValue"], sent["MicrosoftClickId"]) == (420.5, REAL_CLICK)
    assert Push.objects.get().status == Push.SENT  # one push: the browser's, never sent, took the real sale


def test_order_id_squatting_after_the_browser_row_was_sent_the_real_sale_goes_out_as_its_own_push(
        client, shop, connection, secret, mocked):
    collect(client, purchase(shop, orderId="A-5003", value=1, msclkid=ATTACKER_CLICK))
    mocked.post(APPLY_URL, **ok("first"))
    flush_conversions()  # the browser's report reached Microsoft before the server's

    api(client, secret, {"event": "purchase", "orderId": "A-5003", "value": 420.50, "msclkid": REAL_CLICK})
    flush_conversions()

    first, second = sent_to_microsoft(mocked)
    assert (first["MicrosoftClickId"], first["ConversionValue"]) == (ATTACKER_CLICK, 1.0)
    assert (second["MicrosoftClickId"], second["ConversionValue"]) == (REAL_CLICK, 420.5)
    pushes = Push.objects.order_by("id")
    assert [(p.source, p.status, p.msclkid) for p in pushes] == [("browser", Push.SENT, ATTACKER_CLICK),
                                                                 ("server", Push.SENT, REAL_CLICK)]


def test_order_id_squatting_a_browser_report_never_changes_a_server_reported_row(client, shop, connection, secret):
    api(client, secret, {"event": "purchase", "orderId": "A-5004", "value": 420.50, "msclkid": REAL_CLICK})

    response = collect(client, purchase(shop, orderId="A-5004", value=0, msclkid=ATTACKER_CLICK))

    assert response.status_code == 202  # accepted as any repeat is: a page learns nothing
    conversion = Conversion.objects.get()
    assert (conversion.value, conversion.msclkid, conversion.source) == (Decimal("420.500"), REAL_CLICK, "server")
    push = Push.objects.get()
    assert (push.msclkid, push.value, push.source) == (REAL_CLICK, Decimal("420.500"), "server")


def test_order_id_squatting_a_second_server_report_is_a_repeat_not_a_replacement(client, shop, connection, secret):
    api(client, secret, {"event": "purchase", "orderId": "A-5005", "value": 10})

    again = api(client, secret, {"event": "purchase", "orderId": "A-5005", "value": 99})

    assert (again.status_code, again.json()["created"], again.json()["replacedBrowserReport"]) == (200, False, False)
    assert Conversion.objects.get().value == Decimal("10.000")


# --- Forged conversions -------------------------------------------------------------------------------

def test_forged_conversion_without_an_origin_header_is_refused(client, shop, connection):
    response = collect(client, purchase(shop, value=999999999999, msclkid=ATTACKER_CLICK), origin=None)

    assert response.status_code == 403
    assert (Hit.objects.count(), Conversion.objects.count()) == (0, 0)


def test_forged_conversion_of_a_huge_value_is_held_for_staff_and_not_sent(client, shop, connection, mocked):
    Site.objects.filter(pk=shop.pk).update(browser_value_ceiling=Decimal("5000"))
    mocked.post(APPLY_URL, **ok())

    collect(client, purchase(shop, orderId="F-1", value=999999999999, msclkid=ATTACKER_CLICK))
    flush_conversions()

    assert sent_to_microsoft(mocked) == []
    push = Push.objects.get()
    assert (push.status, push.error_symbol) == (Push.ERROR, "adsync:value_held")
    assert "999999999999.000 USD, above this site's ceiling for browser conversions (5000.000)" in push.error_message


def test_a_value_held_for_review_is_sent_once_staff_release_it_and_never_if_they_drop_it(client, shop, connection,
                                                                                         mocked):
    Site.objects.filter(pk=shop.pk).update(browser_value_ceiling=Decimal("5000"))
    mocked.post(APPLY_URL, **ok())
    collect(client, purchase(shop, orderId="big-but-real", value=6200, msclkid=REAL_CLICK))
    collect(client, purchase(shop, orderId="forged", value=999999, msclkid=ATTACKER_CLICK))
    real, forged = (Push.objects.filter(conversion__order_id=order) for order in ("big-but-real", "forged"))

    assert transitions.replay(Push.objects.all()) == 0  # Replay does not release them: staff decide
    assert transitions.release_held_values(real) == 1
    assert transitions.drop_held_values(forged) == 1
    flush_conversions()

    assert [item["MicrosoftClickId"] for item in sent_to_microsoft(mocked)] == [REAL_CLICK]
    assert (forged.get().status, forged.get().error_symbol) == (Push.ERROR, "adsync:value_dropped")


def test_a_server_report_above_the_browser_ceiling_is_not_held(client, shop, connection, secret):
    Site.objects.filter(pk=shop.pk).update(browser_value_ceiling=Decimal("5000"))

    api(client, secret, {"event": "purchase", "orderId": "B2B-1", "value": 80000, "msclkid": REAL_CLICK})

    assert Push.objects.get().status == Push.QUEUED


def test_forged_conversions_3000_hits_from_one_client_in_2_seconds_are_answered_429_past_the_limit(
        client, shop, settings):
    settings.ADSYNC_CLIENT_HITS_PER_MINUTE = 120

    statuses = [collect(client, purchase(shop, value=1), drain=False).status_code for _ in range(300)]

    assert statuses[:120] == [202] * 120 and set(statuses[120:]) == {429}
    assert Hit.objects.count() == 120
    refused = collect(client, purchase(shop), drain=False)
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert refused.json() == {"error": "rate: too many reports, try again later"}
    assert (refused["Access-Control-Allow-Origin"], refused["Access-Control-Expose-Headers"]) == ("*", "Retry-After")
    other_client = collect(client, purchase(shop), address="198.51.100.20", drain=False)
    assert other_client.status_code == 202  # the limit is per address


def test_forged_conversions_from_many_addresses_are_bounded_per_site(client, shop, make_site, settings):
    settings.ADSYNC_SITE_HITS_PER_MINUTE = 50
    other = make_site()

    statuses = [collect(client, purchase(shop), address=f"198.51.100.{n}", drain=False).status_code
                for n in range(60)]

    assert statuses.count(202) == 50 and statuses.count(429) == 10
    assert collect(client, purchase(other), drain=False).status_code == 202  # and per site


def test_forged_conversions_cannot_grow_the_inbox_past_its_cap(client, shop, make_site, settings):
    settings.ADSYNC_INBOX_CAP = 5
    other = make_site()

    statuses = [collect(client, purchase(shop), address=f"198.51.100.{n}", drain=False).status_code
                for n in range(8)]

    assert statuses == [202] * 5 + [503] * 3
    full = collect(client, purchase(shop), drain=False)
    assert (full.json(), full["Retry-After"]) == ({"error": "inbox: full, try again later"}, "60")
    assert Hit.objects.filter(site=shop).count() == 5
    assert collect(client, purchase(other), drain=False).status_code == 202


def test_the_inbox_cap_counts_hits_already_waiting_whether_the_inbox_is_small_or_large(client, shop, make_site,
                                                                                        settings):
    settings.ADSYNC_INBOX_CAP = 10
    other = make_site()
    for _ in range(4):  # a small inbox (at most half the cap): its id span bounds the site's count
        collect(client, purchase(shop), drain=False)
    limits.forget()  # another web process, which has not counted yet

    statuses = [collect(client, purchase(shop), address=f"198.51.100.{n}", drain=False).status_code for n in range(8)]

    assert statuses == [202] * 6 + [503] * 2
    for _ in range(3):  # now the inbox is larger than half the cap: each site's hits are counted
        Hit.objects.create(site=other, kind=Hit.CONVERSION, payload={})
    limits.forget()
    assert collect(client, purchase(other), drain=False).status_code == 202
    assert collect(client, purchase(shop), drain=False).status_code == 503


def test_forged_conversion_unsigned_or_mismatched_is_refused_when_the_site_takes_signed_conversions_only(
        client, shop, connection, secret):
    Site.objects.filter(pk=shop.pk).update(signed_browser_conversions=True)
    key = ApiSecret.objects.get().secret_hash
    good = api_secrets.signature(key, "S-1", Decimal("49.90"), "USD")

    unsigned = collect(client, purchase(shop, orderId="S-1", value=49.9, currency="USD"))
    tampered = collect(client, purchase(shop, orderId="S-1", value=4990, currency="USD", signature=good))
    without_order = collect(client, purchase(shop, value=49.9, signature=good))
    signed = collect(client, purchase(shop, orderId="S-1", value=49.9, currency="USD", signature=good))

    assert (unsigned.status_code, unsigned.json()) == (
        403, {"error": "signature: is required: this site accepts signed conversions only"})
    assert (tampered.status_code, tampered.json()) == (403, {"error": "signature: does not match this order"})
    assert (without_order.status_code, without_order.json()) == (
        400, {"error": "orderId: is required: this site accepts signed browser conversions only"})
    assert signed.status_code == 202
    assert list(Conversion.objects.values_list("order_id", "value")) == [("S-1", Decimal("49.900"))]


def test_a_signed_conversion_is_never_held_and_a_revoked_secret_no_longer_signs(client, shop, connection, secret):
    Site.objects.filter(pk=shop.pk).update(signed_browser_conversions=True, browser_value_ceiling=Decimal("100"))
    key = ApiSecret.objects.get().secret_hash

    collect(client, purchase(shop, orderId="S-2", value=6200, currency="USD", msclkid=REAL_CLICK,
                             signature=api_secrets.signature(key, "S-2", Decimal("6200"), "USD")))
    api_secrets.revoke(ApiSecret.objects.get())
    after = collect(client, purchase(shop, orderId="S-3", value=1, currency="USD",
                                     signature=api_secrets.signature(key, "S-3", Decimal("1"), "USD")))

    assert Push.objects.get(conversion__order_id="S-2").status == Push.QUEUED
    assert after.status_code == 403


# --- Attribution theft --------------------------------------------------------------------------------

def landing(client, shop, visitor: str, msclkid: str):
    """A landing report: the click, with its time, as the snippet reports it."""
    return collect(client, {"site": shop.key, "type": "click", "visitorId": visitor, "msclkid": msclkid,
                            "url": f"https://shop.example.com/?msclkid={msclkid}"})


def minutes_ago(minutes: int) -> str:
    return format_conversion_time(timezone.now() - timedelta(minutes=minutes))


def test_attribution_theft_a_browser_conversion_with_a_victims_email_does_not_take_their_pending_sale(
        client, shop, connection, secret, mocked):
    Click.objects.create(site=shop, visitor_id="attacker", msclkid=ATTACKER_CLICK,
                         clicked_at=timezone.now() - timedelta(hours=1))  # the attacker clicked an ad an hour ago
    api(client, secret, {"event": "purchase", "orderId": "V-1", "value": 420.5, "email": VICTIM_EMAIL,
                         "time": minutes_ago(30)})
    assert Push.objects.get().status == Push.PENDING_IDENTITY  # the victim's sale waits for their click

    collect(client, purchase(shop, orderId="X-1", value=1, msclkid=ATTACKER_CLICK, email=VICTIM_EMAIL,
                             visitorId="attacker"))
    mocked.post(APPLY_URL, **ok())
    flush_conversions()

    victim = Push.objects.get(conversion__order_id="V-1")
    assert (victim.status, victim.msclkid) == (Push.PENDING_IDENTITY, "")
    assert [item["ConversionValue"] for item in sent_to_microsoft(mocked)] == [1.0]  # only the attacker's own


def test_attribution_theft_a_forged_browser_conversion_is_not_given_the_victims_click_by_email(
        client, shop, connection, secret):
    Click.objects.create(site=shop, visitor_id="victim", msclkid=REAL_CLICK,
                         clicked_at=timezone.now() - timedelta(hours=1))  # the victim's click on the client's ad
    collect(client, purchase(shop, orderId="X-2", value=999, email=VICTIM_EMAIL))  # waits for an identity

    api(client, secret, {"event": "purchase", "orderId": "V-2", "value": 420.5, "email": VICTIM_EMAIL,
                         "msclkid": REAL_CLICK, "time": minutes_ago(10)})

    forged = Push.objects.get(conversion__order_id="X-2")
    assert (forged.status, forged.msclkid) == (Push.PENDING_IDENTITY, "")


def test_a_browser_conversion_is_matched_late_by_its_own_visitor_id(client, shop, connection):
    collect(client, purchase(shop, orderId="W-1", visitorId="visitor-7"))
    assert Push.objects.get().status == Push.PENDING_IDENTITY

    landing(client, shop, "visitor-7", REAL_CLICK)

    push = Push.objects.get()
    assert (push.status, push.msclkid) == (Push.QUEUED, REAL_CLICK)


# --- Raw PII in error reports ------------------------------------------------------------------------

def failing_inserts(execute, sql, params, many, context):
    if sql.lstrip().upper().startswith(("INSERT", "UPDATE")):
        raise RuntimeError("the disk is full")  # something nobody expected: Django reports it
    return execute(sql, params, many, context)


def error_reports() -> list[str]:
    """What Django sent to ADMINS (text and HTML), as an error tracker would receive it."""
    return [part for message in mail.outbox
            for part in [message.body, *[alt[0] for alt in getattr(message, "alternatives", [])]]]


@pytest.fixture
def reports(settings):
    settings.ADMINS = [("Ops", "ops@example.com")]
    settings.DEBUG = False
    return settings


def test_raw_pii_in_error_reports_a_failing_collect_reports_neither_email_nor_phone(reports, shop, connection):
    client = Client(raise_request_exception=False)
    body = purchase(shop, orderId="P-1", email="Customer.Name@Example.com", phone="+1 425 555 0199",
                    msclkid=REAL_CLICK)
    with db_connection.execute_wrapper(failing_inserts):
        response = client.post("/t/v1/collect", json.dumps(body), content_type="application/x-www-form-urlencoded",
                               headers={"Origin": ORIGIN})

    assert response.status_code == 500
    texts = error_reports()
    assert texts and any("the disk is full" in text for text in texts)  # the report went out, in full
    for text in texts:
        for raw in ("Customer.Name", "Example.com", "425 555 0199", "4255550199"):
            assert raw not in text


def test_raw_pii_in_error_reports_the_api_secret_is_not_in_the_bearer_checks_report(shop, secret):
    client = Client(raise_request_exception=False)
    reported = []

    def record(sender, request, **kwargs):
        exc_info = sys.exc_info()
        reporter = ExceptionReporter(request, *exc_info)
        reported.extend([reporter.get_traceback_text(), reporter.get_traceback_html()])

    def failing_lookup(execute, sql, params, many, context):
        if "secret_hash" in sql:  # the lookup of the bearer secret
            raise RuntimeError("the secrets table is gone")
        return execute(sql, params, many, context)

    from django.core.signals import got_request_exception
    got_request_exception.connect(record)
    try:
        with db_connection.execute_wrapper(failing_lookup):
            response = client.post("/api/v1/conversions", json.dumps({"event": "purchase", "email": VICTIM_EMAIL}),
                                   content_type="application/json", headers={"Authorization": f"Bearer {secret}"})
    finally:
        got_request_exception.disconnect(record)

    assert response.status_code == 500
    assert len(reported) == 2 and "bearer_site" in reported[0]  # the frame is there, its secret is not
    for text in reported:
        assert secret not in text
        assert secret[3:20] not in text


def test_raw_pii_in_error_reports_landing_urls_keep_only_origin_path_msclkid_and_utm(client, shop):
    landing = (f"https://shop.example.com/offer/shoes?email=victim%40example.org&phone=4255550199&utm_source=bing"
               f"&msclkid={REAL_CLICK}&token=reset-123#section")

    collect(client, {"site": shop.key, "type": "click", "visitorId": "v1", "msclkid": REAL_CLICK, "url": landing})

    assert Click.objects.get().landing_url == (f"https://shop.example.com/offer/shoes?utm_source=bing"
                                               f"&msclkid={REAL_CLICK}")


# --- Connection form and API secrets ------------------------------------------------------------------

def test_a_connected_connections_account_customer_and_site_cannot_be_typed_over(admin_client, site, make_site,
                                                                                connection):
    url = reverse("admin:adsync_connection_change", args=[connection.pk])
    page = admin_client.get(url).content.decode()
    data = form_fields(page)
    assert "account_id" not in data and "customer_id" not in data and "site" not in data  # shown, not editable
    other = make_site()

    admin_client.post(url, {**data, "account_id": "999999999", "customer_id": "888888888", "site": other.pk,
                            "account_number": "X999", "_save": "Save"})

    connection.refresh_from_db()
    assert (connection.account_id, connection.customer_id, connection.site_id) == ("187654321", "251234567", site.pk)


def test_the_api_secret_is_shown_once_on_its_own_page_and_never_in_a_cookie(admin_client, site):
    url = reverse("admin:adsync_site_api_secret_new", args=[site.pk])

    shown = admin_client.post(url)

    [stored] = ApiSecret.objects.filter(site=site)
    secret = form_fields(shown.content.decode())["api_secret"]
    assert api_secrets.site_for(secret) == site and stored.secret_hash != secret
    assert "no-store" in shown["Cache-Control"]
    assert all(secret not in morsel.value for morsel in shown.cookies.values())
    assert all(secret not in morsel.value for morsel in admin_client.cookies.values())
    assert secret not in admin_client.get(reverse("admin:adsync_site_change", args=[site.pk])).content.decode()


def test_rotating_the_api_secret_keeps_the_old_one_working_until_it_is_revoked(client, admin_client, site,
                                                                                connection):
    old = api_secrets.issue(site)
    new = api_secrets.issue(site)
    body = {"event": "purchase", "msclkid": REAL_CLICK}

    assert [api(client, s, body).status_code for s in (old, new)] == [201, 201]  # both, during the rotation
    refused = admin_client.post(reverse("admin:adsync_site_api_secret_new", args=[site.pk]))
    assert ApiSecret.objects.filter(site=site, revoked_at=None).count() == 2  # a third waits for a revocation
    assert refused.status_code == 302
    old_row = ApiSecret.objects.get(secret_hash=api_secrets.hash_api_secret(old))
    admin_client.post(reverse("admin:adsync_site_api_secret_revoke", args=[site.pk, old_row.pk]))

    assert [api(client, s, body).status_code for s in (old, new)] == [401, 201]


def test_only_staff_who_may_change_the_site_can_issue_or_revoke_its_secrets(client, django_user_model, site):
    from django.contrib.auth.models import Group

    from adsync.security.roles import ensure_roles
    ensure_roles()
    operator = django_user_model.objects.create_user("op", "op@example.com", "pw-123456789", is_staff=True)
    operator.groups.add(Group.objects.get(name="operators"))
    client.force_login(operator)
    secret = ApiSecret.objects.create(site=site, secret_hash="0" * 64, hint="sk_0000")

    issue = client.post(reverse("admin:adsync_site_api_secret_new", args=[site.pk]))
    revoke = client.post(reverse("admin:adsync_site_api_secret_revoke", args=[site.pk, secret.pk]))

    assert (issue.status_code, revoke.status_code) == (403, 403)
    assert ApiSecret.objects.filter(revoked_at=None).count() == 1


# --- A retried snippet call ---------------------------------------------------------------------------

def test_lost_hits_a_retried_call_without_an_order_id_is_stored_once(client, shop, connection):
    call = purchase(shop, value=12, msclkid=REAL_CLICK, idempotencyKey="b7c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5")

    first = collect(client, call, drain=False)
    collect(client, call)  # the browser never saw the first answer (a 503 after the commit, a lost reply)
    collect(client, call)  # and the worker had stored it already

    assert [first.status_code] == [202]
    assert Conversion.objects.count() == 1 and Push.objects.count() == 1
    assert Hit.objects.count() == 0


def test_lost_hits_calls_with_different_keys_are_different_conversions(client, shop, connection):
    for key in ("a" * 32, "b" * 32):
        collect(client, purchase(shop, value=12, idempotencyKey=key))

    assert Conversion.objects.count() == 2


# --- Lost API calls on a database blip -------------------------------------------------------------------

@pytest.mark.skipif(db_connection.vendor != "postgresql", reason="ends its own PostgreSQL connection")
@pytest.mark.django_db(transaction=True)
def test_lost_hits_an_api_call_whose_database_connection_drops_mid_write_is_stored_once(client, shop, connection,
                                                                                        secret):
    dropped = []

    def drop_once(execute, sql, params, many, context):
        if sql.startswith('INSERT INTO "adsync_conversion"') and not dropped:
            dropped.append(sql)
            with context["connection"].cursor() as cursor:  # what a database restart does to this connection
                cursor.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        return execute(sql, params, many, context)

    with db_connection.execute_wrapper(drop_once):
        response = api(client, secret, {"event": "purchase", "value": 12, "msclkid": REAL_CLICK})  # no order id

    assert dropped and response.status_code == 201
    assert Conversion.objects.count() == 1 and Push.objects.count() == 1


def test_lost_hits_an_api_call_the_database_does_not_answer_gets_a_503_and_stores_nothing(client, shop, secret):
    def refuse(execute, sql, params, many, context):
        if "adsync_conversion" in sql:
            raise OperationalError('connection to server at "127.0.0.1", port 5432 failed: Connection refused')
        return execute(sql, params, many, context)

    with db_connection.execute_wrapper(refuse):
        response = api(client, secret, {"event": "purchase", "orderId": "down", "msclkid": REAL_CLICK})

    assert (response.status_code, response["Retry-After"]) == (503, "10")
    assert response.json() == {"error": "service: the database is unavailable, try again later"}
    assert not Conversion.objects.exists()


def test_reading_a_conversion_back_while_the_database_does_not_answer_gets_a_503(client, shop, secret):
    def refuse(execute, sql, params, many, context):
        raise OperationalError('connection to server at "127.0.0.1", port 5432 failed: Connection refused')

    with db_connection.execute_wrapper(refuse):
        response = client.get("/api/v1/conversions/A-1", headers={"Authorization": f"Bearer {secret}"})

    assert (response.status_code, response["Retry-After"]) == (503, "10")
