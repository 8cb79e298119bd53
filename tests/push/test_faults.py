"""Faults injected mid-run through the built-in emulator, over real HTTP (pytest-django's live_server).

A run is a series of scheduled flushes. The client-side limit is set to one Apply call per
minute, so each flush sends one batch of 10 and the run spans several flushes; between two of
them the emulator is told to fail (EmulatorBehaviour: HTTP 500, a time-out, throttling, an
expired access token, a token-endpoint outage) and the clock moves on (time-machine). After
recovery every row must be sent, and Microsoft (the emulator) must count each conversion once.
"""

from __future__ import annotations

import gc
import time
from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from adsync.jobs import run_flush as flush_conversions
from adsync.models import Connection, Push

emulator_models = pytest.importorskip("emulator.models")
emulator_demo = pytest.importorskip("emulator.demo")
emulator_tokens = pytest.importorskip("emulator.tokens")
Behaviour = emulator_models.EmulatorBehaviour
Received = emulator_models.EmulatorConversion

# transaction=True: the live server thread must see the rows on PostgreSQL too (CI runs both).
pytestmark = pytest.mark.django_db(transaction=True)

BATCH = 10
SCOPE = "https://ads.microsoft.com/msads.manage offline_access"


@pytest.fixture
def emulated(live_server, settings):
    """adsync pointed at the emulator on a real HTTP server; one Apply call per minute, batches of 10."""
    base = live_server.url + "/emulator"
    settings.MICROSOFT_ADS_ENVIRONMENT = "emulator"
    settings.MICROSOFT_ADS_CAMPAIGN_API_URL = base + "/campaign"
    settings.MICROSOFT_ADS_OAUTH_TOKEN_URL = base + "/oauth2/v2.0/token"
    settings.MICROSOFT_ADS_TIMEOUT = 5
    settings.MICROSOFT_ADS_BATCH_SIZE = BATCH
    settings.ADSYNC_REQUESTS_PER_MINUTE = 1
    settings.ADSYNC_CLICK_HOLD_MINUTES = 0
    demo = emulator_demo.ensure_demo_data()
    yield demo
    gc.collect()  # see tests/emulator/test_emulator.py: no client session may outlive the live server


@pytest.fixture
def emulator_connection(emulated, site, make_connection) -> Connection:
    """A connection holding a real emulator access token and refresh token."""
    issued = emulator_tokens.token_response(emulated.user, "client-id", SCOPE)
    return make_connection(
        site, customer_id=emulator_demo.CUSTOMER_ID, account_id=emulator_demo.ACCOUNT_ID,
        access_token=issued["access_token"], refresh_token=issued["refresh_token"],
        token_expires_at=timezone.now() + timedelta(seconds=issued["expires_in"]))


@pytest.fixture
def queue(emulated, site, emulator_connection, make_conversion):
    """Queue `count` conversions whose clicks the emulator knows (clicked 3 h ago, converted 2 h ago)."""
    def make(count: int) -> list[str]:
        account = emulator_models.EmulatorAccount.objects.get(account_id=emulator_demo.ACCOUNT_ID)
        clicked = timezone.now() - timedelta(hours=3)
        clicks = [emulator_models.EmulatorClick.objects.create(account=account, clicked_at=clicked)
                  for _ in range(count)]
        for click in clicks:
            make_conversion(site, msclkid=click.msclkid)
        return [click.msclkid for click in clicks]
    return make


@pytest.fixture
def clock():
    with time_machine.travel(timezone.now(), tick=True) as traveller:
        yield traveller


def arm(**switches) -> None:
    Behaviour.load()
    Behaviour.objects.filter(pk=1).update(**switches)


def next_flush(clock, minutes: float = 1.05) -> None:
    """The clock moves past the one-minute request window, then the schedule flushes."""
    clock.shift(timedelta(minutes=minutes))
    flush_conversions()


def counts() -> dict[str, int]:
    return {status: Push.objects.filter(status=status).count() for status in (Push.SENT, Push.QUEUED, Push.ERROR)}


def counted_by_microsoft() -> list[str]:
    """msclkids the emulator accepted and counts (duplicates are accepted silently but not counted)."""
    return sorted(Received.objects.filter(duplicate=False).values_list("msclkid", flat=True))


def drain(clock, limit: int = 20) -> None:
    for _ in range(limit):
        if not Push.objects.filter(status=Push.QUEUED).exists():
            return
        next_flush(clock, minutes=3)  # past any backoff (≤ 72 s at attempt 1) and a 120 s throttle


def test_a_500_mid_run_requeues_that_batch_with_backoff_and_a_later_flush_sends_it(emulated, queue, clock):
    clicks = queue(30)
    flush_conversions()
    arm(apply_failure=Behaviour.FAIL_500, apply_failure_count=1)

    next_flush(clock)

    failed = Push.objects.filter(attempts=1, status=Push.QUEUED)
    assert counts() == {"sent": 10, "queued": 20, "error": 0}
    assert failed.count() == BATCH
    assert all(p.next_attempt_at > timezone.now() + timedelta(seconds=40) for p in failed)
    assert {p.error_message for p in failed} == {"An internal error has occurred."}  # Microsoft's text, verbatim
    drain(clock)
    assert counts() == {"sent": 30, "queued": 0, "error": 0}
    assert counted_by_microsoft() == sorted(clicks)


def test_a_timed_out_call_is_resent_with_the_same_conversion_time_and_microsoft_counts_it_once(
        emulated, queue, clock, settings):
    clicks = queue(20)
    settings.MICROSOFT_ADS_TIMEOUT = 0.5
    arm(apply_failure=Behaviour.FAIL_TIMEOUT, apply_failure_count=1, timeout_seconds=1.5)

    flush_conversions()  # gives up after 0.5 s; the emulator applies the batch at 1.5 s anyway
    wait_for(lambda: Received.objects.count() == BATCH)

    assert counts() == {"sent": 0, "queued": 20, "error": 0}
    assert "Timed out" in Push.objects.filter(attempts=1).first().error_message
    drain(clock)
    assert counts() == {"sent": 20, "queued": 0, "error": 0}
    assert counted_by_microsoft() == sorted(clicks)
    duplicates = Received.objects.filter(duplicate=True)
    assert duplicates.count() == BATCH  # the re-sent batch: same goal, click and time, ignored
    first = {r.msclkid: r for r in Received.objects.filter(duplicate=False)}
    assert all((d.goal_name, d.conversion_time) == (first[d.msclkid].goal_name, first[d.msclkid].conversion_time)
               for d in duplicates)


def test_throttling_mid_run_pauses_the_account_for_retry_after_then_the_run_continues(emulated, queue, clock,
                                                                                      emulator_connection):
    queue(30)
    flush_conversions()
    arm(apply_failure=Behaviour.FAIL_THROTTLE, apply_failure_count=1, retry_after_seconds=120)

    next_flush(clock)
    emulator_connection.refresh_from_db()
    paused_until = emulator_connection.throttled_until
    next_flush(clock)  # 63 s later: still paused, nothing is sent
    during_pause = Received.objects.count()

    assert paused_until > timezone.now()
    assert during_pause == BATCH
    assert Push.objects.filter(attempts=0, status=Push.QUEUED).count() == 20  # throttling is not an attempt
    next_flush(clock)  # past the 120 s pause
    assert Received.objects.count() == 2 * BATCH
    drain(clock)
    assert counts() == {"sent": 30, "queued": 0, "error": 0}


def test_an_access_token_expiring_mid_run_is_refreshed_and_the_run_continues(emulated, queue, clock,
                                                                            emulator_connection):
    clicks = queue(30)
    flush_conversions()
    first_refresh_token = emulator_connection.refresh_token
    # Microsoft ends the token early (our copy still says it is fresh): the next call gets 109.
    emulator_models.EmulatorToken.objects.filter(value=emulator_connection.access_token).update(
        expires_at=timezone.now())

    next_flush(clock)

    emulator_connection.refresh_from_db()
    assert counts()["sent"] == 2 * BATCH
    assert emulator_connection.status == Connection.ACTIVE
    assert emulator_connection.refresh_token != first_refresh_token  # the rotated one was saved
    drain(clock)
    assert counted_by_microsoft() == sorted(clicks)


def test_a_token_endpoint_outage_during_refresh_keeps_rows_queued_until_it_recovers(emulated, queue, clock,
                                                                                   emulator_connection):
    queue(20)
    flush_conversions()
    emulator_models.EmulatorToken.objects.filter(value=emulator_connection.access_token).update(
        expires_at=timezone.now())
    arm(token_failure_count=1)

    next_flush(clock)

    emulator_connection.refresh_from_db()
    assert counts() == {"sent": 10, "queued": 10, "error": 0}
    assert emulator_connection.status == Connection.ACTIVE  # an outage is not a revoked consent
    drain(clock)
    assert counts() == {"sent": 20, "queued": 0, "error": 0}


def test_a_run_through_every_fault_ends_with_every_row_sent_and_counted_once(emulated, queue, clock, settings):
    clicks = queue(60)
    settings.MICROSOFT_ADS_TIMEOUT = 0.5
    flush_conversions()
    for switches in ({"apply_failure": Behaviour.FAIL_500, "apply_failure_count": 2},
                     {"apply_failure": Behaviour.FAIL_THROTTLE, "apply_failure_count": 1, "retry_after_seconds": 90},
                     {"apply_failure": Behaviour.FAIL_TIMEOUT, "apply_failure_count": 1, "timeout_seconds": 1.5}):
        arm(**switches)
        before = Received.objects.count()
        next_flush(clock, minutes=2)
        if switches["apply_failure"] == Behaviour.FAIL_TIMEOUT:
            wait_for(lambda before=before: Received.objects.count() > before)
        next_flush(clock, minutes=2)
    expire_access_tokens()

    drain(clock)

    assert counts() == {"sent": 60, "queued": 0, "error": 0}
    assert counted_by_microsoft() == sorted(clicks)
    assert Push.objects.filter(sent_at__isnull=True).count() == 0


def expire_access_tokens() -> None:
    emulator_models.EmulatorToken.objects.filter(kind=emulator_models.EmulatorToken.ACCESS).update(
        expires_at=timezone.now())


def wait_for(condition, timeout: float = 5.0) -> None:
    """Wait for the emulator's time-out thread to finish applying the batch it held."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the emulator never applied the timed-out batch"
        time.sleep(0.05)
