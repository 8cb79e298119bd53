"""The flush: queued sync-log rows go to Microsoft Ads, ≤1,000 per ApplyOfflineConversions call, then
the queued adjustments, ≤1,000 per ApplyOfflineConversionAdjustments call.

Called every 2 minutes by the `adsync:flush` job (adsync/jobs.py, which stores the snippet's
inbox first) and by `manage.py flush_conversions`. Guarantees:

- Rows are claimed with a conditional UPDATE (and SKIP LOCKED on PostgreSQL) under a short
  lease (adsync/push/claims.py), so an overlapping flush cannot send the same row; no transaction
  is held across HTTP. The same claim lets a flush on PostgreSQL send a connection's batches
  in ADSYNC_FLUSH_LANES concurrent lanes.
- A whole-call failure (network, timeout, 5xx, throttling, expired token) leaves every row of
  the batch queued; nothing is marked sent unless Microsoft answered 200.
- A crash after Microsoft answered leaves rows claimed until the lease ends; they are then
  re-sent with the identical ConversionTime, which Microsoft ignores as a duplicate.
- Every outcome is written by adsync/push/transitions.py with filter(claim_token=...).update(...):
  a constant number of queries per batch, whatever the queue size.
- Conversions and adjustments never share a call. Each lane sends its conversions first, so an
  adjustment usually finds the conversion it adjusts already sent; one that does not waits (guards).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import timedelta

from django.db import connection as db_connection
from django.db import connections as db_connections
from django.utils import timezone

from adsync.conf import conf
from adsync.connections import health, throttle, tokens
from adsync.formats import count
from adsync.microsoft.campaign import ApplyResult, CampaignClient
from adsync.microsoft.errors import Kind, MicrosoftAdsError
from adsync.models import Connection, Push
from adsync.push import guards
from adsync.push.claims import ClaimedPush, claim_batch, queue_position
from adsync.push.goals import GoalBook
from adsync.push.transitions import BatchCounts, BatchOutcome

log = logging.getLogger(__name__)

CONNECTION_PAUSE = timedelta(minutes=15)
ROW_RETRY_KINDS = {Kind.TRANSIENT, Kind.THROTTLED, Kind.WAIT}


@dataclass
class FlushResult:
    """What one connection's flush did; printed by the command, summed by the task."""

    connection_id: int
    sent: int = 0
    errors: int = 0
    requeued: int = 0
    requests: int = 0
    answered: int = 0  # requests Microsoft answered with 200 (the account took the call, whatever its rows)
    stopped: str = ""
    error_messages: list[str] = field(default_factory=list)

    def count(self, counts: BatchCounts) -> None:
        """Add what one batch's written outcome did."""
        self.sent += counts.sent
        self.errors += counts.errors
        self.requeued += counts.requeued
        self.error_messages += counts.error_messages

    def add(self, *others: FlushResult) -> None:
        """Sum the lanes of one flush into this result."""
        for other in others:
            self.sent += other.sent
            self.errors += other.errors
            self.requeued += other.requeued
            self.requests += other.requests
            self.answered += other.answered
            self.stopped = self.stopped or other.stopped
            self.error_messages += other.error_messages

    def summary(self) -> str:
        """"5 sent, 1 error, 2 to retry, in 1 request" (and why it stopped early, if it did)."""
        text = (f"{self.sent} sent, {count(self.errors, 'error')}, {self.requeued} to retry, in "
                f"{count(self.requests, 'request')}")
        return f"{text}; stopped: {self.stopped}" if self.stopped else text

    def line(self) -> str:
        return f"connection {self.connection_id}: {self.summary()}"


def flush_conversions(connection_ids: list[int] | None = None) -> list[FlushResult]:
    """Flush every active connection (or the given ones). Not-active connections keep their rows queued."""
    connections = Connection.objects.filter(status=Connection.ACTIVE).select_related("site")
    if connection_ids:
        connections = connections.filter(pk__in=connection_ids)
    return [flush_connection(conn) for conn in connections]


def flush_connection(connection: Connection, batch_size: int | None = None) -> FlushResult:
    """Send this connection's due rows, in up to ADSYNC_FLUSH_LANES concurrent senders (lanes)."""
    result = FlushResult(connection.pk)
    batch_size = min(batch_size or conf.batch_size, 1000)
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
    now = timezone.now()
    done = {"last_flush_at": now} | ({"last_upload_ok_at": now} if result.answered else {})
    Connection.objects.filter(pk=connection.pk).update(**done)
    log.debug("flush %s", result.line())  # the job and the command report it once each (adsync/jobs.py)
    return result


def flush_lanes() -> int:
    """Concurrent senders per connection: 1 on SQLite (one writer at a time), at most 10 (Microsoft's old
    guidance on concurrent threads, docs/microsoft-api.md#rate-limits)."""
    if db_connection.vendor != "postgresql":
        return 1
    return max(1, min(conf.flush_lanes, 10))


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
    """One lane: claim, check, send and record batches until the queue is empty or something stops it;
    conversions first, then adjustments."""
    client: CampaignClient | None = _client(connection, access_token)
    book = GoalBook(connection)
    for adjustments in (False, True):
        position = None
        while client is not None and not (stop and stop.is_set()):
            if not throttle.acquire_request_slot(connection):
                result.stopped = "client-side rate limit reached; the rest goes out on the next flush"
                client = None
                break
            batch = claim_batch(connection, batch_size, after=position, adjustments=adjustments)
            if not batch:
                break
            position = queue_position(batch)
            client = _send_batch(connection, client, book, batch, result)
    if stop and result.stopped:
        stop.set()


def _client(connection: Connection, access_token: str) -> CampaignClient:
    return CampaignClient(access_token=access_token, customer_id=connection.customer_id,
                          account_id=connection.account_id)


def _apply(connection: Connection, client: CampaignClient, items: list[dict],
           adjustments: bool = False) -> tuple[ApplyResult, CampaignClient]:
    """One call (ApplyOfflineConversions, or ApplyOfflineConversionAdjustments); on 105/109 refresh once and
    retry once (tokens.call_with_refresh)."""
    current = client.headers["Authorization"].removeprefix("Bearer ")

    def call(access_token: str) -> tuple[ApplyResult, CampaignClient]:
        used = client if access_token == current else _client(connection, access_token)
        apply = used.apply_offline_conversion_adjustments if adjustments else used.apply_offline_conversions
        return apply(items), used

    (result, client), _ = tokens.call_with_refresh(connection, current, call)
    return result, client


def _preflight(batch: list[ClaimedPush], book: GoalBook, outcome: BatchOutcome) -> list[ClaimedPush]:
    """Apply the pre-send checks: failures, holds and cancellations are recorded, the rest is returned to send."""
    now = timezone.now()
    originals = guards.Originals.load(batch)  # no query for a batch of conversions
    to_send = []
    for push in batch:
        verdict = guards.preflight(push, book, now, originals)
        if verdict.action == guards.FAIL:
            outcome.refuse(push, verdict.symbol, verdict.reason)
        elif verdict.action == guards.HOLD:
            outcome.hold(push, verdict.until, verdict.symbol, verdict.reason)
        elif verdict.action == guards.CANCEL:
            outcome.cancel(push, verdict.symbol, verdict.reason)
        else:
            to_send.append(push)
    return to_send


def _send_batch(connection: Connection, client: CampaignClient, book: GoalBook, batch: list[ClaimedPush],
                result: FlushResult) -> CampaignClient | None:
    """Check, send one claimed batch and record every row's outcome. Returns None to stop this connection."""
    token = batch[0].claim_token
    outcome = BatchOutcome(token)
    batch = _preflight(batch, book, outcome)
    if not batch:
        result.count(outcome.write(""))
        return client
    items = [push.as_request_item() for push in batch]
    result.requests += 1
    try:
        api, client = _apply(connection, client, items, adjustments=batch[0].kind != Push.CONVERSION)
    except MicrosoftAdsError as err:
        result.count(outcome.write(""))
        _handle_call_failure(connection, batch, token, err, result)
        return None
    result.answered += 1
    for index, push in enumerate(batch):
        error = api.errors_by_index.get(index)
        if error is None:
            outcome.send(push)
        elif error.kind in ROW_RETRY_KINDS:
            outcome.retry(push, error.code, error.error_code, error.message)
        else:
            outcome.fail(push, error.code, error.error_code, error.message)
    result.count(outcome.write(api.tracking_id))
    return client


def _handle_call_failure(connection: Connection, batch: list[ClaimedPush], token, err: MicrosoftAdsError,
                         result: FlushResult) -> None:
    """The whole request failed: nothing was applied (docs/microsoft-api.md#response-model), so rows
    stay queued unless Microsoft named them."""
    now = timezone.now()
    outcome = BatchOutcome(token)
    result.stopped = err.describe()
    health.record_failure(connection, Connection.UPLOAD, err)
    if err.kind == Kind.THROTTLED:
        until = now + throttle.throttle_wait(err.retry_after)
        throttle.pause(connection, until)
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
    result.count(outcome.write(err.tracking_id))
