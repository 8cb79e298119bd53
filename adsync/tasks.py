"""The flush: queued sync-log rows go to Microsoft Ads, ≤1,000 per ApplyOfflineConversions call.

Called every 2 minutes by django-q2 (schedule `adsync:flush`, see setup_schedules) and by
`manage.py flush_conversions`. Guarantees:

- Rows are claimed with a conditional UPDATE (and SKIP LOCKED on PostgreSQL) under a short
  lease (adsync/claims.py), so an overlapping flush cannot send the same row; no transaction
  is held across HTTP. The same claim lets a flush on PostgreSQL send a connection's batches
  in ADSYNC_FLUSH_LANES concurrent lanes.
- A whole-call failure (network, timeout, 5xx, throttling, expired token) leaves every row of
  the batch queued; nothing is marked sent unless Microsoft answered 200.
- A crash after Microsoft answered leaves rows claimed until the lease ends; they are then
  re-sent with the identical ConversionTime, which Microsoft ignores as a duplicate.
- Every outcome is written with filter(claim_token=...).update(...): a constant number of
  queries per batch, whatever the queue size.
"""

from __future__ import annotations

import logging
import random
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import connection as db_connection
from django.db import connections as db_connections
from django.db.models import F
from django.utils import timezone

from adsync import alerts, guards, throttle, tokens
from adsync.claims import ClaimedPush, claim_batch, claimed_rows, queue_position
from adsync.goals import GoalBook
from adsync.microsoft.campaign import ApplyResult, CampaignClient
from adsync.microsoft.errors import Kind, MicrosoftAdsError
from adsync.models import Connection, Push
from tracking import inbox

log = logging.getLogger(__name__)

BACKOFF_BASE_SECONDS = 60
BACKOFF_CAP_SECONDS = 6 * 3600
CONNECTION_PAUSE = timedelta(minutes=15)
WAIT_DELAYS = {5614: timedelta(minutes=5), 5615: timedelta(minutes=30)}
ROW_RETRY_KINDS = {Kind.TRANSIENT, Kind.THROTTLED, Kind.WAIT}


@dataclass
class FlushResult:
    """What one connection's flush did; printed by the command, summed by the task."""

    connection_id: int
    sent: int = 0
    errors: int = 0
    requeued: int = 0
    requests: int = 0
    stopped: str = ""
    error_messages: list[str] = field(default_factory=list)

    def add(self, *others: FlushResult) -> None:
        """Sum the lanes of one flush into this result."""
        for other in others:
            self.sent += other.sent
            self.errors += other.errors
            self.requeued += other.requeued
            self.requests += other.requests
            self.stopped = self.stopped or other.stopped
            self.error_messages += other.error_messages

    def line(self) -> str:
        text = (f"connection {self.connection_id}: {self.sent} sent, {self.errors} error, "
                f"{self.requeued} requeued in {self.requests} request(s)")
        return f"{text}; stopped: {self.stopped}" if self.stopped else text


def flush_conversions(connection_ids: list[int] | None = None) -> list[FlushResult]:
    """Flush every active connection (or the given ones). Not-active connections keep their rows queued.

    The snippet's inbox is stored first, so every conversion received before the flush is in it.
    """
    inbox.drain()
    connections = Connection.objects.filter(status=Connection.ACTIVE).select_related("site")
    if connection_ids:
        connections = connections.filter(pk__in=connection_ids)
    return [flush_connection(conn) for conn in connections]


def scheduled_flush() -> str:
    """Entry point for the django-q2 schedule; returns a one-line summary for the task log."""
    results = flush_conversions()
    return "; ".join(r.line() for r in results) or "no active connection"


def flush_connection(connection: Connection, batch_size: int | None = None) -> FlushResult:
    """Send this connection's due rows, in up to ADSYNC_FLUSH_LANES concurrent senders (lanes)."""
    result = FlushResult(connection.pk)
    batch_size = min(batch_size or settings.MICROSOFT_ADS_BATCH_SIZE, 1000)
    now = timezone.now()
    if connection.throttled_until and connection.throttled_until > now:
        result.stopped = f"throttled by Microsoft until {connection.throttled_until:%H:%M:%S} UTC"
        return result
    due = Push.objects.due(now).filter(connection=connection)
    if due.exists():
        try:
            access_token = tokens.access_token_for(connection)
        except MicrosoftAdsError as err:
            result.stopped = err.describe()
            return result
        lanes = flush_lanes() if due[batch_size:batch_size + 1].exists() else 1
        if lanes == 1:
            _send_lane(connection, access_token, batch_size, result)
        else:
            result.add(*_run_lanes(lanes, connection, access_token, batch_size))
    Connection.objects.filter(pk=connection.pk).update(last_flush_at=timezone.now())
    log.info("flush %s", result.line())
    alerts.flush_errors(connection, result.errors)  # over ADSYNC_ALERT_ERROR_THRESHOLD: email staff
    return result


def flush_lanes() -> int:
    """Concurrent senders per connection: 1 on SQLite (one writer at a time), at most 10 (reference §7)."""
    if db_connection.vendor != "postgresql":
        return 1
    return max(1, min(settings.ADSYNC_FLUSH_LANES, 10))


def _run_lanes(lanes: int, connection: Connection, access_token: str, batch_size: int) -> list[FlushResult]:
    """Run `lanes` batch loops at once, each with its own database connection and HTTP session.

    SKIP LOCKED claims keep their batches disjoint; one lane stopping (throttled, token, rate
    limit) stops the others after their current batch. A lane that raises re-raises here, after
    the others have finished: its claimed rows wait for their lease like a crashed worker's.
    """
    stop = threading.Event()
    results = [FlushResult(connection.pk) for _ in range(lanes)]
    failures: list[BaseException] = []

    def lane(result: FlushResult) -> None:
        try:
            _send_lane(connection, access_token, batch_size, result, stop)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            failures.append(exc)
            stop.set()
        finally:
            db_connections.close_all()  # this thread's connections only

    threads = [threading.Thread(target=lane, args=(r,), name=f"flush-{connection.pk}-{i}")
               for i, r in enumerate(results[1:], start=1)]
    for thread in threads:
        thread.start()
    try:
        _send_lane(connection, access_token, batch_size, results[0], stop)
    except BaseException:
        stop.set()
        raise
    finally:
        for thread in threads:
            thread.join()
    if failures:
        raise failures[0]
    return results


def _send_lane(connection: Connection, access_token: str, batch_size: int, result: FlushResult,
           stop: threading.Event | None = None) -> None:
    """One lane: claim, check, send and record batches until the queue is empty or something stops it."""
    client = _client(connection, access_token)
    book = GoalBook(connection)
    position = None
    while not (stop and stop.is_set()):
        if not throttle.acquire_request_slot(connection):
            result.stopped = "client-side rate limit reached; the rest goes out on the next flush"
            break
        batch = claim_batch(connection, batch_size, after=position)
        if not batch:
            break
        position = queue_position(batch)
        client = _send_batch(connection, client, book, batch, result)
        if client is None:
            break
    if stop and result.stopped:
        stop.set()


def _client(connection: Connection, access_token: str) -> CampaignClient:
    return CampaignClient(access_token=access_token, customer_id=connection.customer_id,
                          account_id=connection.account_id)


def _apply(connection: Connection, client: CampaignClient, items: list[dict]) -> tuple[ApplyResult, CampaignClient]:
    """One call; on 105/109 refresh once and retry once (tokens.call_with_refresh, §1.7)."""
    current = client.headers["Authorization"].removeprefix("Bearer ")

    def call(access_token: str) -> tuple[ApplyResult, CampaignClient]:
        used = client if access_token == current else _client(connection, access_token)
        return used.apply_offline_conversions(items), used

    (result, client), _ = tokens.call_with_refresh(connection, current, call)
    return result, client


def _preflight(batch: list[ClaimedPush], book: GoalBook, outcome: _Outcome) -> list[ClaimedPush]:
    """Apply the pre-send checks: failures and holds are recorded, the rest is returned to send."""
    now = timezone.now()
    to_send = []
    for push in batch:
        verdict = guards.preflight(push, book, now)
        if verdict.action == guards.FAIL:
            outcome.fail(push, None, verdict.symbol, verdict.reason)
        elif verdict.action == guards.HOLD:
            outcome.hold(push, verdict.until, verdict.symbol, verdict.reason)
        else:
            to_send.append(push)
    return to_send


def _send_batch(connection: Connection, client: CampaignClient, book: GoalBook, batch: list[ClaimedPush],
                result: FlushResult) -> CampaignClient | None:
    """Check, send one claimed batch and record every row's outcome. Returns None to stop this connection."""
    token = batch[0].claim_token
    outcome = _Outcome(token)
    batch = _preflight(batch, book, outcome)
    if not batch:
        outcome.write("", result)
        return client
    items = [push.as_offline_conversion() for push in batch]
    result.requests += 1
    try:
        api, client = _apply(connection, client, items)
    except MicrosoftAdsError as err:
        outcome.write("", result)
        _handle_call_failure(connection, batch, token, err, result)
        return None
    for index, push in enumerate(batch):
        error = api.errors_by_index.get(index)
        if error is None:
            outcome.sent.append(push.pk)
        elif error.kind in ROW_RETRY_KINDS:
            outcome.retry(push, error.code, error.error_code, error.message)
        else:
            outcome.fail(push, error.code, error.error_code, error.message)
    outcome.write(api.tracking_id, result)
    return client


def _handle_call_failure(connection: Connection, batch: list[ClaimedPush], token, err: MicrosoftAdsError,
                         result: FlushResult) -> None:
    """The whole request failed: nothing was applied (§1.3), so rows stay queued unless Microsoft named them."""
    now = timezone.now()
    outcome = _Outcome(token)
    result.stopped = err.describe()
    connection.record_error(err.describe())
    if err.kind == Kind.THROTTLED:
        wait = max(60.0, err.retry_after or 0.0)
        until = now + timedelta(seconds=wait)
        Connection.objects.filter(pk=connection.pk).update(throttled_until=until)
        outcome.release(batch, next_attempt_at=until)
    elif err.kind in (Kind.RECONNECT, Kind.NO_ACCESS, Kind.ACCOUNT):
        # A connection-level problem: the rows are fine and wait for it to be fixed.
        outcome.release(batch, next_attempt_at=now + CONNECTION_PAUSE)
    elif err.batch_errors:
        named = {e.index: e for e in err.batch_errors if 0 <= e.index < len(batch)}
        for index, push in enumerate(batch):
            if index in named:
                e = named[index]
                outcome.fail(push, e.code, e.error_code, e.message)
        outcome.release([p for i, p in enumerate(batch) if i not in named], next_attempt_at=now)
    else:
        for push in batch:
            outcome.retry(push, err.code, err.error_code, err.message)
    outcome.write(err.tracking_id, result)


def _retry_delay(code: int | None, attempts: int) -> timedelta:
    if code in WAIT_DELAYS:
        return WAIT_DELAYS[code]
    seconds = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** attempts)
    return timedelta(seconds=seconds * random.uniform(0.8, 1.2))


class _Outcome:
    """Collects a batch's row outcomes and writes them as a few grouped UPDATEs."""

    def __init__(self, token):
        self.token = token
        self.now = timezone.now()
        self.sent: list[int] = []
        self.failed: dict[tuple, list[int]] = defaultdict(list)
        self.retried: dict[tuple, list[int]] = defaultdict(list)
        self.released: dict = defaultdict(list)
        self.held: dict[tuple, list[int]] = defaultdict(list)

    def fail(self, push: ClaimedPush, code, symbol, message) -> None:
        self.failed[(code, symbol or "", message or "")].append(push.pk)

    def retry(self, push: ClaimedPush, code, symbol, message) -> None:
        if push.attempts + 1 >= settings.ADSYNC_MAX_ATTEMPTS:
            self.fail(push, code, symbol, message)
            return
        # Grouped by attempt count: one jittered delay serves the whole group (one UPDATE).
        self.retried[(push.attempts, code, symbol or "", message or "")].append(push.pk)

    def hold(self, push: ClaimedPush, until, symbol: str, reason: str) -> None:
        """Not sent yet and not an attempt: stays queued until `until`, with the reason visible."""
        self.held[(until, symbol, reason)].append(push.pk)

    def release(self, pushes: list[ClaimedPush], next_attempt_at) -> None:
        self.released[next_attempt_at].extend(p.pk for p in pushes)

    def _rows(self, ids: list[int]):
        return claimed_rows(ids, self.token)

    def write(self, tracking_id: str, result: FlushResult) -> None:
        unclaim = {"claim_token": None, "claimed_until": None, "updated_at": self.now}
        if self.sent:
            result.sent += self._rows(self.sent).update(
                status=Push.SENT, sent_at=self.now, tracking_id=tracking_id, attempts=F("attempts") + 1,
                error_code=None, error_symbol="", error_message="", **unclaim)
        for (code, symbol, message), ids in self.failed.items():
            result.errors += self._rows(ids).update(
                status=Push.ERROR, tracking_id=tracking_id, attempts=F("attempts") + 1,
                error_code=code, error_symbol=symbol, error_message=message, **unclaim)
            result.error_messages.append(message)
        for (attempts, code, symbol, message), ids in self.retried.items():
            result.requeued += self._rows(ids).update(
                tracking_id=tracking_id, attempts=F("attempts") + 1,
                next_attempt_at=self.now + _retry_delay(code, attempts),
                error_code=code, error_symbol=symbol, error_message=message, **unclaim)
        for (until, symbol, reason), ids in self.held.items():
            self._rows(ids).update(next_attempt_at=until, error_code=None, error_symbol=symbol,
                                   error_message=reason, **unclaim)
        for next_attempt_at, ids in self.released.items():
            result.requeued += self._rows(ids).update(next_attempt_at=next_attempt_at, **unclaim)
