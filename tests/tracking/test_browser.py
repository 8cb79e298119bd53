"""The snippet in a real browser: Debian's Chromium, headless, driven by Playwright.

The customer's shop is served from its own origin (a tiny http.server on 127.0.0.1) and embeds the
snippet from adsync (pytest-django's live_server, on localhost): a real cross-origin setup, as on a
customer's site. The end-to-end tests at the bottom go on to the flush and the built-in Microsoft
emulator. Skipped when /usr/bin/chromium is missing (`python3 dev.py test` installs it with apt-get;
nothing downloads a browser).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("Debian's Chromium is not installed (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")

from adsync.intake import inbox  # noqa: E402
from adsync.intake.identity import hash_email, hash_phone  # noqa: E402
from adsync.jobs import run_flush as flush_conversions  # noqa: E402
from adsync.models import Click, Connection, Conversion, GoalMapping, Push, Site  # noqa: E402
from emulator.demo import ACCOUNT_ID  # noqa: E402
from emulator.demo_site import ensure_demo_site  # noqa: E402
from emulator.models import EmulatorAccount, EmulatorClick, EmulatorConversion  # noqa: E402
from tracking import views  # noqa: E402

pytestmark = pytest.mark.django_db(transaction=True)

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOP_KEY = "pk_browser"
MSCLKID = "f894f652ea334e739002f7167ab8f8e3"
OTHER_MSCLKID = "0c6e1a7a9d8b4f3e8a2b5c4d3e2f1a0b"
UET_CLICK = "b4458f42c1b214060f81e89d7a9da3bb"
EMAIL, PHONE = "Customer.Name+shop@Example.com", "+1 425 555 1234"
NINETY_DAYS = 90 * 86400


# --- The customer's shop, on its own origin ---------------------------------------------------------

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>Shop</title>
<script>
  window.marks = [];
  document.addEventListener('DOMContentLoaded', function () {{
    marks.push('DOMContentLoaded, snippet ' + (window.adsync && window.adsync.loaded ? 'loaded' : 'not loaded'));
  }});
</script>
<script async src="{adsync}/t/v1/adsync.js" data-site="{key}"></script>
</head><body><h1>A shop</h1><p>Shoes and more.</p></body></html>
"""


def shop_page(adsync: str, key: str) -> bytes:
    return PAGE.format(adsync=adsync, key=key).encode()


@dataclass
class ShopServer:
    origin: str
    server: ThreadingHTTPServer

    def url(self, key: str, path: str = "/") -> str:
        """A page of the shop whose snippet tag carries site key `key`."""
        return f"{self.origin}/{key}{path}"


@pytest.fixture(scope="module")
def shop_server(live_server):
    """Every path /<site key>/... is a shop page embedding the snippet for that key."""
    adsync = live_server.url

    class Shop(BaseHTTPRequestHandler):
        def do_GET(self):
            body = shop_page(adsync, self.path.split("/")[1])
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Shop)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield ShopServer(f"http://127.0.0.1:{server.server_address[1]}", server)
    server.shutdown()
    server.server_close()


# --- The browser -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module", autouse=True)
def database_calls_beside_playwright():
    """Playwright's sync API keeps an event loop on this thread, which Django takes for an async context."""
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    yield
    if previous is None:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture(scope="module")
def browser(database_calls_beside_playwright):
    playwright = sync_api.sync_playwright().start()
    chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    yield chromium
    chromium.close()
    playwright.stop()


@dataclass
class Tab:
    """A fresh browser profile with one page, and what the page reported on its console."""

    context: object
    page: object
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)

    def cookie(self, name: str) -> dict | None:
        return next((c for c in self.context.cookies() if c["name"] == name), None)

    def land(self, url: str) -> None:
        """Open `url`, wait for the snippet's click report to be accepted, and let the worker store it."""
        with self.page.expect_response(lambda r: r.url.endswith("/t/v1/collect")) as report:
            self.page.goto(url)
        assert report.value.status == 202
        inbox.drain()

    def track(self, event: str, data: dict | None = None, who: dict | None = None):
        """adsync.trackConversion(...) in the page, then the worker's inbox run; the Promise's value."""
        answer = self.page.evaluate("([e, d, w]) => adsync.trackConversion(e, d, w)", [event, data or {}, who or {}])
        inbox.drain()
        return answer


@pytest.fixture
def tab(browser):
    context = browser.new_context()
    page = context.new_page()
    opened = Tab(context, page)
    page.on("console", lambda m: opened.console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: opened.page_errors.append(str(e)))
    page.on("request", lambda r: opened.requests.append((r.url, r.post_data or "")))
    yield opened
    context.close()


@pytest.fixture
def shop(shop_server) -> Site:
    """The customer's site, allowing the shop's origin, with a goal for "purchase"."""
    site = Site.objects.create(name="Browser shop", key=SHOP_KEY, allowed_origins=shop_server.origin)
    connection = Connection.objects.create(site=site, status=Connection.ACTIVE, account_id="187654321")
    GoalMapping.objects.create(connection=connection, event_name="purchase", goal_name="Purchase")
    return site


def no_errors(tab: Tab) -> bool:
    return tab.console_errors == [] and tab.page_errors == []


# --- The click cookie -------------------------------------------------------------------------------------

def test_a_landing_with_msclkid_keeps_it_90_days_in_a_first_party_cookie_and_reports_the_click(tab, shop_server,
                                                                                              shop):
    tab.land(shop_server.url(SHOP_KEY, f"/shoes?utm_source=bing&msclkid={MSCLKID}"))

    cookie = tab.cookie("adsync_msclkid")
    assert cookie["value"] == MSCLKID
    assert cookie["domain"] == "127.0.0.1"  # the shop's own host: first party
    assert abs(cookie["expires"] - time.time() - NINETY_DAYS) < 86400
    assert (cookie["sameSite"], cookie["secure"], cookie["path"]) == ("Lax", False, "/")  # http: not Secure
    click = Click.objects.get()
    assert (click.site, click.msclkid, click.visitor_id) == (shop, MSCLKID, tab.cookie("adsync_vid")["value"])
    assert click.landing_url.endswith(f"/shoes?utm_source=bing&msclkid={MSCLKID}")
    assert no_errors(tab)


def test_over_https_the_click_cookie_is_also_secure(tab, live_server, shop):
    """An https shop and adsync, answered through Playwright routes (no certificates): the real snippet and views."""
    Site.objects.filter(pk=shop.pk).update(allowed_origins="https://shop.test")
    tab.page.route("https://shop.test/**", lambda route: route.fulfill(
        status=200, content_type="text/html", body=shop_page("https://adsync.test", SHOP_KEY)))
    tab.page.route("https://adsync.test/**", lambda route: route.fulfill(
        response=route.fetch(url=live_server.url + urlsplit(route.request.url).path)))

    tab.land(f"https://shop.test/?msclkid={MSCLKID}")

    cookie = tab.cookie("adsync_msclkid")
    assert (cookie["value"], cookie["secure"], cookie["sameSite"]) == (MSCLKID, True, "Lax")
    assert tab.cookie("adsync_vid")["secure"] is True
    assert Click.objects.get().msclkid == MSCLKID
    assert no_errors(tab)


def test_a_later_page_without_the_parameter_attributes_the_conversion_to_the_stored_click(tab, shop_server, shop):
    tab.land(shop_server.url(SHOP_KEY, f"/?msclkid={MSCLKID}"))
    tab.page.goto(shop_server.url(SHOP_KEY, "/checkout/thanks"))

    answer = tab.track("purchase", {"orderId": "A-1001", "value": 49.9, "currency": "USD"})

    assert answer == {"ok": True, "accepted": "conversion"}
    conversion = Conversion.objects.get()
    assert (conversion.order_id, conversion.msclkid, conversion.value) == ("A-1001", MSCLKID, Decimal("49.900"))
    assert conversion.click_time == Click.objects.get().clicked_at
    assert no_errors(tab)


def test_a_landing_with_a_new_msclkid_replaces_the_stored_one(tab, shop_server, shop):
    tab.land(shop_server.url(SHOP_KEY, f"/?msclkid={MSCLKID}"))
    tab.land(shop_server.url(SHOP_KEY, f"/sale?msclkid={OTHER_MSCLKID}"))
    tab.page.goto(shop_server.url(SHOP_KEY, "/checkout"))

    tab.track("purchase", {"orderId": "A-1002"})

    assert tab.cookie("adsync_msclkid")["value"] == OTHER_MSCLKID
    assert set(Click.objects.values_list("msclkid", flat=True)) == {MSCLKID, OTHER_MSCLKID}
    assert Conversion.objects.get().msclkid == OTHER_MSCLKID
    assert no_errors(tab)


def test_uets_own_click_cookie_is_the_fallback(tab, shop_server, shop):
    tab.context.add_cookies([{"name": "_uetmsclkid", "value": f"_uet{UET_CLICK}", "url": shop_server.origin}])
    tab.page.goto(shop_server.url(SHOP_KEY, "/checkout"))

    answer = tab.track("purchase", {"orderId": "A-1003"})

    assert answer == {"ok": True, "accepted": "conversion"}
    assert Conversion.objects.get().msclkid == UET_CLICK
    assert tab.cookie("adsync_msclkid") is None  # only read, never copied into our cookie
    assert no_errors(tab)


# --- Personal data ------------------------------------------------------------------------------------------

def test_raw_email_and_phone_travel_only_in_the_ingest_call_and_never_reach_the_database(tab, shop_server, shop):
    tab.land(shop_server.url(SHOP_KEY, f"/?msclkid={MSCLKID}"))

    tab.track("purchase", {"orderId": "A-1004", "value": 10}, {"email": EMAIL, "phone": PHONE})

    carrying = [url for url, body in tab.requests if EMAIL in body or PHONE in body]
    assert len(carrying) == 1 and carrying[0].endswith("/t/v1/collect")  # hashing is adsync's, server-side
    assert not any(EMAIL in url or "4255551234" in url.replace("%20", "") for url, _ in tab.requests)
    conversion = Conversion.objects.get()
    assert (conversion.hashed_email, conversion.hashed_phone) == (hash_email(EMAIL), hash_phone(PHONE, "US"))
    for row in [conversion, *Push.objects.all(), *Click.objects.all()]:
        for column in row._meta.concrete_fields:
            stored = str(getattr(row, column.attname)).lower()
            assert "example.com" not in stored and "4255551234" not in stored, (type(row).__name__, column.name)
    assert no_errors(tab)


# --- Never in the way of the page ---------------------------------------------------------------------------

def test_the_tag_loads_asynchronously_and_never_holds_up_the_page(tab, shop_server, shop):
    held = []
    tab.page.route("**/t/v1/adsync.js", lambda route: held.append(route))  # answered when we release it

    tab.page.goto(shop_server.url(SHOP_KEY, "/"), wait_until="domcontentloaded")
    while_held = tab.page.evaluate("() => [document.readyState, typeof window.adsync, window.marks]")
    for _ in range(100):  # the route event may reach Python just after the evaluate's answer
        if held:
            break
        tab.page.wait_for_timeout(20)
    held[0].continue_()
    tab.page.wait_for_function("() => window.adsync && window.adsync.loaded")

    assert while_held == ["interactive", "undefined", ["DOMContentLoaded, snippet not loaded"]]
    assert tab.page.evaluate("typeof adsync.trackConversion") == "function"
    assert no_errors(tab)


def test_the_snippet_is_under_8_kb_as_served(tab, shop_server, shop):
    with tab.page.expect_response(lambda r: r.url.endswith("/t/v1/adsync.js")) as served:
        tab.page.goto(shop_server.url(SHOP_KEY, "/"))

    size = len(served.value.body())
    assert size == len(views.snippet_source()) and size < 8 * 1024  # unminified (3.3 KB gzipped)


def test_with_the_ingest_endpoint_down_track_conversion_resolves_to_null_and_the_page_carries_on(tab, shop_server,
                                                                                               shop):
    tab.page.route("**/t/v1/collect", lambda route: route.abort())
    tab.page.goto(shop_server.url(SHOP_KEY, f"/?msclkid={MSCLKID}"))  # the click report fails too

    outcome = tab.page.evaluate("""async () => {
        const answer = await adsync.trackConversion('purchase', {orderId: 'A-1005'}, {email: 'a@example.com'});
        window.pageCarriedOn = true;
        return [answer, window.pageCarriedOn];
    }""")

    assert outcome == [None, True]
    assert tab.page_errors == []
    # Chromium logs each failed request itself ("Failed to load resource: net::ERR_FAILED"); nothing else.
    assert [text for text in tab.console_errors if not text.startswith("Failed to load resource: net::")] == []
    assert tab.cookie("adsync_msclkid")["value"] == MSCLKID  # kept for the next page
    assert (Click.objects.count(), Conversion.objects.count()) == (0, 0)


# --- The whole spine: browser -> adsync -> flush -> Microsoft (the built-in emulator) ----------------------

@pytest.fixture
def spine(live_server, settings, shop_server) -> Site:
    """The demo site connected to the emulator over real HTTP, allowing the shop's origin."""
    base = live_server.url + "/emulator"
    settings.MICROSOFT_ADS_ENVIRONMENT = "emulator"
    settings.MICROSOFT_ADS_CAMPAIGN_API_URL = base + "/campaign"
    settings.MICROSOFT_ADS_CUSTOMER_API_URL = base + "/clientcenter"
    settings.MICROSOFT_ADS_REPORTING_API_URL = base + "/reporting"
    settings.MICROSOFT_ADS_OAUTH_AUTHORIZE_URL = base + "/oauth2/v2.0/authorize"
    settings.MICROSOFT_ADS_OAUTH_TOKEN_URL = base + "/oauth2/v2.0/token"
    settings.MICROSOFT_ADS_TIMEOUT = 10
    settings.ADSYNC_CLICK_HOLD_MINUTES = 0
    site = ensure_demo_site()
    site.allowed_origins += "\n" + shop_server.origin
    site.save(update_fields=["allowed_origins"])
    return site


def buy(tab: Tab, shop_server: ShopServer, site: Site, landing: str, order: str) -> dict:
    url = shop_server.url(site.key, landing)
    if "msclkid=" in landing:
        tab.land(url)
    else:
        tab.page.goto(url)
    return tab.track("purchase", {"orderId": order, "value": 49.9, "currency": "USD"})


def test_a_click_microsoft_knows_ends_sent(tab, shop_server, spine):
    click = EmulatorClick.objects.create(account=EmulatorAccount.objects.get(account_id=ACCOUNT_ID))

    answer = buy(tab, shop_server, spine, f"/?msclkid={click.msclkid}", "E2E-1")
    flush_conversions()

    assert answer == {"ok": True, "accepted": "conversion"}
    push = Push.objects.get(conversion__order_id="E2E-1")
    assert (push.status, push.msclkid, push.error_message) == (Push.SENT, click.msclkid, "")
    assert EmulatorConversion.objects.filter(msclkid=click.msclkid).exists()
    assert no_errors(tab)


def test_microsofts_test_click_ends_in_error_with_its_message_verbatim(tab, shop_server, spine):
    buy(tab, shop_server, spine, "/?msclkid=test_msclkid_123", "E2E-2")
    flush_conversions()

    push = Push.objects.get(conversion__order_id="E2E-2")
    assert (push.status, push.error_code) == (Push.ERROR, 5604), (push.error_symbol, push.error_message)
    assert push.error_message == "The Microsoft Click Id of the offline conversion is invalid."
    assert no_errors(tab)


def test_without_any_click_the_conversion_waits_for_an_identity(tab, shop_server, spine):
    buy(tab, shop_server, spine, "/checkout", "E2E-3")
    flush_conversions()

    assert Push.objects.get(conversion__order_id="E2E-3").status == Push.PENDING_IDENTITY
    assert not EmulatorConversion.objects.exists()
    assert no_errors(tab)
