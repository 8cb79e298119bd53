"""Admin list pages over tables with millions of rows (the sync log): no full COUNT, indexed search.

Django's changelist counts the filtered rows on every page (Paginator.count, a full
`SELECT COUNT(*)`), which takes most of a second at 5 million sync-log rows on PostgreSQL.
EstimatingPaginator counts exactly up to EXACT_COUNT_LIMIT rows, a bounded scan, and beyond
that takes PostgreSQL's planner estimate, the number pg_class.reltuples gives for the whole
table. Measured in docs/performance.md (bench/admin_bench.py).
"""

from __future__ import annotations

import json

from django.core.paginator import EmptyPage, PageNotAnInteger, Paginator
from django.db import connections
from django.db.models import Q, QuerySet
from django.utils.functional import cached_property

EXACT_COUNT_LIMIT = 10_000
SEARCH_MATCH_LIMIT = 1_000


class EstimatingPaginator(Paginator):
    """Exact counts for small results, the planner's estimate past EXACT_COUNT_LIMIT rows (PostgreSQL only).

    With an estimate the last page numbers may point past the real end: such a page is empty
    rather than an error, so the changelist never fails on a count it could not afford.
    """

    is_estimate = False

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if not isinstance(queryset, QuerySet) or connections[queryset.db].vendor != "postgresql":
            return super().count
        bounded = queryset.order_by()[: EXACT_COUNT_LIMIT + 1].count()
        if bounded <= EXACT_COUNT_LIMIT:
            return bounded
        self.is_estimate = True
        return max(bounded, planner_estimate(queryset))

    def validate_number(self, number) -> int:
        """Past an estimated count any page number ≥ 1 is valid (a page past the real end is empty)."""
        if not (self.count and self.is_estimate):  # reading count decides is_estimate
            return super().validate_number(number)
        try:
            number = int(number)
        except (TypeError, ValueError):
            raise PageNotAnInteger(self.error_messages["invalid_page"]) from None
        if number < 1:
            raise EmptyPage(self.error_messages["min_page"])
        return number

    def page(self, number):
        if not (self.count and self.is_estimate):
            return super().page(number)
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        return self._get_page(self.object_list[bottom:bottom + self.per_page], number, self)


def planner_estimate(queryset: QuerySet) -> int:
    """Rows PostgreSQL expects the query to return (EXPLAIN, no execution): reltuples × selectivity."""
    sql, params = queryset.order_by().query.sql_with_params()
    with connections[queryset.db].cursor() as cursor:
        cursor.execute("EXPLAIN (FORMAT JSON) " + sql, params)
        plan = cursor.fetchone()[0]
    if isinstance(plan, str):
        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"])


def search_by_identifier(queryset: QuerySet, term: str) -> QuerySet:
    """Sync-log rows whose msclkid or order id is exactly `term`: two index lookups.

    Django's default search ORs `UPPER(msclkid)` with `UPPER(conversion.order_id)` across a join,
    which reads the whole log. Here the order id is resolved first (index conversion_order),
    then `msclkid = term OR conversion_id IN (...)` uses push_msclkid and the conversion FK index.
    """
    from adsync.models import Conversion

    term = term.strip()
    if not term:
        return queryset
    conversion_ids = list(Conversion.objects.filter(order_id=term).values_list("pk", flat=True)[:SEARCH_MATCH_LIMIT])
    return queryset.filter(Q(msclkid=term) | Q(conversion_id__in=conversion_ids))
