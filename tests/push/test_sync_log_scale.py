"""The sync-log changelist's search and paging, as staff use them (adsync.admin.large_tables).

The 5-million-row timings are in docs/performance.md (bench/admin_bench.py, PostgreSQL); here,
on SQLite, the behaviour: exact search by msclkid or order id, and exact counts on small logs.
"""

from __future__ import annotations

import pytest

from adsync.admin.large_tables import EXACT_COUNT_LIMIT, EstimatingPaginator
from adsync.models import Push

pytestmark = pytest.mark.django_db

SYNC_LOG = "/admin/adsync/push/"


def listed_msclkids(response) -> set[str]:
    return {push.msclkid for push in response.context["cl"].result_list}


def test_searching_the_sync_log_by_msclkid_finds_that_conversion(admin_client, site, connection, make_conversion):
    wanted = make_conversion(site, msclkid="f894f652ea334e739002f7167ab8f8e3")
    make_conversion(site)

    response = admin_client.get(SYNC_LOG, {"q": "f894f652ea334e739002f7167ab8f8e3"})

    assert response.status_code == 200
    assert listed_msclkids(response) == {wanted.msclkid}


def test_searching_the_sync_log_by_order_id_finds_that_conversion(admin_client, site, connection, make_conversion):
    wanted = make_conversion(site, order_id="A-1001")
    make_conversion(site, order_id="A-1002")

    response = admin_client.get(SYNC_LOG, {"q": " A-1001 "})

    assert listed_msclkids(response) == {wanted.msclkid}


def test_the_sync_log_search_is_exact_so_a_fragment_finds_nothing(admin_client, site, connection, make_conversion):
    make_conversion(site, order_id="A-1001", msclkid="f894f652ea334e739002f7167ab8f8e3")

    fragments = [admin_client.get(SYNC_LOG, {"q": q}) for q in ("A-100", "f894f652", "a-1001")]

    assert [listed_msclkids(r) for r in fragments] == [set(), set(), set()]
    assert "exact msclkid or order id" in fragments[0].content.decode()


def test_the_search_and_the_status_filter_combine(admin_client, site, connection, make_conversion):
    conversion = make_conversion(site, order_id="A-1001")
    Push.objects.filter(conversion=conversion).update(status=Push.ERROR)

    errors = admin_client.get(SYNC_LOG, {"q": "A-1001", "status__exact": "error"})
    sent = admin_client.get(SYNC_LOG, {"q": "A-1001", "status__exact": "sent"})

    assert len(listed_msclkids(errors)) == 1 and listed_msclkids(sent) == set()


def test_a_small_sync_log_is_counted_exactly(site, connection, make_conversion):
    for _ in range(3):
        make_conversion(site)

    paginator = EstimatingPaginator(Push.objects.order_by("-pk"), 2)

    assert (paginator.count, paginator.num_pages, paginator.is_estimate) == (3, 2, False)
    assert len(paginator.page(2).object_list) == 1
    assert EXACT_COUNT_LIMIT >= 10_000  # below this, every database gets exact counts
