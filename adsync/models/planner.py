"""Keeping PostgreSQL's planner honest about tables that were emptied.

When ANALYZE runs on a table whose rows were all deleted but not yet vacuumed (a bench emptying
its tables, an operator's DELETE followed by ANALYZE; autovacuum itself vacuums first), the
planner believes the table empty, every index looks equally cheap, and a lookup may take an
index by site alone through every dead row of the site: the drain once fell from hundreds of
hits a second to ten that way (docs/performance.md#no-cliff-after-deletes). VACUUM removes the
dead rows and their index entries and ANALYZE then counts what is really there.
"""

from __future__ import annotations

import logging

from django.db import connection

log = logging.getLogger(__name__)

EMPTIED_PAGES = 100  # an empty table this large (800 kB) was emptied by DELETE, not created empty


def vacuum_emptied(tables: list[str]) -> list[str]:
    """VACUUM (ANALYZE) those of `tables` the planner believes empty over more than EMPTIED_PAGES pages.

    One catalog query when nothing needs doing. PostgreSQL only, and outside a transaction (VACUUM
    cannot run inside one): elsewhere it does nothing. Returns the tables vacuumed.
    """
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        return []
    with connection.cursor() as cursor:
        cursor.execute("SELECT relname FROM pg_class WHERE relname = ANY(%s) AND relkind = 'r' AND reltuples = 0"
                       " AND relpages > %s", [tables, EMPTIED_PAGES])
        emptied = [name for (name,) in cursor.fetchall()]
        for name in emptied:
            log.warning("%s: the planner's statistics describe an empty table over pages of deleted rows; "
                        "vacuuming it before storing into it", name)
            cursor.execute(f"VACUUM (ANALYZE) {connection.ops.quote_name(name)}")
    return emptied
