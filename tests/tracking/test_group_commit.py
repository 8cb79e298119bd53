"""The snippet's hits share commits (tracking/group_commit.py), and none is answered before its commit.

These tests run on committed data (transaction=True): the writer thread has its own database
connection, which cannot see a test's open transaction. The ones that hold a table lock to
make requests wait run on PostgreSQL only.
"""

import json
import threading
import time

import pytest
from django.db import connection as db_connection
from django.db import connections
from django.test import Client

from adsync.intake import inbox
from adsync.models import Conversion, Hit, Site
from tracking import accept, group_commit

ORIGIN = "https://shop.example.com"
pytestmark = pytest.mark.django_db(transaction=True)
postgres_only = pytest.mark.skipif(db_connection.vendor != "postgresql", reason="holds a PostgreSQL table lock")


def post(site: Site, order_id: str):
    body = {"site": site.key, "type": "conversion", "event": "purchase", "orderId": order_id, "value": 49.9,
            "currency": "USD", "msclkid": f"clk{order_id}", "visitorId": "v1"}
    return Client().post("/t/v1/collect", json.dumps(body), content_type="text/plain", headers={"Origin": ORIGIN})


class Posting(threading.Thread):
    """One browser's report, sent from its own thread (as gunicorn's gthread workers do)."""

    def __init__(self, site: Site, order_id: str) -> None:
        super().__init__(daemon=True)
        self.site, self.order_id, self.response = site, order_id, None

    def run(self) -> None:
        try:
            self.response = post(self.site, self.order_id)
        finally:
            connections.close_all()


def wait_until(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def insert_waits_on_the_lock() -> bool:
    """The writer's INSERT is in PostgreSQL, waiting for the inbox lock."""
    with db_connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = %s::regclass",
                       [Hit._meta.db_table])
        return cursor.fetchone()[0] > 0


@pytest.fixture
def locked_inbox():
    """Another session holds the inbox table: inserts wait until `release()` commits."""
    other = connections.create_connection("default")
    other.set_autocommit(False)
    with other.cursor() as cursor:
        cursor.execute(f"LOCK TABLE {Hit._meta.db_table} IN EXCLUSIVE MODE")
    yield other
    other.rollback()
    other.close()


def make_site(key: str) -> Site:
    return Site.objects.create(name=key, key=key, allowed_origins=ORIGIN)


def test_concurrent_hits_are_all_stored_once():
    site = make_site("pk_gc_many")
    posts = [Posting(site, f"A-{i}") for i in range(20)]
    for p in posts:
        p.start()
    for p in posts:
        p.join(30)
    assert [p.response.status_code for p in posts] == [202] * 20
    assert Hit.objects.filter(site=site).count() == 20
    assert inbox.drain().stored == 20
    assert sorted(Conversion.objects.filter(site=site).values_list("order_id", flat=True)) == sorted(
        f"A-{i}" for i in range(20))


@postgres_only
def test_a_hit_is_answered_only_after_its_commit(locked_inbox):
    site = make_site("pk_gc_wait")
    posting = Posting(site, "A-1")
    posting.start()
    posting.join(0.5)
    assert posting.is_alive() and posting.response is None  # not answered while it cannot commit
    assert not Hit.objects.exists()
    locked_inbox.commit()  # releases the lock
    posting.join(10)
    assert posting.response.status_code == 202
    assert Hit.objects.filter(site=site).count() == 1


@postgres_only
def test_hits_waiting_together_share_one_commit(locked_inbox):
    site = make_site("pk_gc_share")
    writer = accept.group_writer
    first = Posting(site, "A-0")
    first.start()
    wait_until(insert_waits_on_the_lock)  # the writer has taken it and waits
    batches, rows = writer.batches, writer.rows
    others = [Posting(site, f"A-{i}") for i in range(1, 10)]
    for p in others:
        p.start()
    wait_until(lambda: writer.queued() == 9)
    locked_inbox.commit()
    for p in [first, *others]:
        p.join(10)
    assert [p.response.status_code for p in [first, *others]] == [202] * 10
    assert writer.rows - rows == 10
    assert writer.batches - batches == 2  # the first hit, then the nine that gathered behind it
    assert Hit.objects.filter(site=site).count() == 10


@postgres_only
def test_a_site_deleted_meanwhile_fails_only_its_own_hit(locked_inbox):
    shop, gone = make_site("pk_gc_shop"), make_site("pk_gc_gone")
    writer = accept.group_writer
    first = Posting(shop, "A-1")
    first.start()
    wait_until(insert_waits_on_the_lock)
    same_batch = [Posting(shop, "A-2"), Posting(gone, "B-1")]
    for p in same_batch:
        p.start()
    wait_until(lambda: writer.queued() == 2)
    with locked_inbox.cursor() as cursor:  # the site goes while its hit waits in the batch
        cursor.execute(f"DELETE FROM {Site._meta.db_table} WHERE id = %s", [gone.pk])
    locked_inbox.commit()
    for p in [first, *same_batch]:
        p.join(10)
    assert [p.response.status_code for p in [first, *same_batch]] == [202, 202, 404]
    assert json.loads(same_batch[1].response.content) == {"error": "site: unknown site key"}
    assert sorted(Hit.objects.values_list("payload__order_id", flat=True)) == ["A-1", "A-2"]


@postgres_only
def test_a_stuck_database_answers_503_and_the_hit_is_still_stored_once(locked_inbox, monkeypatch):
    monkeypatch.setattr(group_commit, "WAIT_SECONDS", 0.3)
    site = make_site("pk_gc_stuck")
    response = post(site, "A-1")
    assert response.status_code == 503
    assert response["Retry-After"] == "60"
    assert json.loads(response.content) == {"error": "service: busy, try again later"}
    locked_inbox.commit()
    wait_until(lambda: Hit.objects.filter(site=site).exists())
    # The browser was told to try again: a retry of the same order is stored once.
    assert post(site, "A-1").status_code == 202
    inbox.drain()
    assert Conversion.objects.filter(site=site, order_id="A-1").count() == 1


class Stopped(BaseException):
    """What stops a writer from outside, as gevent's GreenletExit does when a worker shuts down."""


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_writer_stopped_mid_batch_fails_its_rows_and_the_next_row_gets_a_new_writer():
    written: list = []

    def write_rows(rows: list[tuple], connection) -> None:
        if not written:
            written.append("stopped")
            raise Stopped
        written.extend(rows)

    writer = group_commit.GroupWriter(write_rows)
    with pytest.raises(Stopped):  # not answered as stored: the writer never committed it
        writer.write(("first",))
    writer.write(("second",))
    assert written == ["stopped", ("second",)]
