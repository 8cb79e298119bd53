"""Consent in a real browser (Debian's Chromium through Playwright): without ad storage consent the
snippet sets no cookie and reports no click, and a conversion arrives as a count only, kept as
skipped_no_consent; consent given later on the landing page keeps the click it landed with.

The shop pages here differ from tests/tracking/test_browser.py's in the tag (data-consent) and in what
the page does before it (Microsoft UET's consent queue); the browser and tab fixtures are shared.
"""

from __future__ import annotations

import json

import pytest

from adsync.intake import inbox
from adsync.models import Click, Connection, Conversion, GoalMapping, Push, Site
from tests.tracking import test_browser as shared  # skips this module too when Chromium is missing
from tests.tracking.test_browser import MSCLKID, Tab, no_errors

# The real-browser fixtures, shared with tests/tracking/test_browser.py.
database_calls_beside_playwright, browser, tab = shared.database_calls_beside_playwright, shared.browser, shared.tab

pytestmark = pytest.mark.django_db(transaction=True)

KEY = "pk_consent"
EMAIL = "customer@example.com"

# Before the tag: what a consent platform with UET consent mode writes (docs/microsoft-api.md#uet-consent-mode).
UET = {
    "": "",
    "uet-denied": "window.uetq = window.uetq || []; window.uetq.push('consent', 'default', {ad_storage: 'denied'});",
    "uet-granted": "window.uetq = window.uetq || []; window.uetq.push('consent', 'default', {ad_storage: 'denied'});"
                   "window.uetq.push('consent', 'update', {ad_storage: 'granted'});",
}
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>Shop</title>
<script>{uet}</script>
<script async src="{adsync}/t/v1/adsync.js" data-site="{key}" {consent}></script>
</head><body><h1>A shop</h1></body></html>
"""


SHOP, ADSYNC = "http://shop.test", "http://adsync.test"


@pytest.fixture
def consent_shop(live_server, tab) -> str:
    """The shop's pages /<required|optional>/<uet mode>/... on their own origin: the tag with or without
    data-consent="required", after UET's consent queue or not. Both hosts are Playwright routes (as in
    test_browser.py's https test): adsync's to the live server, unchanged."""
    def page(route):
        parts = route.request.url.removeprefix(SHOP).split("?")[0].split("/")
        consent = 'data-consent="required"' if parts[1] == "required" else ""
        uet = UET.get(parts[2] if len(parts) > 2 else "", "")
        route.fulfill(status=200, content_type="text/html",
                      body=PAGE.format(adsync=ADSYNC, key=KEY, consent=consent, uet=uet))

    tab.page.route(f"{SHOP}/**", page)
    tab.page.route(f"{ADSYNC}/**", lambda route: route.fulfill(
        response=route.fetch(url=live_server.url + route.request.url.removeprefix(ADSYNC))))
    return SHOP


@pytest.fixture
def shop(consent_shop) -> Site:
    site = Site.objects.create(name="Consent shop", key=KEY, allowed_origins=consent_shop, consent_required=True)
    connection = Connection.objects.create(site=site, status=Connection.ACTIVE, account_id="187654321")
    GoalMapping.objects.create(connection=connection, event_name="purchase", goal_name="Purchase")
    return site


def open_page(tab: Tab, url: str) -> None:
    tab.page.goto(url)
    tab.page.wait_for_function("() => window.adsync && window.adsync.loaded")
    tab.page.wait_for_timeout(300)  # a click report, if the snippet made one, has left by now


def adsync_cookies(tab: Tab) -> list[str]:
    return sorted(c["name"] for c in tab.context.cookies() if c["name"].startswith("adsync"))


def collect_bodies(tab: Tab) -> list[dict]:
    return [json.loads(body) for url, body in tab.requests if url.endswith("/t/v1/collect") and body]


def track(tab: Tab, who: dict | None = None) -> dict | None:
    answer = tab.page.evaluate("(w) => adsync.trackConversion('purchase', {orderId: 'C-1', value: 20}, w)", who or {})
    inbox.drain()
    return answer


def test_without_an_answer_yet_the_snippet_sets_no_cookie_and_reports_no_click(tab, consent_shop, shop):
    open_page(tab, f"{consent_shop}/required/?msclkid={MSCLKID}")

    assert adsync_cookies(tab) == []
    assert collect_bodies(tab) == []
    assert not Click.objects.exists()
    assert no_errors(tab)


def test_a_denied_visitors_conversion_is_kept_as_skipped_no_consent_without_any_identifier(tab, consent_shop, shop):
    open_page(tab, f"{consent_shop}/required/?msclkid={MSCLKID}")
    tab.page.evaluate("() => adsync.consent({adStorage: 'denied'})")

    answer = track(tab, {"email": EMAIL})

    assert answer == {"ok": True, "accepted": "conversion"}
    [sent] = collect_bodies(tab)
    assert sent["consent"] == {"adStorage": "denied"}
    assert not {"msclkid", "visitorId", "email"} & {k for k, v in sent.items() if v}
    conversion = Conversion.objects.get()
    assert (conversion.consent, conversion.msclkid, conversion.visitor_id, conversion.hashed_email) == (
        "denied", "", "", "")
    push = Push.objects.get()
    assert (push.status, push.error_symbol) == (Push.SKIPPED_NO_CONSENT, "adsync:no_consent")
    assert adsync_cookies(tab) == []
    assert no_errors(tab)


def test_consent_given_on_the_landing_page_keeps_the_click_it_landed_with(tab, consent_shop, shop):
    open_page(tab, f"{consent_shop}/required/?msclkid={MSCLKID}")

    with tab.page.expect_response(lambda r: r.url.endswith("/t/v1/collect")) as report:
        tab.page.evaluate("() => adsync.consent({adStorage: 'granted'})")
    assert report.value.status == 202
    inbox.drain()
    track(tab)

    assert adsync_cookies(tab) == ["adsync_msclkid", "adsync_vid"]
    click = Click.objects.get()
    assert (click.msclkid, click.visitor_id) == (MSCLKID, tab.cookie("adsync_vid")["value"])
    conversion = Conversion.objects.get()
    assert (conversion.consent, conversion.msclkid) == ("granted", MSCLKID)
    assert Push.objects.get().status == Push.QUEUED
    assert no_errors(tab)


def test_withdrawing_consent_deletes_adsyncs_cookies(tab, consent_shop, shop):
    Site.objects.filter(pk=shop.pk).update(consent_required=False)
    open_page(tab, f"{consent_shop}/optional/?msclkid={MSCLKID}")
    assert adsync_cookies(tab) == ["adsync_msclkid", "adsync_vid"]  # a site without consent mode: as before

    tab.page.evaluate("() => adsync.consent({adStorage: 'denied'})")
    track(tab)

    assert adsync_cookies(tab) == []
    assert Push.objects.get().status == Push.SKIPPED_NO_CONSENT
    assert no_errors(tab)


def test_without_ad_user_data_consent_email_and_phone_are_not_sent(tab, consent_shop, shop):
    open_page(tab, f"{consent_shop}/required/?msclkid={MSCLKID}")
    tab.page.evaluate("() => adsync.consent({adStorage: 'granted', adUserData: 'denied'})")

    track(tab, {"email": EMAIL, "phone": "+14255551234"})

    assert not any(EMAIL in body or "4255551234" in body for _, body in tab.requests)
    conversion = Conversion.objects.get()
    assert (conversion.msclkid, conversion.hashed_email, conversion.hashed_phone) == (MSCLKID, "", "")
    assert no_errors(tab)


def test_uets_queued_default_denied_is_obeyed_without_data_consent(tab, consent_shop, shop):
    open_page(tab, f"{consent_shop}/optional/uet-denied/?msclkid={MSCLKID}")

    track(tab)

    assert adsync_cookies(tab) == [] and not Click.objects.exists()
    assert collect_bodies(tab)[0]["consent"] == {"adStorage": "denied"}
    assert Push.objects.get().status == Push.SKIPPED_NO_CONSENT
    assert no_errors(tab)


def test_uets_queued_update_to_granted_lets_the_snippet_store_the_click(tab, consent_shop, shop):
    with tab.page.expect_response(lambda r: r.url.endswith("/t/v1/collect")):
        tab.page.goto(f"{consent_shop}/required/uet-granted/?msclkid={MSCLKID}")
    inbox.drain()

    assert adsync_cookies(tab) == ["adsync_msclkid", "adsync_vid"]
    assert Click.objects.get().msclkid == MSCLKID
    assert no_errors(tab)


def test_consent_queued_before_the_tag_loaded_applies_in_order(tab, consent_shop, shop):
    tab.page.add_init_script("""
        window.adsync = {q: []};
        adsync.consent = function (c) { adsync.q.push({consent: c}); };
        adsync.trackConversion = function () { adsync.q.push(arguments); };
        adsync.consent({adStorage: 'granted'});
        adsync.trackConversion('purchase', {orderId: 'C-2'});
    """)
    open_page(tab, f"{consent_shop}/required/?msclkid={MSCLKID}")
    inbox.drain()

    conversion = Conversion.objects.get()
    assert (conversion.order_id, conversion.consent, conversion.msclkid) == ("C-2", "granted", MSCLKID)
    assert Click.objects.get().msclkid == MSCLKID
    assert no_errors(tab)
