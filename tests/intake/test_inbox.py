"""The snippet's inbox: /t/v1/collect answers 202 after one INSERT; the worker stores the hit.

What a user would notice: the hit becomes a click or a conversion (at the time the browser
reported it) once the worker runs, nothing raw is kept meanwhile, a hit that cannot be stored
stays visible with its reason, and a flush never leaves a received conversion behind.
"""

import json
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

import pytest
import time_machine
from django.db import OperationalError
from django.db import connection as db_connection

from adsync import jobs
from adsync.intake import inbox
from adsync.jobs import run_flush as flush_conversions
from adsync.models import Conversion, Hit, Push, Site
from adsync.models.inbox import lane_of
from tests.conftest import APPLY_URL
from tracking.site_cache import site_for_key

ORIGIN = "https://shop.example.com"
MSCLKID = "f894f652ea334e739002f7167ab8f8e3"
NOW = datetime(2026, 11, 20, 14, 3, 11, tzinfo=dt_timezone.utc)

pytestmark = pytest.mark.django_db


def post(client, body: dict, origin: str = ORIGIN):
    return client.post("/t/v1/collect", json.dumps(body), content_type="text/plain", headers={"Origin": origin})


def purchase(site: Site, **fields) -> dict:
    return {"site": site.key, "type": "conversion", "event": "purchase", "orderId": "A-1", "value": 49.9,
            "currency": "USD", "msclkid": MSCLKID, "visitorId": "v1", **fields}


def test_the_endpoint_only_queues_and_the_worker_stores_at_the_reported_time(client, site, connection):
    with time_machine.travel(NOW, tick=False):
        response = post(client, purchase(site, email="John@Contoso.com", phone="+1 425 555 1234"))

    assert (response.status_code, response.json()) == (202, {"ok": True, "accepted": "conversion"})
    assert Conversion.objects.count() == 0
    waiting = json.dumps(Hit.objects.values("payload").get()["payload"]).lower()
    assert "contoso" not in waiting and "555" not in waiting  # hashes only, even in the inbox

    with time_machine.travel(NOW + timedelta(minutes=1), tick=False):
        result = inbox.drain()

    assert (result.stored, result.failed) == (1, 0)
    conversion = Conversion.objects.get()
    assert (conversion.occurred_at, conversion.msclkid, conversion.source) == (NOW, MSCLKID, "browser")
    assert Push.objects.get().status == Push.QUEUED
    assert not Hit.objects.exists()


def test_a_click_and_a_later_conversion_are_stored_in_the_order_they_arrived(client, site, connection):
    post(client, {"site": site.key, "type": "click", "visitorId": "v1", "msclkid": MSCLKID, "url": ORIGIN})
    post(client, purchase(site, msclkid=None))

    inbox.drain()

    conversion = Conversion.objects.get()
    assert conversion.msclkid == MSCLKID and conversion.click_time is not None
    assert Push.objects.get().status == Push.QUEUED


def test_a_hit_that_cannot_be_stored_keeps_its_reason_and_the_others_go_on(client, site, admin_client):
    broken = Hit.objects.create(site=site, kind=Hit.CONVERSION, payload={"event": "purchase"})
    post(client, purchase(site))

    first = inbox.drain()
    again = inbox.drain()

    assert (first.stored, first.failed, again.stored, again.failed) == (1, 1, 0, 0)
    assert Conversion.objects.count() == 1
    broken.refresh_from_db()
    assert broken.error.startswith("KeyError")  # waits for an operator, not retried on every run

    page = admin_client.get("/admin/adsync/hit/")
    assert page.status_code == 200 and "KeyError" in page.content.decode()


def test_process_again_stores_a_hit_whose_earlier_failure_has_passed(client, site, admin_client):
    post(client, purchase(site))
    Hit.objects.update(error="OperationalError: the database was restarting")  # as a failed drain leaves it

    assert inbox.drain().stored == 0  # not retried on its own
    admin_client.post("/admin/adsync/hit/", {"action": "process_again",
                                               "_selected_action": list(Hit.objects.values_list("pk", flat=True))})

    assert not Hit.objects.exists()
    assert Conversion.objects.get().order_id == "A-1"


def test_process_again_behind_a_backlog_answers_at_once_and_leaves_the_rest_to_the_worker(
        client, site, admin_client, monkeypatch):
    from adsync.admin import inbox as inbox_admin

    post(client, purchase(site))
    Hit.objects.update(error="OperationalError: the database was restarting")
    monkeypatch.setattr(inbox_admin, "ADMIN_DRAIN_SECONDS", 1e-9)  # as if a backlog used the whole budget

    response = admin_client.post("/admin/adsync/hit/", {
        "action": "process_again", "_selected_action": list(Hit.objects.values_list("pk", flat=True))}, follow=True)

    assert [str(m) for m in response.context["messages"]] == ["inbox: 0 stored, 0 failed; the worker stores the rest"]
    assert inbox.pending().count() == 1  # cleared, queued again for the worker
    assert inbox.drain().stored == 1


def test_a_flush_stores_the_inbox_first(client, site, connection, mocked):
    post(client, purchase(site))
    mocked.post(APPLY_URL, json={"PartialErrors": []}, headers={"TrackingId": "t"})

    flush_conversions()

    assert Push.objects.get().status == Push.SENT
    assert not Hit.objects.exists()


def test_an_edited_site_applies_at_once_in_the_process_that_saved_it(client, site, settings):
    settings.ADSYNC_SITE_CACHE_SECONDS = 30
    assert post(client, purchase(site), origin="https://new.example").status_code == 403

    site.allowed_origins += "\nhttps://new.example"
    site.save()

    assert post(client, purchase(site), origin="https://new.example").status_code == 202


@pytest.mark.django_db(transaction=True)
def test_a_site_deleted_by_another_process_after_it_was_cached_is_a_404(client, site, settings):
    settings.ADSYNC_SITE_CACHE_SECONDS = 30
    site_for_key(site.key)
    with db_connection.cursor() as cursor:  # another process's delete: no signal reaches this one
        cursor.execute("DELETE FROM adsync_site WHERE id = %s", [site.pk])

    response = post(client, purchase(site))

    assert (response.status_code, response.json()) == (404, {"error": "site: unknown site key"})
    assert not Hit.objects.exists()


@pytest.mark.parametrize("failing", ["SELECT", "INSERT"])  # the site's lookup, the hit's write
def test_a_database_that_does_not_answer_gets_a_503_and_nothing_is_stored(client, site, failing):
    def refuse(execute, sql, params, many, context):
        if sql.lstrip().upper().startswith(failing):  # as Django raises it when PostgreSQL is down
            raise OperationalError('connection to server at "127.0.0.1", port 5432 failed: Connection refused')
        return execute(sql, params, many, context)

    with db_connection.execute_wrapper(refuse):
        response = post(client, purchase(site))

    assert (response.status_code, response.json()) == (503, {"error": "service: busy, try again later"})
    assert response["Retry-After"] == "10"  # a database that does not answer is usually back soon
    assert response["Access-Control-Allow-Origin"] == "*"  # the page's script can read why, and when to retry
    assert response["Access-Control-Expose-Headers"] == "Retry-After"
    assert not Hit.objects.exists()


def queue_hits(site: Site, count: int, start: int = 0) -> None:
    """`count` conversions of as many visitors, queued as accept() queues them (with their lanes)."""
    prefix = "B" if not start else "N"
    Hit.objects.bulk_create(
        Hit(site=site, kind=Hit.CONVERSION, lane=lane_of(f"v{i}"), payload={
            "event": "purchase", "order_id": f"{prefix}-{i}", "value": "10.000", "currency": "USD",
            "occurred_at": None, "msclkid": f"clk{i:05d}", "visitor_id": f"v{i}", "hashed_email": "", "hashed_phone": ""})
        for i in range(start, start + count))


@pytest.mark.skipif(db_connection.vendor != "postgresql", reason="SKIP LOCKED: PostgreSQL")
@pytest.mark.django_db(transaction=True)
def test_concurrent_drains_store_every_hit_once_and_share_the_work(site, connection):
    import threading

    from django.db import connections

    queue_hits(site, 3 * inbox.CHUNK)
    start, results = threading.Barrier(3), []

    def drainer() -> None:
        start.wait()
        try:
            results.append(inbox.drain())
        finally:
            connections.close_all()

    threads = [threading.Thread(target=drainer) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert sum(r.stored for r in results) == 3 * inbox.CHUNK and not any(r.failed for r in results)
    assert sum(1 for r in results if r.stored) > 1  # each locked its own chunks instead of waiting
    assert Conversion.objects.values("order_id").distinct().count() == Conversion.objects.count() == 3 * inbox.CHUNK
    assert Push.objects.count() == 3 * inbox.CHUNK and not Hit.objects.exists()


def test_a_visitors_hits_share_a_lane_and_the_lanes_spread_visitors(client, site):
    for visitor in ("v1", "v2", "v3", "v4"):
        post(client, {"site": site.key, "type": "click", "visitorId": visitor, "msclkid": f"clk-{visitor}",
                      "url": ORIGIN})
        post(client, purchase(site, visitorId=visitor, orderId=f"A-{visitor}", msclkid=f"clk-{visitor}"))

    lanes = {}
    for hit in Hit.objects.order_by("id"):
        lanes.setdefault(hit.payload["visitor_id"], set()).add(hit.lane)
    assert all(len(lane) == 1 for lane in lanes.values())  # a click and its conversion: one lane
    assert len(set().union(*lanes.values())) > 1  # different visitors: not all in one lane


@pytest.mark.skipif(db_connection.vendor != "postgresql", reason="advisory locks: PostgreSQL")
@pytest.mark.django_db(transaction=True)
def test_a_lane_another_drain_holds_waits_for_it_and_the_other_lanes_are_stored(client, site, connection):
    """The first drain keeps its transaction open on v1's lane (as while storing a chunk): a second
    drain must not store v1's conversion beside it, before v1's click is committed."""
    from django.db import connections

    post(client, {"site": site.key, "type": "click", "visitorId": "v1", "msclkid": MSCLKID, "url": ORIGIN})
    post(client, purchase(site, visitorId="v1"))
    other = next(v for v in (f"w{i}" for i in range(50)) if lane_of(v) != lane_of("v1"))
    post(client, purchase(site, visitorId=other, orderId="A-2", msclkid="clk-other"))
    first = connections.create_connection("default")
    first.set_autocommit(False)
    with first.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", [inbox._LANE_LOCK, lane_of("v1")])
        assert cursor.fetchone()[0]
    try:
        assert inbox.drain().stored == 1  # only the other visitor's conversion
        assert list(Hit.objects.values_list("payload__visitor_id", flat=True)) == ["v1", "v1"]
    finally:
        first.rollback()
        first.close()
    assert inbox.drain().stored == 2
    conversion = Conversion.objects.get(order_id="A-1")
    assert conversion.click_time is not None  # its click was stored first, in the same lane


def test_a_hit_queued_by_a_web_process_older_than_lanes_is_stored(site, connection):
    """During a deploy, a web process still running the code before lanes inserts without one."""
    payload = {"event": "purchase", "order_id": "OLD-1", "value": "10", "currency": "USD", "occurred_at": None,
               "msclkid": MSCLKID, "visitor_id": "v1", "hashed_email": "", "hashed_phone": ""}
    with db_connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {Hit._meta.db_table} (site_id, kind, payload, received_at, error)"
                       " VALUES (%s, %s, %s, %s, '')", [site.pk, Hit.CONVERSION, json.dumps(payload),
                                                        db_connection.ops.adapt_datetimefield_value(NOW)])

    assert Hit.objects.get().lane == 0
    assert inbox.drain().stored == 1
    assert Conversion.objects.filter(order_id="OLD-1").exists()


def test_a_backlog_queues_helper_drains_on_postgresql(site, connection, settings, django_capture_on_commit_callbacks):
    from django_q.models import OrmQ

    settings.ADSYNC_INBOX_DRAINERS = 3
    queue_hits(site, inbox.CHUNK + 1)

    with django_capture_on_commit_callbacks(execute=True):
        assert jobs.drain_inbox() == f"inbox: {inbox.CHUNK + 1} stored, 0 failed"

    helpers = [task.task["func"] for task in OrmQ.objects.all()]
    # Two helpers beside the scheduled run; SQLite serialises writers, where helpers would only wait.
    assert helpers == (["adsync.jobs.drain_inbox_helper"] * 2 if db_connection.vendor == "postgresql" else [])


def test_a_small_inbox_needs_no_helpers(site, connection, settings, django_capture_on_commit_callbacks):
    from django_q.models import OrmQ

    settings.ADSYNC_INBOX_DRAINERS = 3
    queue_hits(site, 5)

    with django_capture_on_commit_callbacks(execute=True):
        assert jobs.drain_inbox() == "inbox: 5 stored, 0 failed"
    assert not OrmQ.objects.exists()


def arriving_during_each_chunk(site, per_chunk: int, chunks: int = 20):
    """Traffic going on while the drain works: `per_chunk` new hits each time it deletes a stored chunk
    (for the first `chunks` chunks: a drain that never stops would still end, and fail the test)."""
    arrivals = iter(range(1, chunks + 1))

    def execute(run, sql, params, many, context):
        result = run(sql, params, many, context)
        if sql.startswith(f'DELETE FROM "{Hit._meta.db_table}"') and (n := next(arrivals, None)):
            queue_hits(site, per_chunk, start=100_000 * n)
        return result

    return db_connection.execute_wrapper(execute)


def test_a_flush_stores_the_hits_received_before_it_however_fast_new_ones_arrive(site, connection):
    queue_hits(site, 2 * inbox.CHUNK + 10)

    with arriving_during_each_chunk(site, inbox.CHUNK):  # new hits as fast as chunks are stored
        result = inbox.drain(received_before=True)

    assert result.stored == 2 * inbox.CHUNK + 10  # then it stopped: the flush can send
    assert Conversion.objects.filter(order_id__startswith="B-").count() == 2 * inbox.CHUNK + 10
    assert inbox.pending().count() >= inbox.CHUNK  # those that arrived wait for the next drain


def test_a_drain_under_light_traffic_stores_what_waits_and_leaves_stragglers_for_its_next_run(site, connection):
    queue_hits(site, 30)

    with arriving_during_each_chunk(site, 2):  # a trickle: fewer than a chunk meanwhile
        result = inbox.drain(seconds=inbox.DRAIN_SECONDS)

    assert result.stored == 30  # not a chunk of two hits after another for the whole minute
    assert 0 < inbox.pending().count() < inbox.CHUNK
