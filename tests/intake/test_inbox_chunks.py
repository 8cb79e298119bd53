"""The batched drain stores a chunk of hits exactly as storing them one after the other would, in a
constant number of queries (adsync/intake/chunk.py).

Each equivalence test builds the same inbox twice on the same starting data (clicks and orders
stored earlier, conversions still waiting for a click) inside one test transaction: once stored
hit by hit with record.py (the path the drain used before, and its fallback), once in chunks;
the clicks, conversions and sync-log rows must be identical.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from decimal import Decimal

import pytest
from django.db import connection as db_connection
from django.db import transaction
from django.test.utils import CaptureQueriesContext

from adsync.intake import chunk, inbox
from adsync.intake.reports import ConversionPayload
from adsync.models import Click, Conversion, Hit, Push, Site
from adsync.models.inbox import lane_of
from adsync.push import transitions

pytestmark = pytest.mark.django_db
START = datetime(2026, 11, 20, 14, 0, 0, 123456, tzinfo=dt_timezone.utc)


@pytest.fixture
def shops(make_site, make_connection):
    """Two shops with goals (one account sends hashes: enhanced conversions; the second shop requires
    consent) and a site with no account yet."""
    first, second, unconnected = make_site(), make_site(consent_required=True), make_site()
    make_connection(first, goals={"purchase": "Purchase", "signup": "Signup"})
    make_connection(first, goals={"purchase": "Sale"}, enhanced_conversions=True, account_id="2")
    make_connection(second, goals={"purchase": "Purchase"})
    return [first, second, unconnected]


def earlier_data(shops: list[Site]) -> None:
    """What was stored before this inbox: clicks, orders, and conversions still waiting for a click."""
    first, second, _ = shops
    Click.objects.create(site=first, visitor_id="v1", msclkid="old-click-v1", clicked_at=START - timedelta(days=2))
    Click.objects.create(site=second, visitor_id="v2", msclkid="old-click-v2", clicked_at=START - timedelta(hours=1))
    for site, order, visitor, email in ((first, "A-0", "v3", ""), (second, "B-0", "v2", "e" * 64),
                                        (first, None, "v4", "f" * 64)):
        conversion = Conversion.objects.create(site=site, event_name="purchase", order_id=order, value=Decimal("5"),
                                               currency="USD", occurred_at=START.replace(microsecond=0),
                                               visitor_id=visitor, hashed_email=email, source="server")
        transitions.create_pushes(conversion)
    Conversion.objects.create(site=first, event_name="purchase", order_id="A-1", value=Decimal("7"), currency="USD",
                              occurred_at=START - timedelta(days=1), msclkid="old-click-v1", visitor_id="v1")


def hit(site: Site, kind: str, moment: datetime, **payload) -> Hit:
    if kind == Hit.CLICK:
        data = {"visitor_id": payload.get("visitor_id", ""), "msclkid": payload["msclkid"], "url": "https://shop/",
                "ad_storage": payload.get("ad_storage", "")}
    else:
        data = {"event": "purchase", "order_id": None, "value": "10.000", "currency": "USD", "occurred_at": None,
                "msclkid": "", "visitor_id": "", "hashed_email": "", "hashed_phone": "", **payload}
    return Hit(site=site, kind=kind, payload=data, received_at=moment, lane=lane_of(data.get("visitor_id", "")))


def mixed_workload(shops: list[Site], seed: int, size: int = 120) -> list[Hit]:
    """Visitors clicking and buying in every order, with and without consent: clicks before and after conversions, repeated
    clicks and order ids, conversions in the same second, receipt times slightly out of order (hits from
    several web processes), hashes, a site without an account."""
    rng = random.Random(seed)
    moment, hits = START, []
    for n in range(size):
        moment += timedelta(milliseconds=rng.choice([0, 300, 900, 1500, 60_000, -700]))  # -: another process
        site = rng.choice(shops[:2] * 3 + shops[2:])
        visitor = f"v{rng.randint(1, 8)}"
        roll = rng.random()
        if roll < 0.35:
            hits.append(hit(site, Hit.CLICK, moment, visitor_id=visitor, ad_storage=rng.choice(["", "granted", "denied"]),
                            msclkid=rng.choice([f"clk-{visitor}-{n}", f"clk-{visitor}", "old-click-v2"])))
        else:
            fields = {"visitor_id": visitor, "order_id": rng.choice([f"A-{rng.randint(0, 25)}", None]),
                      "event": rng.choice(["purchase", "purchase", "signup"]),
                      "value": rng.choice(["10.000", "49.900", None])}
            if roll < 0.55:
                fields["msclkid"] = rng.choice([f"clk-{visitor}", f"clk-new-{n}", "old-click-v1"])
            if rng.random() < 0.3:
                fields["hashed_email"] = rng.choice(["e" * 64, "f" * 64])
            fields["ad_storage"] = rng.choice(["", "", "granted", "denied"])
            fields["ad_user_data"] = rng.choice(["", "", "denied"])
            if rng.random() < 0.2:
                fields["hashed_phone"] = "p" * 64
            hits.append(hit(site, Hit.CONVERSION, moment, **fields))
    return hits


def queue(hits: list[Hit]) -> list[Hit]:
    return Hit.objects.bulk_create(hits) if hits[0].pk is None else hits


def stored_rows() -> dict[str, list]:
    """Everything a user can see of the stored data, without ids and creation times."""
    clicks = sorted(Click.objects.values_list("site_id", "msclkid", "visitor_id", "clicked_at", "landing_url"))
    fields = ("site_id", "event_name", "order_id", "value", "currency", "occurred_at", "visitor_id", "msclkid",
              "click_time", "hashed_email", "hashed_phone", "source", "consent")
    conversions = sorted(Conversion.objects.values_list(*fields), key=repr)
    pushes = sorted(Push.objects.values_list(
        *(f"conversion__{f}" for f in fields[:3]), "conversion__visitor_id", "conversion__occurred_at",
        "connection_id", "goal_name", "msclkid", "hashed_email", "hashed_phone", "value", "currency",
        "conversion_time", "click_time", "error_symbol", "status", "dedupe_key"), key=repr)
    return {"clicks": clicks, "conversions": conversions, "pushes": pushes}


def one_by_one(hits: list[Hit]) -> dict[int, str]:
    """The single-hit path: record.py for each hit in order, each in its own savepoint."""
    errors = {}
    for h in hits:
        try:
            with transaction.atomic():
                inbox.store(Hit.objects.get(pk=h.pk))
        except Exception as exc:  # noqa: BLE001  (the reference records what failed, as the drain does)
            errors[h.pk] = type(exc).__name__
    return errors


def in_chunks(hits: list[Hit], size: int) -> None:
    for start in range(0, len(hits), size):
        reports = [chunk.Report(h, inbox.read(h)) for h in Hit.objects.filter(pk__in=[h.pk for h in hits[start:start
                                                                                                    + size]]).order_by("id")]
        chunk.store_chunk(reports)


def compare(shops, hits: list[Hit], *chunk_sizes: int) -> dict[str, list]:
    """Stored rows after the one-by-one path, asserted equal to those after each chunking; returns them."""
    earlier_data(shops)
    queue(hits)
    start = transaction.savepoint()
    assert one_by_one(hits) == {}
    expected = stored_rows()
    for size in chunk_sizes:
        transaction.savepoint_rollback(start)
        in_chunks(hits, size)
        assert stored_rows() == expected, f"chunks of {size}"
    return expected


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_a_chunk_stores_a_mixed_inbox_exactly_as_storing_each_hit_in_turn(shops, seed):
    expected = compare(shops, mixed_workload(shops, seed), 500, 7)

    # The workload did exercise what the replay must get right.
    assert len(expected["clicks"]) > 10 and len(expected["pushes"]) > 20
    statuses = {row[-2] for row in expected["pushes"]}
    assert {Push.QUEUED, Push.PENDING_IDENTITY, Push.SKIPPED_NO_CONSENT} <= statuses


def test_a_click_explains_the_conversions_before_it_in_the_same_chunk_and_the_stored_ones(shops):
    first = shops[0]
    hits = [hit(first, Hit.CONVERSION, START, visitor_id="v3", order_id="C-1"),  # waits for a click
            hit(first, Hit.CONVERSION, START + timedelta(seconds=2), visitor_id="v3", order_id="C-1"),  # a repeat
            hit(first, Hit.CLICK, START - timedelta(seconds=1), visitor_id="v3", msclkid="late-click"),
            hit(first, Hit.CONVERSION, START + timedelta(seconds=3), visitor_id="v3", order_id="C-2")]

    rows = compare(shops, hits, 500, 1)

    by_order = {row[2]: row for row in rows["conversions"]}
    assert by_order["C-1"][7] == by_order["C-2"][7] == "late-click"  # before and after the click
    assert by_order["A-0"][7] == "late-click"  # stored earlier by the server API, same visitor, after the click
    assert len([row for row in rows["conversions"] if row[2] == "C-1"]) == 1
    assert {row[-2] for row in rows["pushes"] if row[7] == "late-click"} == {Push.QUEUED}


def test_the_same_visitor_across_chunks_gets_the_same_rows_as_in_one_chunk(shops):
    first = shops[0]
    hits = [hit(first, Hit.CLICK, START + timedelta(seconds=n), visitor_id="v9", msclkid=f"k{n}") if n % 3 == 0
            else hit(first, Hit.CONVERSION, START + timedelta(seconds=n), visitor_id="v9", order_id=f"D-{n % 4}")
            for n in range(12)]

    rows = compare(shops, hits, 500, 2, 5)

    assert [row[7] for row in sorted(rows["conversions"], key=lambda r: r[5]) if row[2] and row[2][0] == "D"] == \
        ["k0", "k0", "k3", "k6"]  # each took the visitor's latest click when it arrived; repeats changed nothing


def test_a_poison_hit_keeps_its_error_and_the_rest_of_its_chunk_is_stored(client, shops):
    first = shops[0]
    queue([hit(first, Hit.CLICK, START, visitor_id="v1", msclkid="k1"),
           Hit(site=first, kind=Hit.CONVERSION, payload={"event": "purchase"}, received_at=START, lane=lane_of("")),
           hit(first, Hit.CONVERSION, START, visitor_id="v1", order_id="E-1")])

    result = inbox.drain()

    assert (result.stored, result.failed) == (2, 1)
    assert Hit.objects.get().error.startswith("KeyError")
    assert Conversion.objects.get(order_id="E-1").msclkid == "k1"


@pytest.mark.skipif(db_connection.vendor != "postgresql", reason="SQLite stores any number in a decimal column")
def test_a_hit_the_database_refuses_fails_alone_and_the_chunk_is_stored_one_by_one(shops):
    first = shops[0]
    queue([hit(first, Hit.CONVERSION, START, visitor_id="v1", order_id="F-1"),
           hit(first, Hit.CONVERSION, START, visitor_id="v2", order_id="F-2", value="1e20"),  # numeric overflow
           hit(first, Hit.CONVERSION, START, visitor_id="v3", order_id="F-3")])

    result = inbox.drain()

    assert (result.stored, result.failed) == (2, 1)
    assert Hit.objects.get().error.startswith("DataError")
    assert sorted(Conversion.objects.filter(order_id__startswith="F").values_list("order_id", flat=True)) == \
        ["F-1", "F-3"]


@pytest.mark.skipif(db_connection.vendor != "postgresql",
                    reason="SQLite caps a statement at 999 parameters: Django splits long inserts there (dev only)")
def test_a_chunk_takes_the_same_number_of_queries_whatever_its_length(shops):
    earlier_data(shops)

    def visitors(count: int, tag: str) -> list[Hit]:
        """Per visitor: a conversion waiting for its click, the click, a conversion with it, a repeat, an email."""
        hits, yes = [], "granted"  # the second shop requires consent
        for n in range(count):
            site, visitor, moment = shops[n % 3], f"{tag}{n}", START + timedelta(seconds=n)
            hits += [hit(site, Hit.CONVERSION, moment, visitor_id=visitor, order_id=f"{visitor}-1", ad_storage=yes),
                     hit(site, Hit.CLICK, moment - timedelta(seconds=1), visitor_id=visitor, msclkid=f"k{visitor}",
                         ad_storage=yes),
                     hit(site, Hit.CONVERSION, moment, visitor_id=visitor, order_id=f"{visitor}-2",
                         msclkid=f"k{visitor}", hashed_email="e" * 64, ad_storage=yes),
                     hit(site, Hit.CONVERSION, moment, visitor_id=visitor, order_id=f"{visitor}-2", ad_storage=yes),
                     hit(site, Hit.CONVERSION, moment, visitor_id="v3", hashed_email="f" * 64, ad_storage=yes)]
        return hits

    def queries_for(count: int, tag: str) -> int:
        waiting = Conversion.objects.create(site=shops[0], event_name="purchase", order_id=f"{tag}-server",
                                            occurred_at=START.replace(microsecond=0), visitor_id=f"{tag}0")
        transitions.create_pushes(waiting)  # stored before, explained by this chunk's first click
        reports = [chunk.Report(h, inbox.read(h)) for h in queue(visitors(count, tag))]
        with CaptureQueriesContext(db_connection) as queries:
            chunk.store_chunk(reports)
        assert Conversion.objects.filter(order_id=f"{tag}{count - 1}-1", msclkid=f"k{tag}{count - 1}").exists()
        assert set(Push.objects.filter(conversion__order_id=f"{tag}-server").values_list("status", flat=True)) == \
            {Push.QUEUED}
        return len(queries)

    small, large = queries_for(8, "s"), queries_for(100, "l")  # 40 and 500 hits

    assert small == large
    assert large <= 16  # reads, inserts, late matches: about a dozen for the chunk, not ten per hit


def test_a_report_read_from_a_hit_is_what_the_endpoint_validated(shops):
    first = shops[0]
    stored = queue([hit(first, Hit.CONVERSION, START, visitor_id="v1", order_id="G-1", value="49.900",
                        occurred_at=START.isoformat())])[0]

    assert inbox.read(stored) == ConversionPayload(event="purchase", order_id="G-1", value=Decimal("49.900"),
                                                   currency="USD", occurred_at=START, visitor_id="v1")
