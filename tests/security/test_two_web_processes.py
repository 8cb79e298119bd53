"""Counts every web process shares: the snippet's rate limits and staff login throttling, across two gunicorn servers.

With a per-process cache, two web processes allowed twice the tries. Both servers here run the
production configuration on this test database and share its cache table (CACHES), as two web
processes of one deployment do; then again with REDIS_URL set (a Redis database of the tests'
own, ADSYNC_TEST_REDIS_URL, skipped when no Redis answers). PostgreSQL only (tests/servers.py).
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.request

import pytest
import redis
import requests
from django.contrib.auth import get_user_model
from django.core.cache import caches
from django.db import connection as db_connection

from adsync.models import Hit, Site
from tests import servers

ORIGIN = "https://shop.example.com"
APP_NAME = "adsync-two-processes"
PASSWORD = "correct-horse-battery-staple"
HOST = "adsync.example.com"  # both processes serve one host name, as behind a load balancer
pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(db_connection.vendor != "postgresql", reason="gunicorn's processes need a shared database"),
]


REDIS_URL = os.environ.get("ADSYNC_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")  # a database of the tests' own


def redis_answers() -> bool:
    try:
        return redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError:
        return False


@pytest.fixture(params=["database cache", "redis"])
def two_servers(request):
    """Two web processes of one deployment: same settings, same database and cache (a table, or Redis)."""
    extra = {}
    if request.param == "redis":
        if not redis_answers():
            pytest.skip(f"no Redis at {REDIS_URL}")
        redis.Redis.from_url(REDIS_URL).flushdb()  # this database only
        extra["REDIS_URL"] = REDIS_URL
    else:
        caches["default"].clear()  # the table outlives transactional tests: start from no counts
    env = servers.production_env(APP_NAME, WEB_CONCURRENCY="1", DATABASE_POOL_SIZE="2",
                                 ADSYNC_CLIENT_HITS_PER_MINUTE="10", ALLOWED_HOSTS=f"127.0.0.1,{HOST}", **extra)
    with servers.gunicorn(env) as first, servers.gunicorn(env) as second:
        yield first, second


def within_one_minute_window() -> None:
    """The limits count per clock minute: start a test's burst well inside one."""
    if time.time() % 60 > 45:
        time.sleep(61 - time.time() % 60)


def collect(url: str, body: dict) -> int:
    request = urllib.request.Request(url + "/t/v1/collect", json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "text/plain", "Origin": ORIGIN})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


def test_the_snippets_rate_limit_per_client_counts_the_hits_of_every_web_process(two_servers):
    site = Site.objects.create(name="Shop", key="pk_two_processes", allowed_origins=ORIGIN)
    first, second = two_servers
    within_one_minute_window()

    statuses = [collect(url, {"site": site.key, "type": "conversion", "event": "purchase", "orderId": f"T-{n}"})
                for n in range(8) for url in (first, second)]

    assert statuses[:10] == [202] * 10  # 10 a minute from this address, across both processes
    assert statuses[10:] == [429] * 6
    assert Hit.objects.count() == 10


def sign_in(url: str, password: str) -> requests.Response:
    """One sign-in attempt through `url`, under the deployment's one host name (the load balancer's)."""
    session = requests.Session()
    session.headers["Host"] = HOST
    page = session.get(url + "/accounts/login/", timeout=30)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    return session.post(url + "/accounts/login/", data={"login": "ops@example.com", "password": password,
                                                        "csrfmiddlewaretoken": token},
                        allow_redirects=False, timeout=30)


def test_staff_login_throttling_counts_the_failures_of_every_web_process(two_servers):
    get_user_model().objects.create_user("ops", "ops@example.com", PASSWORD, is_staff=True)
    first, second = two_servers
    within_one_minute_window()

    failures = [sign_in(url, "wrong-password") for url in (first, second, first, second, first)]
    throttled = sign_in(second, PASSWORD)  # the right password, on the process that saw 2 of the 5 tries

    assert [f.status_code for f in failures] == [200] * 5  # the form again, with its error
    assert throttled.status_code != 302  # not signed in
    assert "Too many failed login attempts" in throttled.text
