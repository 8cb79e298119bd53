"""The snippet endpoint's only write: a validated report becomes one inbox row (adsync.models.Hit).

`accept` returns once the hit is committed. Concurrent requests of one process share the commit
(tracking/group_commit.py) unless the caller holds a transaction, which the hit then joins. The
worker stores the inbox later (adsync/intake/inbox.py).
"""

from __future__ import annotations

import json
from datetime import datetime

from django.db import IntegrityError
from django.db import connection as db_connection
from django.db.backends.base.base import BaseDatabaseWrapper
from django.utils import timezone

from adsync.conf import conf
from adsync.intake.reports import ClickPayload, ConversionPayload
from adsync.models import Hit, Site
from adsync.models.inbox import lane_of
from tracking.group_commit import GroupWriter
from tracking.site_cache import forget


class SiteGone(Exception):
    """The site was deleted after this process cached it (tracking/site_cache.py)."""


def accept(site: Site, report: ClickPayload | ConversionPayload, now: datetime | None = None) -> str:
    """Queue a validated report; its receipt time becomes the click or conversion time.

    Returns once the hit is committed. Concurrent requests of one process share the commit
    (tracking/group_commit.py) unless the caller holds a transaction, which the hit then joins.
    """
    kind = Hit.CLICK if isinstance(report, ClickPayload) else Hit.CONVERSION
    payload = dict(report.__dict__)  # the dataclass's fields, all plain values but these two
    if kind == Hit.CONVERSION:  # JSON keeps the value exact as text, and the time as ISO 8601
        payload["value"] = None if report.value is None else str(report.value)
        payload["occurred_at"] = report.occurred_at.isoformat() if report.occurred_at else None
    row = (site.pk, kind, payload, now or timezone.now(), lane_of(report.visitor_id))
    try:
        if _shares_commits():
            group_writer.write(row)
        else:
            insert_hits([row])
    except IntegrityError:  # the site's row is gone (a deferred foreign key fails here, at commit)
        forget(site.key)
        raise SiteGone(site.key) from None
    return kind


def _shares_commits() -> bool:
    """Group commit, unless the caller holds a transaction (the hit then joins it) or the database is
    a private in-memory SQLite one (`sqlite://:memory:`), which the writer thread's connection would not see."""
    return (conf.inbox_group_commit and not db_connection.in_atomic_block
            and db_connection.settings_dict["NAME"] != ":memory:")


def insert_hits(rows: list[tuple], connection: BaseDatabaseWrapper = db_connection) -> None:
    """One INSERT for (site id, kind, payload dict, received_at, lane) rows (on the group writer's
    connection, or the caller's).

    On PostgreSQL the rows travel as one JSON array parameter, unpacked by the server: encoding
    one list in C costs far less than binding four parameters per row in Python.
    """
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(_INSERT_FROM_JSON, [json.dumps([(s, k, p, t.isoformat(), n) for s, k, p, t, n in rows])])
        else:
            adapt = connection.ops.adapt_datetimefield_value
            cursor.execute(_INSERT_VALUES + ", ".join([_ROW] * len(rows)),
                           [v for s, k, p, t, n in rows for v in (s, k, json.dumps(p), adapt(t), n)])


_COLUMNS = f"{Hit._meta.db_table} (site_id, kind, payload, received_at, lane, error)"
_INSERT_FROM_JSON = (f"INSERT INTO {_COLUMNS} SELECT (r->>0)::bigint, r->>1, r->2, (r->>3)::timestamptz,"
                     " (r->>4)::smallint, ''"
                     " FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS rows(r, n) ORDER BY n")
_INSERT_VALUES = f"INSERT INTO {_COLUMNS} VALUES "
_ROW = "(%s, %s, %s, %s, %s, '')"
group_writer = GroupWriter(insert_hits)
