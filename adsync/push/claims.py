"""Claiming queued sync-log rows for one flush batch, and writing a batch's outcome back.

A claim stamps up to 1,000 due rows with a token and a lease, so an overlapping flush (another
worker, a second process) gets other rows or none; rows of a worker that died are claimable
again once the lease ends. A batch is all conversions or all adjustments: they go to Microsoft in
separate calls. The flush reads only what it sends (`SEND_FIELDS`) into plain
`ClaimedPush` objects: building 1,000 model instances per batch cost more than the SQL.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.db import connection as db_connection
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from adsync.conf import conf
from adsync.models import Connection, Push, offline_conversion_json, request_item_json

# What the flush reads of a claimed row: the payload, the guards' inputs and the retry count.
SEND_FIELDS = ("id", "connection_id", "goal_name", "msclkid", "hashed_email", "hashed_phone", "value", "currency",
               "conversion_time", "click_time", "attempts", "claim_token", "next_attempt_at", "kind",
               "adjustment_time", "conversion_id")


@dataclass(slots=True)
class ClaimedPush:
    """A claimed sync-log row, as the guards and the request body need it (same attribute names as Push)."""

    id: int
    connection_id: int
    goal_name: str
    msclkid: str
    hashed_email: str
    hashed_phone: str
    value: Decimal | None
    currency: str
    conversion_time: datetime
    click_time: datetime | None
    attempts: int
    claim_token: uuid.UUID
    next_attempt_at: datetime
    kind: str
    adjustment_time: datetime | None
    conversion_id: int

    @property
    def pk(self) -> int:
        return self.id

    def as_offline_conversion(self) -> dict:
        return offline_conversion_json(self)

    def as_request_item(self) -> dict:
        return request_item_json(self)


def queue_position(batch: list[ClaimedPush]) -> tuple[datetime, int] | None:
    """Where a claimed batch ends in queue order (next_attempt_at, id): the next claim starts after it."""
    return max(((push.next_attempt_at, push.id) for push in batch), default=None)


def claim_batch(connection: Connection, size: int, after: tuple[datetime, int] | None = None,
                adjustments: bool = False) -> list[ClaimedPush]:
    """Reserve up to `size` due rows for this worker, oldest due first, returned in id order: conversions,
    or with `adjustments` restate and retract rows.

    `after` (queue_position of this flush's previous batch) starts the search past the rows it
    already took: rows sent earlier in the same flush leave dead entries at the front of the
    queue's index until VACUUM, and scanning them made every claim slower than the last. Rows
    it skips (held by another worker) are claimed by the next flush.
    """
    now = timezone.now()
    token = uuid.uuid4()
    lease_end = now + timedelta(seconds=conf.claim_lease_seconds)
    if db_connection.vendor == "postgresql":
        return _claim_postgresql(connection, size, now, token, lease_end, after, adjustments)
    with transaction.atomic():  # SQLite: BEGIN IMMEDIATE serialises claimers
        due = Push.objects.due(now).filter(connection=connection).order_by("next_attempt_at", "id")
        due = due.exclude(kind=Push.CONVERSION) if adjustments else due.filter(kind=Push.CONVERSION)
        if after:
            due = due.filter(Q(next_attempt_at__gt=after[0]) | Q(next_attempt_at=after[0], id__gt=after[1]))
        ids = list(due.values_list("id", flat=True)[:size])
        if not ids:
            return []
        Push.objects.due(now).filter(pk__in=ids).update(claim_token=token, claimed_until=lease_end)
    rows = Push.objects.filter(pk__in=ids, claim_token=token).order_by("id").values_list(*SEND_FIELDS)
    return [ClaimedPush(*row) for row in rows]


# `id = ANY(ARRAY(...))` makes the inner SELECT an init plan and the update an index scan on the
# primary key; with `id IN (...)` the planner may hash-join the whole table.
_CLAIM_SQL = """
    UPDATE adsync_push SET claim_token = %(token)s, claimed_until = %(lease_end)s
    WHERE id = ANY(ARRAY(
        SELECT id FROM adsync_push
        WHERE connection_id = %(connection)s AND status = 'queued' AND next_attempt_at <= %(now)s
          AND (claimed_until IS NULL OR claimed_until < %(now)s) AND kind {kind} 'conversion'
          {after}
        ORDER BY next_attempt_at, id LIMIT %(size)s
        FOR UPDATE SKIP LOCKED))
    RETURNING {fields}
"""


def _claim_postgresql(connection: Connection, size: int, now, token, lease_end, after,
                      adjustments: bool) -> list[ClaimedPush]:
    """One statement: lock due rows others have not locked, stamp them, return them.

    Only unindexed columns change, so PostgreSQL updates the rows in place (HOT, fillfactor 80).
    """
    columns = [Push._meta.get_field(name).column for name in SEND_FIELDS]
    sql = _CLAIM_SQL.format(fields=", ".join(columns), kind="<>" if adjustments else "=",
                            after="AND (next_attempt_at, id) > (%(after_at)s, %(after_id)s)" if after else "")
    params = {"token": token, "lease_end": lease_end, "connection": connection.pk, "now": now, "size": size}
    if after:
        params.update(after_at=after[0], after_id=after[1])
    with transaction.atomic(), db_connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    return sorted((ClaimedPush(*row) for row in rows), key=lambda push: push.id)
