"""No hit lost on a database blip: the snippet in Chromium, gunicorn in production mode, the database's connections killed.

Before, after the database dropped its connections, 9 of 20 snippet hits got a 503 and the
snippet dropped them; and a 503 after the commit could still store the row, so a retried
conversion without an order id would count twice. Here a real browser reports conversions
without order ids while this test ends every database connection of the server again and
again (pg_terminate_backend, as a database restart does), and some answers are lost on the way
back after the server stored the hit (the browser sees a network error). When the snippet's
retry queue is empty, every conversion is stored exactly once.

PostgreSQL (gunicorn shares the test database, tests/servers.py) and Debian's Chromium.
"""

from __future__ import annotations

import os
import threading
import time
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from django.db import connection as db_connection
from django.db import connections

from adsync.intake import inbox
from adsync.models import Conversion, Site
from tests import servers

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(db_connection.vendor != "postgresql", reason="gunicorn's processes need a shared database"),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's Chromium is not installed (apt-get install chromium)"),
]
sync_api = pytest.importorskip("playwright.sync_api")

APP_NAME = "adsync-blip-under-test"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CONVERSIONS = 40
LOST_ANSWER_EVERY = 4  # every 4th answer is lost on its way back to the browser, after the server stored the hit


@pytest.fixture
def adsync_server():
    env = servers.production_env(APP_NAME, WEB_CONCURRENCY="2", DATABASE_POOL_SIZE="3",
                                 ADSYNC_CLIENT_HITS_PER_MINUTE="100000", ADSYNC_LOG_LEVEL="ERROR")
    with servers.gunicorn(env) as url:
        yield url


@pytest.fixture
def shop_origin(adsync_server):
    page = (f'<!doctype html><html><head><meta charset="utf-8"><link rel="icon" href="data:,">'
            f'<script async src="{adsync_server}/t/v1/adsync.js" data-site="pk_blip"></script></head>'
            f'<body>Thanks for your order</body></html>').encode()

    class Shop(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Shop)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def browser_page():
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"  # Playwright's sync API keeps an event loop on this thread
    playwright = sync_api.sync_playwright().start()
    chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    context = chromium.new_context()
    try:
        yield context.new_page()
    finally:
        connections.close_all()  # the connection the test used beside Playwright's event loop
        context.close()
        chromium.close()
        playwright.stop()
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


class Blips:
    """Ends every database connection of the server, every `every` seconds, until stopped."""

    def __init__(self, every: float) -> None:
        self.every, self.killed, self._stop = every, 0, threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.every):
                self.killed += servers.kill_server_connections(APP_NAME)
        finally:
            connections.close_all()

    def __enter__(self) -> Blips:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def test_every_conversion_the_snippet_sent_through_database_blips_is_stored_exactly_once(adsync_server, shop_origin,
                                                                                           browser_page):
    Site.objects.create(name="Blip shop", key="pk_blip", allowed_origins=shop_origin)
    page = browser_page
    answers = {"stored_then_lost": 0, "statuses": []}
    in_flight = [0]

    def lose_some_answers(route):
        in_flight[0] += 1
        try:
            response = route.fetch()
        except Exception:  # noqa: BLE001 - the server did not answer at all: the browser sees that
            route.abort()
            return
        finally:
            in_flight[0] -= 1
        answers["statuses"].append(response.status)
        if response.status == 202 and len(answers["statuses"]) % LOST_ANSWER_EVERY == 0:
            answers["stored_then_lost"] += 1
            route.abort("connectionreset")  # stored, but the browser never hears so: it retries
        else:
            route.fulfill(response=response)

    page.route("**/t/v1/collect", lose_some_answers)
    page.goto(shop_origin + "/thanks")
    page.wait_for_function("() => window.adsync && window.adsync.loaded")

    with Blips(every=0.15) as blips:
        page.evaluate("""async (n) => {
            for (let i = 1; i <= n; i++) {
                adsync.trackConversion('purchase', {value: i, currency: 'USD'});  // no order id: only the key dedupes
                await new Promise((r) => setTimeout(r, 60));
            }
        }""", CONVERSIONS)
        page.wait_for_timeout(500)

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # the snippet's retries: after Retry-After, or a backoff of 2, 4, 8 s...
        page.wait_for_timeout(500)
        waiting = page.evaluate("() => JSON.parse(localStorage.getItem('adsync_retry') || '[]').length")
        if waiting == 0 and in_flight[0] == 0:
            page.wait_for_timeout(300)
            if page.evaluate("() => JSON.parse(localStorage.getItem('adsync_retry') || '[]').length") == 0:
                break
    else:
        pytest.fail("the snippet's retry queue never emptied")

    inbox.drain()
    stored = sorted(Conversion.objects.values_list("value", flat=True))
    assert blips.killed > 0 and answers["stored_then_lost"] > 0  # the blips and the lost answers did happen
    assert stored == [Decimal(i) for i in range(1, CONVERSIONS + 1)]  # each once: none lost, none twice
