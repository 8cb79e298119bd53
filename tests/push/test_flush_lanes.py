"""A flush sending one connection's batches in concurrent lanes (PostgreSQL, committed data).

Each lane has its own database connection, so these tests commit their rows
(transaction=True) and run only where concurrent transactions are real.
"""

import json
import threading

import pytest
from django.db import connection as db_connection
from django.utils import timezone

from adsync.connections import throttle
from adsync.models import Connection, Push
from adsync.push.flush import flush_connection
from tests.conftest import APPLY_URL, bulk_queue

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(db_connection.vendor != "postgresql", reason="lanes run on PostgreSQL only"),
]


def sent_click_ids(mocked) -> list[str]:
    return [item["MicrosoftClickId"] for call in mocked.calls if call.request.url == APPLY_URL
            for item in json.loads(call.request.body)["OfflineConversions"]]


def test_three_lanes_send_every_row_exactly_once(mocked, settings, site, connection):
    settings.ADSYNC_FLUSH_LANES = 3
    bulk_queue(site, 2500)
    senders = set()

    def accept(request):
        senders.add(threading.current_thread().name)
        return 200, {"TrackingId": "t"}, json.dumps({"PartialErrors": []})

    mocked.add_callback("POST", APPLY_URL, callback=accept)

    result = flush_connection(connection, batch_size=100)

    sent = sent_click_ids(mocked)
    assert len(sent) == 2500 == len(set(sent))
    assert result.sent == 2500 and result.requests == 25 and not result.stopped
    assert Push.objects.filter(status=Push.SENT).count() == 2500
    assert len(senders) > 1  # the batches really went out from more than one lane


def test_when_microsoft_throttles_every_lane_stops_and_nothing_is_lost(mocked, settings, site, connection):
    settings.ADSYNC_FLUSH_LANES = 3
    bulk_queue(site, 2500)
    mocked.post(APPLY_URL, status=429, json={
        "Type": "AdApiFaultDetail", "Errors": [{"Code": 117, "ErrorCode": "CallRateExceeded", "Message": "Too many"}]})

    result = flush_connection(connection, batch_size=100)

    assert result.sent == 0 and result.stopped.startswith("117 CallRateExceeded")
    assert result.requests <= 3  # at most one call per lane before all of them stop
    assert Push.objects.filter(status=Push.QUEUED).count() == 2500
    assert Connection.objects.get(pk=connection.pk).throttled_until > timezone.now()


def test_concurrent_workers_opening_a_new_rate_window_all_get_a_slot(settings, connection):
    settings.ADSYNC_REQUESTS_PER_MINUTE = 1000
    barrier = threading.Barrier(6)
    granted = []

    def worker():
        barrier.wait()
        granted.append(throttle.acquire_request_slot(connection))
        db_connection.close()

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert granted == [True] * 6
    assert Connection.objects.get(pk=connection.pk).rate_window_count == 6
