"""The embeddable snippet (served headers, size) and its behaviour, plus the demo shop page.

The behaviour tests run adsync.js in Node against a small fake page (cookie jar, location,
fetch); they are skipped where Node is not installed. A real-browser test lives elsewhere.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from adsync.models import Site
from tracking import views

pytestmark = pytest.mark.django_db

SNIPPET = Path(views.SNIPPET_PATH)
MSCLKID = "f894f652ea334e739002f7167ab8f8e3"
_seq = itertools.count(1)


@pytest.fixture
def make_shop(db):
    def make(**kwargs) -> Site:
        n = next(_seq)
        defaults = {"name": f"Snippet shop {n}", "key": f"pk_snip{n}", "allowed_origins": "http://testserver"}
        return Site.objects.create(**{**defaults, **kwargs})
    return make


# --- Serving -------------------------------------------------------------------------------------

def test_the_snippet_is_served_as_cacheable_javascript_for_any_origin(client):
    response = client.get("/t/v1/adsync.js")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/javascript"
    assert response["Cache-Control"] == "public, max-age=3600"
    assert response["Access-Control-Allow-Origin"] == "*"
    assert response.content == SNIPPET.read_bytes()
    assert not response.cookies


def test_the_snippet_file_is_read_once(client):
    views.snippet_source.cache_clear()
    client.get("/t/v1/adsync.js")
    client.get("/t/v1/adsync.js")

    assert views.snippet_source.cache_info().misses == 1


def test_the_snippet_is_small_ascii_and_never_logs_errors():
    source = SNIPPET.read_bytes()

    assert len(source) < 8 * 1024  # unminified (about 3.3 KB gzipped), so minified is smaller still
    assert source.isascii()
    text = source.decode()
    assert "console.error" not in text and "console.log" not in text and "console.warn" not in text


def test_the_snippet_only_answers_get(client):
    assert client.post("/t/v1/adsync.js").status_code == 405


# --- Behaviour, in Node against a fake page --------------------------------------------------------

# Runs the snippet in a fake page described by a JSON scenario and prints what happened.
HARNESS = r"""
const fs = require('fs');
const cfg = JSON.parse(process.argv[2]);
const src = fs.readFileSync(cfg.snippet, 'utf8');
const jar = Object.assign({}, cfg.cookies || {});
const writes = [], calls = [], debugs = [], errors = [];
const script = { src: cfg.src, getAttribute: (n) => (n === 'data-site' ? cfg.site
                                                    : n === 'data-consent' ? (cfg.consentAttr || null) : null) };
const document = {
  get cookie() {
    if (cfg.cookiesThrow) throw new Error('SecurityError');
    return Object.entries(jar).map(([k, v]) => k + '=' + v).join('; ');
  },
  set cookie(text) {
    if (cfg.cookiesThrow) throw new Error('SecurityError');
    writes.push(text);
    const pair = text.split(';')[0], i = pair.indexOf('=');
    jar[pair.slice(0, i).trim()] = pair.slice(i + 1);
  },
  currentScript: cfg.noCurrentScript ? null : script,
  querySelector: (selector) => (cfg.findBySelector && selector.includes('data-site') ? script : null),
};
const location = new URL(cfg.url);
const answer = cfg.answer === undefined ? { ok: true } : cfg.answer;
const replies = (cfg.replies || []).slice();  // [{status, retryAfter, json}] or "rejects", one per call, then `answer`
const started = Date.now();
const fetch = cfg.fetch === 'missing' ? undefined : function (url, init) {
  calls.push({ url, method: init.method, keepalive: init.keepalive, credentials: init.credentials,
               headers: init.headers, body: JSON.parse(init.body), at: Date.now() - started });
  if (cfg.fetch === 'throws') throw new TypeError('fetch exploded');
  if (cfg.fetch === 'rejects') return Promise.reject(new TypeError('Failed to fetch'));
  if (cfg.fetch === 'html') return Promise.resolve({ json: () => Promise.reject(new SyntaxError('not JSON')) });
  const reply = replies.length ? replies.shift() : null;
  if (reply === 'rejects') return Promise.reject(new TypeError('Failed to fetch'));
  if (reply) return Promise.resolve({ status: reply.status, headers: { get: (n) => (n === 'Retry-After' ?
    (reply.retryAfter === undefined ? null : String(reply.retryAfter)) : null) },
    json: () => Promise.resolve(reply.json || { error: 'x' }) });
  return Promise.resolve({ status: 202, headers: { get: () => null }, json: () => Promise.resolve(answer) });
};
const storage = Object.assign({}, cfg.storage || {});
const localStorage = { getItem: (k) => (k in storage ? storage[k] : null), setItem: (k, v) => { storage[k] = String(v); },
                       removeItem: (k) => { delete storage[k]; } };
const console = { debug: (...a) => debugs.push(a.join(' ')), error: (...a) => errors.push(a.join(' ')),
                  warn: (...a) => errors.push(a.join(' ')), log: (...a) => errors.push(a.join(' ')) };
const window = cfg.noStorage ? {} : { localStorage };
if (cfg.preQueue) {
  window.adsync = window.adsync || { q: [] };
  window.adsync.trackConversion = window.adsync.trackConversion || function () { window.adsync.q.push(arguments); };
  for (const args of cfg.preQueue) window.adsync.trackConversion(...args);
}
process.on('unhandledRejection', (e) => { errors.push('unhandled rejection: ' + e); });
(async () => {
  let thrown = null;
  try {
    new Function('window', 'document', 'location', 'fetch', 'console', src)(window, document, location, fetch, console);
  } catch (e) { thrown = String(e); }
  const results = [];
  for (const args of cfg.calls || []) results.push(await window.adsync.trackConversion(...args));
  if (cfg.lateQueue) for (const args of cfg.lateQueue) window.adsync.q.push(args);
  await new Promise((r) => setTimeout(r, cfg.waitMs || 10));
  process.stdout.write(JSON.stringify({ thrown, results, calls, writes, jar, debugs, errors, storage }));
  process.exit(0);  // retries still scheduled are the next page's
})();
"""

NODE = shutil.which("node")
needs_node = pytest.mark.skipif(NODE is None, reason="Node.js is not installed")


def run_page(tmp_path, **scenario) -> dict:
    harness = tmp_path / "harness.js"
    harness.write_text(HARNESS)
    cfg = {"snippet": str(SNIPPET), "src": "https://adsync.example/t/v1/adsync.js", "site": "pk_demo",
           "url": "https://shop.example.com/", **scenario}
    done = subprocess.run([NODE, str(harness), json.dumps(cfg)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def cookie_write(page: dict, name: str) -> str:
    return next(w for w in page["writes"] if w.startswith(name + "="))


@needs_node
def test_a_landing_with_msclkid_stores_it_for_90_days_and_reports_the_click(tmp_path):
    url = f"https://shop.example.com/shoes?utm_source=bing&msclkid={MSCLKID}#top"
    page = run_page(tmp_path, url=url)

    assert page["thrown"] is None and page["errors"] == []
    written = cookie_write(page, "adsync_msclkid")
    assert written.startswith(f"adsync_msclkid={MSCLKID};")
    for attribute in ("max-age=7776000", "path=/", "SameSite=Lax", "Secure"):
        assert attribute in written
    vid = page["jar"]["adsync_vid"]
    assert re.fullmatch(r"[0-9a-f]{32}", vid)
    assert "max-age=7776000" in cookie_write(page, "adsync_vid")
    [call] = page["calls"]
    assert call["url"] == "https://adsync.example/t/v1/collect"
    assert (call["method"], call["keepalive"], call["credentials"]) == ("POST", True, "omit")
    assert call["headers"] == {"Content-Type": "text/plain"}
    assert re.fullmatch(r"[0-9a-f]{32}", call["body"].pop("idempotencyKey"))
    assert call["body"] == {"type": "click", "msclkid": MSCLKID, "url": url, "site": "pk_demo", "visitorId": vid}


@needs_node
def test_an_http_page_gets_no_secure_cookie_and_the_value_keeps_its_case(tmp_path):
    page = run_page(tmp_path, url="http://shop.example.com/?MSCLKID=AbC-123_x")

    written = cookie_write(page, "adsync_msclkid")
    assert written.startswith("adsync_msclkid=AbC-123_x;")
    assert "Secure" not in written


@needs_node
def test_the_same_msclkid_again_is_not_reported_twice(tmp_path):
    page = run_page(tmp_path, url=f"https://shop.example.com/?msclkid={MSCLKID}",
                    cookies={"adsync_msclkid": MSCLKID, "adsync_vid": "known-visitor"})

    assert page["calls"] == []
    assert page["jar"]["adsync_vid"] == "known-visitor"


@needs_node
def test_a_malformed_msclkid_is_ignored(tmp_path):
    page = run_page(tmp_path, url="https://shop.example.com/?msclkid=%3Cscript%3E")

    assert page["calls"] == []
    assert "adsync_msclkid" not in page["jar"]


@needs_node
def test_track_conversion_posts_the_stored_click_and_visitor_and_resolves_to_the_answer(tmp_path):
    answer = {"ok": True, "created": True, "pushes": [{"status": "queued"}]}
    page = run_page(tmp_path, cookies={"adsync_msclkid": MSCLKID, "adsync_vid": "v1"}, answer=answer, calls=[
        ["purchase", {"orderId": "A-1", "value": 49.9, "currency": "USD"},
         {"email": "customer@example.com", "phone": "+14255551234"}],
    ])

    assert page["results"] == [answer]
    assert re.fullmatch(r"[0-9a-f]{32}", page["calls"][0]["body"].pop("idempotencyKey"))
    assert page["calls"][0]["body"] == {
        "type": "conversion", "event": "purchase", "orderId": "A-1", "value": 49.9, "currency": "USD",
        "msclkid": MSCLKID, "email": "customer@example.com", "phone": "+14255551234",
        "site": "pk_demo", "visitorId": "v1",
    }


@needs_node
def test_a_numeric_string_value_is_sent_as_a_number(tmp_path):
    page = run_page(tmp_path, calls=[["purchase", {"value": "49.90"}]])

    assert page["calls"][0]["body"]["value"] == 49.9


@needs_node
def test_uets_cookie_is_the_fallback_click_id_without_its_prefix(tmp_path):
    page = run_page(tmp_path, cookies={"_uetmsclkid": "_uetb4458f42c1b214060f81e89d7a9da3bb"},
                    calls=[["lead", {"orderId": 7}]])

    assert page["calls"][0]["body"]["msclkid"] == "b4458f42c1b214060f81e89d7a9da3bb"


@needs_node
def test_without_any_click_id_msclkid_is_null(tmp_path):
    page = run_page(tmp_path, calls=[["signup"]])

    body = page["calls"][0]["body"]
    assert body["msclkid"] is None
    assert (body["type"], body["event"]) == ("conversion", "signup")


@needs_node
def test_calls_queued_before_load_are_replayed_and_later_pushes_go_straight_out(tmp_path):
    page = run_page(tmp_path, url=f"https://shop.example.com/?msclkid={MSCLKID}",
                    preQueue=[["purchase", {"orderId": "early"}]], lateQueue=[["lead", {"orderId": "late"}]])

    kinds = [(c["body"]["type"], c["body"].get("orderId")) for c in page["calls"]]
    assert kinds == [("click", None), ("conversion", "early"), ("conversion", "late")]
    assert page["calls"][1]["body"]["msclkid"] == MSCLKID


@needs_node
@pytest.mark.parametrize("failure", ["rejects", "throws", "html", "missing"])
def test_a_failing_endpoint_resolves_to_null_without_an_error_in_the_page(tmp_path, failure):
    page = run_page(tmp_path, fetch=failure, url=f"https://shop.example.com/?msclkid={MSCLKID}",
                    calls=[["purchase", {"orderId": "A-1"}]])

    assert page["thrown"] is None
    assert page["results"] == [None]
    assert page["errors"] == []  # no console.error, no unhandled rejection
    assert page["debugs"]


# --- Retries: a call that failed is sent again, once it may be, and stored once ----------------------------

def retry_queue(page: dict) -> list[dict]:
    return json.loads(page["storage"].get("adsync_retry", "[]"))


@needs_node
def test_every_call_carries_its_own_idempotency_key(tmp_path):
    page = run_page(tmp_path, calls=[["purchase", {"orderId": "A-1"}], ["purchase", {"orderId": "A-1"}]])

    keys = [call["body"]["idempotencyKey"] for call in page["calls"]]
    assert len(set(keys)) == 2 and all(re.fullmatch(r"[0-9a-f]{32}", key) for key in keys)


@needs_node
@pytest.mark.parametrize("status", [503, 429])
def test_a_busy_answer_is_retried_after_its_retry_after_with_the_same_key_and_no_email_or_phone(tmp_path, status):
    page = run_page(tmp_path, replies=[{"status": status, "retryAfter": 1}], waitMs=1600, calls=[
        ["purchase", {"orderId": "A-1", "value": 49.9, "signature": "ab" * 32}, {"email": "a@example.com",
                                                                                 "phone": "+14255551234"}]])

    first, again = page["calls"]
    assert again["at"] - first["at"] >= 1000  # Retry-After: 1
    assert again["body"] == {k: v for k, v in first["body"].items() if k not in ("email", "phone")}
    assert again["body"]["idempotencyKey"] == first["body"]["idempotencyKey"]  # stored once however often sent
    assert page["results"] == [{"error": "x"}]  # the first answer, as before
    assert retry_queue(page) == []  # sent: nothing left to retry
    assert page["errors"] == []


@needs_node
def test_a_call_that_never_reached_adsync_waits_in_local_storage_for_the_next_page(tmp_path):
    first = run_page(tmp_path, replies=["rejects"], calls=[["purchase", {"orderId": "A-2"}, {"email": "a@x.com"}]])
    [waiting] = retry_queue(first)
    assert waiting["b"]["orderId"] == "A-2" and "email" not in waiting["b"]  # never written to the visitor's disk
    assert waiting["t"] == 1 and waiting["at"] - waiting["x"] < 0

    waiting["at"] = 0  # its time has come when the visitor opens the next page
    second = run_page(tmp_path, storage={"adsync_retry": json.dumps([waiting])})

    [resent] = second["calls"]
    assert resent["body"] == waiting["b"]
    assert retry_queue(second) == []


@needs_node
def test_an_absurd_retry_after_waits_at_most_a_day_and_never_spins(tmp_path):
    page = run_page(tmp_path, replies=[{"status": 503, "retryAfter": 10**12}], waitMs=300,
                    calls=[["purchase", {"orderId": "A-7"}]])

    [waiting] = retry_queue(page)
    assert waiting["at"] - waiting["x"] <= 0  # due within the day the entry lives
    assert len(page["calls"]) == 1 and page["errors"] == []


@needs_node
@pytest.mark.parametrize("status", [400, 403, 404, 413])
def test_a_refused_call_is_not_retried(tmp_path, status):
    page = run_page(tmp_path, replies=[{"status": status}], calls=[["purchase", {"orderId": "A-3"}]])

    assert len(page["calls"]) == 1 and retry_queue(page) == []


@needs_node
def test_the_retry_queue_is_bounded_by_size_tries_and_age(tmp_path):
    now_ms = 1_000_000_000_000_000  # far in the future: every entry below is due, none expired by the clock alone
    stale = [{"b": {"type": "conversion", "event": "e", "orderId": f"old{i}"}, "t": 1, "at": 0, "x": 1} for i in range(3)]
    spent = [{"b": {"type": "conversion", "event": "e", "orderId": "spent"}, "t": 6, "at": 0, "x": now_ms}]
    page = run_page(tmp_path, storage={"adsync_retry": json.dumps(stale + spent)}, replies=[{"status": 503}],
                    calls=[["purchase", {"orderId": f"N-{i}"}] for i in range(25)],
                    answer={"error": "busy"})

    sent = [call["body"].get("orderId") for call in page["calls"]]
    assert "old0" not in sent  # expired after a day: dropped unsent
    assert sent[0] == "spent"  # its sixth try...
    assert "spent" not in [entry["b"]["orderId"] for entry in retry_queue(page)]  # ...was its last


@needs_node
def test_the_calls_retried_are_at_most_the_last_twenty(tmp_path):
    page = run_page(tmp_path, replies=[{"status": 503}] * 25, calls=[["purchase", {"orderId": f"N-{i}"}] for i in range(25)])

    assert [entry["b"]["orderId"] for entry in retry_queue(page)] == [f"N-{i}" for i in range(5, 25)]


@needs_node
def test_without_ad_storage_consent_a_failed_call_is_not_written_to_the_visitors_storage(tmp_path):
    page = run_page(tmp_path, consentAttr="required", replies=["rejects"], calls=[["purchase", {"orderId": "A-5"}]])

    assert len(page["calls"]) == 1 and "adsync_retry" not in page["storage"]


@needs_node
def test_denying_consent_deletes_the_retry_queue_with_the_cookies(tmp_path):
    waiting = [{"b": {"type": "conversion", "event": "purchase", "orderId": "A-6"}, "t": 1, "at": 9e15, "x": 9e15}]
    page = run_page(tmp_path, storage={"adsync_retry": json.dumps(waiting)},
                    lateQueue=[{"consent": {"adStorage": "denied"}}])

    assert "adsync_retry" not in page["storage"]


@needs_node
def test_without_local_storage_a_failed_call_still_resolves_to_null_quietly(tmp_path):
    page = run_page(tmp_path, noStorage=True, fetch="rejects", calls=[["purchase", {"orderId": "A-4"}]])

    assert (page["results"], page["errors"], page["thrown"]) == ([None], [], None)


@needs_node
def test_unreadable_cookies_do_not_break_the_page(tmp_path):
    page = run_page(tmp_path, cookiesThrow=True, calls=[["purchase", {"orderId": "A-1"}]])

    assert (page["thrown"], page["errors"]) == (None, [])
    assert page["results"] == [{"ok": True}]


@needs_node
def test_the_script_is_found_by_selector_when_current_script_is_unavailable(tmp_path):
    found = run_page(tmp_path, noCurrentScript=True, findBySelector=True, calls=[["purchase"]])
    lost = run_page(tmp_path, noCurrentScript=True, calls=[["purchase"]])

    assert found["calls"][0]["body"]["site"] == "pk_demo"
    assert (lost["calls"], lost["results"], lost["errors"]) == ([], [None], [])


@needs_node
def test_the_ingest_url_follows_the_scripts_own_location(tmp_path):
    page = run_page(tmp_path, src="https://tools.example.org/adsync/t/v1/adsync.js?v=2", calls=[["purchase"]])

    assert page["calls"][0]["url"] == "https://tools.example.org/adsync/t/v1/collect"


# --- The demo shop page ---------------------------------------------------------------------------------

def test_the_demo_page_embeds_the_snippet_for_the_demo_site(client, make_shop):
    make_shop(key="pk_first")
    make_shop(key="demo")

    response = client.get("/demo/")

    html = response.content.decode()
    assert response.status_code == 200
    assert '<script async src="http://testserver/t/v1/adsync.js" data-site="demo"></script>' in html
    assert 'href="/emulator/click/?next=/demo/"' in html and "Simulate a Microsoft Ads click" in html
    assert 'href="/demo/?msclkid=test_msclkid_123"' in html and "Test click (Microsoft will reject it)" in html
    assert 'href="/admin/adsync/push/"' in html
    for event in ("'purchase'", "'lead'", "'signup'"):
        assert event in html
    assert "value: 49.90, currency: 'USD'" in html
    assert "{email: 'customer@example.com', phone: '+14255551234'}" in html
    assert "origin-warning" not in html


def test_the_demo_page_falls_back_to_the_first_site(client, make_shop):
    make_shop(key="pk_first")
    make_shop(key="pk_second")

    assert 'data-site="pk_first"' in client.get("/demo/").content.decode()


def test_the_demo_page_shows_the_msclkid_cookie(client, make_shop):
    make_shop(key="demo")
    client.cookies["adsync_msclkid"] = MSCLKID

    assert f'<code id="msclkid-cookie">{MSCLKID}</code>' in client.get("/demo/").content.decode()


def test_the_demo_page_warns_when_its_origin_would_be_refused(client, make_shop):
    make_shop(key="demo", allowed_origins="https://shop.example.com")

    html = client.get("/demo/").content.decode()

    assert "origin-warning" in html and "http://testserver" in html


def test_without_any_site_the_demo_page_says_to_run_the_run_command(client):
    html = client.get("/demo/").content.decode()

    assert "python3 dev.py run" in html
    assert "<script async" not in html
