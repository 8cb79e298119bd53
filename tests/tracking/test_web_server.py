"""The production web server: gunicorn with gunicorn.conf.py (gevent workers) on this test database.

PostgreSQL only: gunicorn's processes must share the database with the test (tests/servers.py).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import pytest
from django.db import connection as db_connection
from django.db import connections

from adsync.models import Hit, Site
from tests import servers

ORIGIN = "https://shop.example.com"
APP_NAME = "adsync-web-under-test"  # marks the server's database connections in pg_stat_activity
WORKERS, POOL_SIZE = 2, 3
pytestmark = [
    pytest.mark.django_db(transaction=True),  # the server's processes see committed rows only
    pytest.mark.skipif(db_connection.vendor != "postgresql", reason="gunicorn's processes need a shared database"),
]


@pytest.fixture
def server():
    """gunicorn as production runs it, with the production environment (tests/servers.py)."""
    # Hundreds of hits from 127.0.0.1 in seconds: the per-address limit is tested in tests/security.
    env = servers.production_env(APP_NAME, WEB_CONCURRENCY=str(WORKERS), DATABASE_POOL_SIZE=str(POOL_SIZE),
                                 ADSYNC_CLIENT_HITS_PER_MINUTE="100000")
    with servers.gunicorn(env) as url:
        yield url


def post(url: str, body: dict) -> int:
    request = urllib.request.Request(url + "/t/v1/collect", json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "text/plain;charset=UTF-8", "Origin": ORIGIN})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


def at_once(clients: int, send) -> list[int]:
    """`clients` threads call send(client number) together; every answer's status, in order."""
    statuses: list[list[int]] = [[] for _ in range(clients)]
    start = threading.Barrier(clients)

    def client(n: int) -> None:
        start.wait()
        statuses[n] = send(n)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return [status for answers in statuses for status in answers]


def server_connections() -> int:
    return len(servers.server_connections(APP_NAME))


def test_hits_sent_at_once_are_all_answered_202_and_stored(server):
    site = Site.objects.create(name="Shop", key="pk_web_many", allowed_origins=ORIGIN)

    def five_hits(n: int) -> list[int]:
        return [post(server, {"site": site.key, "type": "conversion", "event": "purchase",
                              "orderId": f"A-{n}-{i}", "msclkid": f"clk{n}x{i}", "value": 49.9, "currency": "USD"})
                for i in range(5)]

    assert at_once(40, five_hits) == [202] * 200
    # Answered means committed: every hit is in the inbox the moment its answer arrives.
    assert Hit.objects.filter(site=site).count() == 200


def test_a_flood_of_made_up_site_keys_holds_no_more_database_connections_than_the_pool(server):
    """Every made-up key costs a query; under gevent each request has its own Django connection,
    and without the pool (config/settings.py) they would open one each."""
    most = [0]
    flooding = threading.Event()

    def watch() -> None:
        try:
            while not flooding.is_set():
                most[0] = max(most[0], server_connections())
                time.sleep(0.01)
        finally:
            connections.close_all()

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        answers = at_once(60, lambda n: [post(server, {"site": f"pk_madeup{n}x{i}", "type": "click",
                                                       "msclkid": "clk"}) for i in range(5)])
    finally:
        flooding.set()
        watcher.join()
    assert answers == [404] * 300
    assert 1 <= most[0] <= WORKERS * POOL_SIZE
