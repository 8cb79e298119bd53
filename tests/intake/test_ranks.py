"""Source ranks (adsync/intake/record.py, docs/tracking.md#source-ranks): what a server report does to a
browser report of the same order, whatever state the browser report's push is in."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from adsync.intake import record
from adsync.intake.adjustments import adjust
from adsync.intake.reports import ConversionPayload
from adsync.models import Adjustment, Conversion, Push, Site
from adsync.push import transitions
from adsync.push.claims import claim_batch

pytestmark = pytest.mark.django_db

BROWSER, SERVER = Conversion.SOURCE_BROWSER, Conversion.SOURCE_SERVER
REAL_CLICK, OTHER_CLICK = "f894f652ea334e739002f7167ab8f8e3", "0c6e1a7a9d8b4f3e8a2b5c4d3e2f1a0b"


def report(**fields) -> ConversionPayload:
    return ConversionPayload(**{"event": "purchase", "order_id": "A-1", "currency": "USD", **fields})


def test_outranks_puts_authenticated_reports_above_the_browser():
    assert record.outranks(SERVER, BROWSER) and record.outranks(Conversion.SOURCE_ADMIN, BROWSER)
    assert not record.outranks(BROWSER, SERVER) and not record.outranks(SERVER, SERVER)
    assert not record.outranks(BROWSER, BROWSER)


def test_a_server_report_turns_a_browser_push_waiting_for_an_identity_into_its_own(site, connection):
    record.record_conversion(site, report(value=Decimal("1")), source=BROWSER)
    assert Push.objects.get().status == Push.PENDING_IDENTITY

    done = record.record_conversion(site, report(value=Decimal("420.5"), msclkid=REAL_CLICK), source=SERVER)

    push = Push.objects.get()
    assert (done.created, done.replaced) == (True, True)
    assert (push.status, push.source, push.msclkid, push.value) == (Push.QUEUED, SERVER, REAL_CLICK, Decimal("420.5"))


def test_a_server_report_replaces_the_time_and_identity_too(site, connection):
    then = timezone.now().replace(microsecond=0) - timedelta(hours=3)
    record.record_conversion(site, report(msclkid=OTHER_CLICK, hashed_email="e" * 64), source=BROWSER)

    record.record_conversion(site, report(occurred_at=then, visitor_id="v9"), source=SERVER)

    conversion = Conversion.objects.get()
    assert (conversion.occurred_at, conversion.msclkid, conversion.hashed_email, conversion.visitor_id) == (
        then, "", "", "v9")  # no click of the browser's survives: the server did not vouch for it
    push = Push.objects.get()
    assert (push.conversion_time, push.msclkid, push.status) == (then, "", Push.PENDING_IDENTITY)


def test_a_browser_push_microsoft_refused_is_sent_again_with_the_servers_values(site, connection):
    record.record_conversion(site, report(msclkid="test_msclkid_123"), source=BROWSER)
    Push.objects.update(status=Push.ERROR, error_code=5604, error_message="The Microsoft Click Id is invalid.",
                        attempts=1, tracking_id="t-1")

    record.record_conversion(site, report(msclkid=REAL_CLICK), source=SERVER)

    push = Push.objects.get()
    assert (push.status, push.msclkid, push.attempts, push.error_code, push.error_message, push.tracking_id) == (
        Push.QUEUED, REAL_CLICK, 0, None, "", "")


def test_a_browser_value_held_for_review_is_released_by_the_server_report(site, connection):
    Site.objects.filter(pk=site.pk).update(browser_value_ceiling=Decimal("100"))
    site.refresh_from_db()
    record.record_conversion(site, report(value=Decimal("5000"), msclkid=REAL_CLICK), source=BROWSER)
    assert Push.objects.get().error_symbol == "adsync:value_held"

    record.record_conversion(site, report(value=Decimal("5000"), msclkid=REAL_CLICK), source=SERVER)

    push = Push.objects.get()
    assert (push.status, push.error_symbol) == (Push.QUEUED, "")


def test_a_browser_push_a_flush_is_sending_is_treated_as_sent_and_retired_if_that_attempt_fails(site, connection):
    record.record_conversion(site, report(msclkid=OTHER_CLICK), source=BROWSER)
    [in_flight] = claim_batch(connection, 10)  # a flush is sending it right now

    record.record_conversion(site, report(msclkid=REAL_CLICK), source=SERVER)
    outcome = transitions.BatchOutcome(in_flight.claim_token)
    outcome.retry(in_flight, None, "", "Microsoft did not answer")  # that attempt failed: it would be retried...
    outcome.write("t-2")

    browser, server = Push.objects.order_by("id")
    assert (browser.source, browser.status, browser.error_symbol) == (BROWSER, Push.ERROR, "adsync:replaced")
    assert (server.source, server.status, server.msclkid) == (SERVER, Push.QUEUED, REAL_CLICK)


def test_a_browser_push_a_flush_was_sending_and_that_went_out_stays_sent_beside_the_servers(site, connection):
    record.record_conversion(site, report(msclkid=OTHER_CLICK), source=BROWSER)
    [in_flight] = claim_batch(connection, 10)

    record.record_conversion(site, report(msclkid=REAL_CLICK), source=SERVER)
    outcome = transitions.BatchOutcome(in_flight.claim_token)
    outcome.send(in_flight)
    outcome.write("t-3")

    assert list(Push.objects.order_by("id").values_list("source", "status")) == [(BROWSER, Push.SENT),
                                                                                (SERVER, Push.QUEUED)]


def test_a_server_report_microsoft_would_take_for_the_sent_browser_report_is_not_sent_again(site, connection):
    moment = timezone.now().replace(microsecond=0) - timedelta(hours=1)
    record.record_conversion(site, report(msclkid=REAL_CLICK, value=Decimal("10")), source=BROWSER,
                             now=moment)
    Push.objects.update(status=Push.SENT)

    record.record_conversion(site, report(msclkid=REAL_CLICK, value=Decimal("10"), occurred_at=moment),
                             source=SERVER)

    # Same goal, click and second: Microsoft would ignore a second upload as a duplicate.
    assert list(Push.objects.values_list("source", "status")) == [(BROWSER, Push.SENT)]
    assert Conversion.objects.get().source == SERVER


def test_a_goal_mapped_after_the_browser_report_gets_the_servers_push(site, make_connection):
    first = make_connection(site)
    record.record_conversion(site, report(msclkid=REAL_CLICK), source=BROWSER)
    second = make_connection(site, account_id="999")

    record.record_conversion(site, report(msclkid=REAL_CLICK), source=SERVER)

    assert sorted(Push.objects.values_list("connection_id", "source", "status")) == [
        (first.pk, SERVER, Push.QUEUED), (second.pk, SERVER, Push.QUEUED)]


def test_a_retract_reaches_both_the_sent_browser_report_and_the_server_report_beside_it(site, connection):
    record.record_conversion(site, report(msclkid=OTHER_CLICK), source=BROWSER)
    Push.objects.update(status=Push.SENT)
    record.record_conversion(site, report(msclkid=REAL_CLICK), source=SERVER)
    Push.objects.filter(source=SERVER).update(status=Push.SENT)

    adjust(Conversion.objects.get(), Adjustment.RETRACT)

    retracts = Push.objects.filter(kind=Push.RETRACT).order_by("source")
    assert [(p.source, p.msclkid, p.status) for p in retracts] == [(BROWSER, OTHER_CLICK, Push.QUEUED),
                                                                  (SERVER, REAL_CLICK, Push.QUEUED)]


def test_a_held_value_of_a_conversion_retracted_or_erased_since_is_not_released(site, connection):
    Site.objects.filter(pk=site.pk).update(browser_value_ceiling=Decimal("100"))
    site.refresh_from_db()
    record.record_conversion(site, report(value=Decimal("5000"), msclkid=REAL_CLICK), source=BROWSER)
    Conversion.objects.update(erased_at=timezone.now())

    assert transitions.release_held_values(Push.objects.all()) == 0
    assert Push.objects.get().error_symbol == "adsync:value_held"
