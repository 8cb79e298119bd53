"""Restating and retracting conversions: the server API, what changes locally before sending, and the
adjustment rows the flush sends with ApplyOfflineConversionAdjustments (Microsoft doubled with `responses`).

Reference: docs/microsoft-api.md#adjustments.
"""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from adsync.intake.adjustments import AdjustmentRefused, adjust
from adsync.jobs import run_flush as flush_conversions
from adsync.models import Adjustment, Conversion, Push
from adsync.push import transitions
from adsync.push.claims import claim_batch
from adsync.push.flush import flush_connection
from adsync.sites import api_secrets
from tests.conftest import APPLY_URL, CAMPAIGN

pytestmark = pytest.mark.django_db

ADJUST_URL = CAMPAIGN + "/CampaignManagement/v13/OfflineConversionAdjustments/Apply"
MSCLKID = "f894f652ea334e739002f7167ab8f8e3"


def ok(tracking_id: str = "tracking-1", partial_errors=None):
    return {"json": {"PartialErrors": partial_errors or []}, "headers": {"TrackingId": tracking_id}}


def bodies(mocked, url: str) -> list[dict]:
    return [json.loads(call.request.body) for call in mocked.calls if call.request.url == url]


def urls(mocked) -> list[str]:
    return [call.request.url for call in mocked.calls]


def iso(moment) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def secret(site) -> str:
    return api_secrets.issue(site)


def patch(client, secret: str, order_id: str, body: dict | None = None, query: str = ""):
    return client.patch(f"/api/v1/conversions/{order_id}{query}", json.dumps(body or {}),
                        content_type="application/json", headers={"Authorization": f"Bearer {secret}"})


def delete(client, secret: str, order_id: str, body: dict | None = None, query: str = ""):
    return client.delete(f"/api/v1/conversions/{order_id}{query}", json.dumps(body) if body is not None else "",
                         content_type="application/json", headers={"Authorization": f"Bearer {secret}"})


@pytest.fixture
def sent(mocked, site, connection, make_conversion) -> Conversion:
    """A conversion Microsoft accepted (sent two hours after it happened)."""
    conversion = make_conversion(site, order_id="A-1001", msclkid=MSCLKID, value=Decimal("49.90"))
    mocked.post(APPLY_URL, **ok("first-send"))
    flush_conversions()
    assert conversion.pushes.get().status == Push.SENT
    mocked.calls.reset()
    return conversion


# --- Before the conversion was sent: a local change, nothing goes to Microsoft ---------------------------

def test_a_restate_before_sending_changes_the_value_that_will_be_sent(client, mocked, site, connection, secret,
                                                                      make_conversion):
    make_conversion(site, order_id="A-1001", msclkid=MSCLKID, value=Decimal("49.90"))

    response = patch(client, secret, "A-1001", {"value": 39.9, "currency": "EUR"})
    mocked.post(APPLY_URL, **ok())
    flush_conversions()

    assert response.status_code == 200
    answer = response.json()
    assert (answer["value"], answer["currency"], answer["adjustment"]["created"]) == (39.9, "EUR", True)
    sent_item = bodies(mocked, APPLY_URL)[0]["OfflineConversions"][0]
    assert (sent_item["ConversionValue"], sent_item["ConversionCurrencyCode"]) == (39.9, "EUR")
    assert ADJUST_URL not in urls(mocked)
    assert list(Push.objects.values_list("kind", "status")) == [(Push.CONVERSION, Push.SENT)]


def test_a_retract_before_sending_cancels_the_row_and_nothing_is_ever_sent(client, mocked, site, connection, secret,
                                                                           make_conversion):
    make_conversion(site, order_id="A-1001", msclkid=MSCLKID)

    response = delete(client, secret, "A-1001")
    mocked.post(APPLY_URL, **ok())
    flush_conversions()

    assert response.status_code == 200
    assert response.json()["retractedAt"] is not None
    push = Push.objects.get()
    assert (push.status, push.error_symbol) == (Push.CANCELLED, "adsync:retracted")
    assert push.error_message == "Retracted (refund or cancellation) before it was sent: never sent to Microsoft."
    assert len(mocked.calls) == 0  # nothing at all went to Microsoft


def test_a_retracted_conversion_waiting_for_its_click_never_goes_out_when_the_click_arrives(
        client, site, connection, secret, make_conversion):
    conversion = make_conversion(site, order_id="A-1001", msclkid="", visitor_id="v-1")
    assert conversion.pushes.get().status == Push.PENDING_IDENTITY

    delete(client, secret, "A-1001")
    transitions.identify([conversion.pk], MSCLKID, timezone.now())

    assert conversion.pushes.get().status == Push.CANCELLED


def test_a_retracted_conversion_that_had_failed_cannot_be_replayed(client, site, connection, secret,
                                                                  make_conversion):
    conversion = make_conversion(site, order_id="A-1001")
    Push.objects.update(status=Push.ERROR, error_code=5612, error_message="Failed")  # as a flush leaves it
    delete(client, secret, "A-1001")

    assert transitions.replay(Push.objects.all()) == 0
    assert conversion.pushes.get().status == Push.CANCELLED


# --- After it was sent: an adjustment row, sent with ApplyOfflineConversionAdjustments -------------------

def test_a_restate_after_sending_is_sent_naming_the_original_exactly(client, mocked, connection, secret, sent):
    original = sent.pushes.get()
    at = timezone.now().replace(microsecond=0) - timedelta(minutes=5)

    response = patch(client, secret, "A-1001", {"value": 25, "currency": "usd", "time": iso(at)})
    mocked.post(ADJUST_URL, **ok("adjust-1"))
    flush_conversions()

    assert response.status_code == 200
    assert response.json()["adjustment"] == {"type": "restate", "time": iso(at), "value": 25.0, "currency": "USD",
                                             "source": "server", "created": True}
    assert bodies(mocked, ADJUST_URL) == [{"OfflineConversionAdjustments": [{
        "AdjustmentType": "Restate", "AdjustmentTime": iso(at), "ConversionName": "Purchase",
        "ConversionTime": iso(original.conversion_time), "AdjustmentValue": 25.0, "AdjustmentCurrencyCode": "USD",
        "MicrosoftClickId": MSCLKID}]}]
    adjustment = Push.objects.get(kind=Push.RESTATE)
    assert (adjustment.status, adjustment.tracking_id, adjustment.attempts) == (Push.SENT, "adjust-1", 1)
    assert (adjustment.conversion_id, adjustment.connection_id) == (sent.pk, connection.pk)
    original.refresh_from_db()
    assert (original.status, original.value) == (Push.SENT, Decimal("49.900"))  # what was sent stays recorded
    assert APPLY_URL not in urls(mocked)


def test_a_retract_after_sending_is_sent_without_a_value(client, mocked, secret, sent):
    response = delete(client, secret, "A-1001")
    mocked.post(ADJUST_URL, **ok())
    flush_conversions()

    item = bodies(mocked, ADJUST_URL)[0]["OfflineConversionAdjustments"][0]
    assert item["AdjustmentType"] == "Retract"
    assert "AdjustmentValue" not in item and "AdjustmentCurrencyCode" not in item
    assert item["AdjustmentTime"] == response.json()["adjustment"]["time"]
    assert Push.objects.get(kind=Push.RETRACT).status == Push.SENT
    assert sent.pushes.get(kind=Push.CONVERSION).status == Push.SENT


def test_a_retract_time_may_be_given_in_the_query_string(client, mocked, secret, sent):
    at = iso(timezone.now() - timedelta(minutes=1))

    response = delete(client, secret, "A-1001", query=f"?time={at}")

    assert response.json()["adjustment"]["time"] == at


def test_conversions_and_adjustments_go_in_separate_calls_conversions_first(client, mocked, site, secret, sent,
                                                                            make_conversion):
    make_conversion(site, order_id="A-1002")
    patch(client, secret, "A-1001", {"value": 10})
    mocked.post(APPLY_URL, **ok())
    mocked.post(ADJUST_URL, **ok())

    flush_conversions()

    assert urls(mocked) == [APPLY_URL, ADJUST_URL]
    assert [len(b["OfflineConversions"]) for b in bodies(mocked, APPLY_URL)] == [1]
    assert [len(b["OfflineConversionAdjustments"]) for b in bodies(mocked, ADJUST_URL)] == [1]


def test_2500_adjustments_go_out_in_three_calls_of_at_most_1000(mocked, site, connection, make_conversion):
    conversion = make_conversion(site, msclkid=MSCLKID)
    Push.objects.update(status=Push.SENT)
    now = timezone.now().replace(microsecond=0)
    adjustments = Adjustment.objects.bulk_create(
        Adjustment(conversion=conversion, kind=Adjustment.RESTATE, adjusted_at=now - timedelta(seconds=i),
                   value=Decimal(i), currency="USD") for i in range(2500))
    adjustments = list(Adjustment.objects.order_by("id"))
    original = conversion.pushes.get()
    for adjustment in adjustments:
        transitions.create_adjustment_pushes(adjustment, [original])
    mocked.post(ADJUST_URL, **ok())

    flush_conversions()

    assert [len(b["OfflineConversionAdjustments"]) for b in bodies(mocked, ADJUST_URL)] == [1000, 1000, 500]
    assert Push.objects.filter(kind=Push.RESTATE, status=Push.SENT).count() == 2500


def test_a_claim_takes_conversions_or_adjustments_never_both(client, mocked, site, connection, secret, sent,
                                                             make_conversion):
    make_conversion(site, order_id="A-1002")
    patch(client, secret, "A-1001", {"value": 10})

    conversions = claim_batch(connection, 1000)
    adjustments = claim_batch(connection, 1000, adjustments=True)

    assert [p.kind for p in conversions] == [Push.CONVERSION]
    assert [p.kind for p in adjustments] == [Push.RESTATE]
    assert claim_batch(connection, 1000, adjustments=True) == []  # leased: an overlapping flush gets none


# --- Idempotency: (order id, kind, time) -------------------------------------------------------------------

def test_the_same_restate_asked_twice_is_one_adjustment(client, mocked, secret, sent):
    at = iso(timezone.now() - timedelta(minutes=2))

    first = patch(client, secret, "A-1001", {"value": 25, "time": at})
    second = patch(client, secret, "A-1001", {"value": 26, "time": at})

    assert (first.json()["adjustment"]["created"], second.json()["adjustment"]["created"]) == (True, False)
    assert second.json()["adjustment"]["value"] == 25.0  # the first one stands
    assert Adjustment.objects.count() == 1 and Push.objects.filter(kind=Push.RESTATE).count() == 1


def test_a_retract_asked_again_at_another_time_returns_the_first(client, mocked, secret, sent):
    first = delete(client, secret, "A-1001", {"time": iso(timezone.now() - timedelta(minutes=3))})
    second = delete(client, secret, "A-1001")

    assert second.status_code == 200
    assert second.json()["adjustment"] == {**first.json()["adjustment"], "created": False}
    assert Push.objects.filter(kind=Push.RETRACT).count() == 1


def test_later_restates_are_sent_each_and_the_latest_value_is_kept(client, mocked, secret, sent):
    now = timezone.now()
    patch(client, secret, "A-1001", {"value": 30, "time": iso(now - timedelta(minutes=1))})
    patch(client, secret, "A-1001", {"value": 20, "time": iso(now - timedelta(minutes=9))})  # older, arrives late

    sent.refresh_from_db()
    assert sent.value == Decimal("30.000")
    assert Push.objects.filter(kind=Push.RESTATE, status=Push.QUEUED).count() == 2  # Microsoft keeps the latest


# --- Rules checked before anything is stored ---------------------------------------------------------------

@pytest.mark.parametrize("call, body, status, error", [
    (patch, {}, 400, "value: is required to restate a conversion"),
    (patch, {"value": "25"}, 400, "value: must be a number"),
    (patch, {"value": -1}, 400, "value: must be 0 or more"),
    (patch, {"value": 1, "currency": "ZZZ"}, 400, "currency: must be a 3-letter ISO 4217 code, e.g. USD"),
    (patch, {"value": 1, "orderId": "A"}, 400, "orderId: is not a known field (currency, time, value)"),
    (delete, {"value": 1}, 400, "value: is not a known field (time)"),
    (patch, {"value": 1, "time": "2026-11-20T14:03:11"}, 400,
     "time: must include a UTC offset, e.g. 2026-11-20T14:03:11Z"),
])
def test_an_invalid_adjustment_is_400_naming_the_field_and_changes_nothing(client, secret, sent, call, body, status,
                                                                           error):
    response = call(client, secret, "A-1001", body)

    assert (response.status_code, response.json()) == (status, {"error": error})
    assert not Adjustment.objects.exists() and Push.objects.count() == 1


def test_an_adjustment_before_the_conversion_time_is_refused(client, secret, sent):
    before = iso(sent.occurred_at - timedelta(seconds=1))

    response = patch(client, secret, "A-1001", {"value": 1, "time": before})

    assert response.status_code == 400
    assert response.json()["error"] == f"time: must not be before the conversion time ({iso(sent.occurred_at)})"
    assert not Adjustment.objects.exists()


def test_a_future_adjustment_time_is_refused(client, secret, sent):
    response = delete(client, secret, "A-1001", {"time": iso(timezone.now() + timedelta(hours=1))})

    assert (response.status_code, response.json()["error"]) == (400, "time: is more than 5 minutes in the future")


def test_a_restate_after_a_retract_is_refused_with_409(client, secret, sent):
    delete(client, secret, "A-1001")

    response = patch(client, secret, "A-1001", {"value": 5})

    assert response.status_code == 409
    assert response.json()["error"] == "orderId: this conversion was retracted; a retracted conversion cannot be restated"
    assert not Adjustment.objects.filter(kind=Adjustment.RESTATE).exists()


def test_a_sent_conversion_older_than_90_days_cannot_be_adjusted(client, secret, sent):
    Conversion.objects.update(occurred_at=timezone.now() - timedelta(days=91))

    response = delete(client, secret, "A-1001")

    assert response.status_code == 422
    assert "more than 90 days old" in response.json()["error"]
    assert not Adjustment.objects.exists() and Conversion.objects.get().retracted_at is None


def test_an_unknown_order_is_404_and_a_shared_order_id_needs_the_event(client, site, connection, secret,
                                                                       make_conversion):
    make_conversion(site, order_id="A-1", event="purchase")
    make_conversion(site, order_id="A-1", event="lead")

    assert patch(client, secret, "nope", {"value": 1}).status_code == 404
    assert patch(client, secret, "A-1", {"value": 1}).json() == {
        "error": "event: required, this order id belongs to several events"}
    assert patch(client, secret, "A-1", {"value": 1}, query="?event=lead").status_code == 200


def test_adjusting_needs_the_sites_bearer_secret(client, sent):
    response = client.delete("/api/v1/conversions/A-1001")

    assert response.status_code == 401 and not Adjustment.objects.exists()


# --- The pre-send checks of an adjustment row ---------------------------------------------------------------

def test_an_adjustment_of_a_conversion_in_flight_waits_for_it_then_goes_out(mocked, site, connection,
                                                                            make_conversion):
    conversion = make_conversion(site, order_id="A-1001", msclkid=MSCLKID)
    in_flight = claim_batch(connection, 1000)  # a flush is sending it right now

    done = adjust(conversion, Adjustment.RETRACT)
    waiting = Push.objects.get(kind=Push.RETRACT)
    assert (done.queued, conversion.pushes.get(kind=Push.CONVERSION).status) == (1, Push.QUEUED)

    flush_connection(connection)  # the conversion is still leased: the retract is held, not sent
    waiting.refresh_from_db()
    assert (waiting.status, waiting.error_symbol, waiting.attempts) == (Push.QUEUED, "adsync:held", 0)
    assert "Waits for the conversion it adjusts" in waiting.error_message

    Push.objects.filter(pk=in_flight[0].id).update(claimed_until=None)  # its lease ends; it is sent next
    Push.objects.filter(pk=waiting.pk).update(next_attempt_at=timezone.now())
    mocked.post(APPLY_URL, **ok())
    mocked.post(ADJUST_URL, **ok())
    flush_connection(connection)
    assert urls(mocked) == [APPLY_URL, ADJUST_URL]
    assert set(Push.objects.values_list("status", flat=True)) == {Push.SENT}


def test_an_adjustment_whose_conversion_then_failed_is_cancelled_not_sent(mocked, site, connection,
                                                                          make_conversion):
    conversion = make_conversion(site, order_id="A-1001", msclkid=MSCLKID)
    claim_batch(connection, 1000)
    adjust(conversion, Adjustment.RESTATE, value=Decimal("5"))
    Push.objects.filter(kind=Push.CONVERSION).update(status=Push.ERROR, claimed_until=None, claim_token=None)

    flush_connection(connection)

    restate = Push.objects.get(kind=Push.RESTATE)
    assert (restate.status, restate.error_symbol) == (Push.CANCELLED, "adsync:original_not_sent")
    assert restate.error_message == ("The conversion it adjusts never reached Microsoft (that row is error): there is "
                                     "nothing to adjust.")
    assert len(mocked.calls) == 0


def test_an_adjustment_past_microsofts_window_fails_with_an_adsync_reason(mocked, client, secret, sent):
    delete(client, secret, "A-1001")
    Push.objects.update(conversion_time=timezone.now() - timedelta(days=91))

    flush_conversions()

    retract = Push.objects.get(kind=Push.RETRACT)
    assert (retract.status, retract.error_symbol, retract.error_code) == (Push.ERROR, "adsync:older_than_90_days", None)
    assert len(mocked.calls) == 0


# --- Microsoft's adjustment errors (docs/microsoft-api.md#adjustments) ------------------------------------

def restates(client, secret, count: int) -> list[Push]:
    now = timezone.now()
    for i in range(count):
        patch(client, secret, "A-1001", {"value": i + 1, "time": iso(now - timedelta(minutes=i + 1))})
    return list(Push.objects.filter(kind=Push.RESTATE).order_by("id"))


def test_microsofts_adjustment_errors_are_mapped_by_index_with_their_words_verbatim(client, mocked, secret, sent):
    rows = restates(client, secret, 3)
    errors = [
        {"Code": 5627, "ErrorCode": "OfflineConversionRestateRetractNotSupported", "Index": 2, "Type": "BatchError",
         "Message": "The restate and retract adjustment type is not supported for this conversion."},
        {"Code": 5620, "ErrorCode": "OfflineConversionAdjustmentTimeEarlierThanConversionTime", "Index": 0,
         "Type": "BatchError", "Message": "The adjustment time cannot be earlier than the conversion time."},
    ]
    mocked.post(ADJUST_URL, **ok("adjust-77", errors))

    flush_conversions()

    by_id = {p.pk: p for p in Push.objects.filter(kind=Push.RESTATE)}
    first, second, third = (by_id[row.pk] for row in rows)
    assert [first.status, second.status, third.status] == [Push.ERROR, Push.SENT, Push.ERROR]
    assert (first.error_code, first.error_symbol) == (5620, "OfflineConversionAdjustmentTimeEarlierThanConversionTime")
    assert first.error_message == "The adjustment time cannot be earlier than the conversion time."
    assert third.error_code == 5627 and {first.tracking_id, second.tracking_id} == {"adjust-77"}


def test_a_future_adjustment_time_at_microsoft_is_retried_later_not_failed(client, mocked, secret, sent):
    restates(client, secret, 1)
    mocked.post(ADJUST_URL, **ok(partial_errors=[{
        "Code": 5622, "ErrorCode": "OfflineConversionFutureAdjustmentTimeCannotBeSet", "Index": 0,
        "Message": "The adjustment time cannot be in the future."}]))

    flush_conversions()

    row = Push.objects.get(kind=Push.RESTATE)
    assert (row.status, row.attempts, row.error_code) == (Push.QUEUED, 1, 5622)
    assert row.next_attempt_at > timezone.now()


@pytest.mark.parametrize("failure", [
    {"status": 500, "body": "Internal Server Error"},
    {"status": 503, "json": {"Type": "AdApiFaultDetail", "TrackingId": "t",
                             "Errors": [{"Code": 0, "ErrorCode": "InternalError", "Message": "An internal error"}]}},
])
def test_a_failed_adjustment_call_leaves_every_adjustment_queued(client, mocked, secret, connection, sent, failure):
    restates(client, secret, 2)
    mocked.post(ADJUST_URL, **failure)

    result = flush_connection(connection)

    assert (result.sent, result.requeued) == (0, 2)
    for row in Push.objects.filter(kind=Push.RESTATE):
        assert (row.status, row.sent_at, row.claim_token) == (Push.QUEUED, None, None)


def test_an_expired_token_on_an_adjustment_call_is_refreshed_once_and_retried(client, mocked, secret, connection,
                                                                              sent):
    from tests.conftest import TOKEN_URL

    restates(client, secret, 1)
    expired = {"Type": "AdApiFaultDetail", "TrackingId": "t",
               "Errors": [{"Code": 109, "ErrorCode": "AuthenticationTokenExpired", "Message": "expired"}]}
    mocked.post(ADJUST_URL, status=401, json=expired)
    mocked.post(ADJUST_URL, **ok("after-refresh"))
    mocked.post(TOKEN_URL, json={"access_token": "access-2", "refresh_token": "refresh-2", "expires_in": 3600})

    flush_connection(connection)

    assert Push.objects.get(kind=Push.RESTATE).status == Push.SENT
    assert [c.request.headers["Authorization"] for c in mocked.calls if c.request.url == ADJUST_URL] == [
        "Bearer access-1", "Bearer access-2"]


def test_an_operator_cannot_adjust_an_erased_conversion(sent):
    Conversion.objects.update(erased_at=timezone.now(), order_id=None)
    sent.refresh_from_db()

    with pytest.raises(AdjustmentRefused, match="erased"):
        adjust(sent, Adjustment.RETRACT)


# --- Malformed adjustment requests (strategies of tests/fuzzing.py) -----------------------------------------

def _adjustment_requests():
    from hypothesis import strategies as st

    from tests import fuzzing

    restate = fuzzing.bodies(fuzzing.mutated(("value",), ("currency", "time")))
    retract = st.one_of(st.just(b""), fuzzing.bodies(fuzzing.mutated((), ("time",))))
    order = st.one_of(st.just("A-1001"), st.just("A-1001"), fuzzing.TEXTS.map(lambda t: fuzzing.quoted(t) or "x"))
    query = st.one_of(st.just(""), st.just("?event=purchase"), fuzzing.TEXTS.map(lambda t: "?time=" + fuzzing.quoted(t)),
                      fuzzing.TEXTS.map(lambda t: "?event=" + fuzzing.quoted(t)))
    return st.one_of(st.tuples(st.just("PATCH"), order, query, restate),
                     st.tuples(st.just("DELETE"), order, query, retract))


def _state() -> tuple:
    return (Adjustment.objects.count(), Push.objects.count(),
            tuple(Push.objects.order_by("id").values_list("status", "value")),
            tuple(Conversion.objects.values_list("value", "currency", "retracted_at")))


def test_malformed_adjustments_never_get_a_5xx_and_a_refused_one_changes_nothing(client, secret, sent):
    from hypothesis import HealthCheck, given, settings

    from tests.fuzzing import postgres_text_rules

    @settings(max_examples=150, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                     HealthCheck.data_too_large])
    @given(request=_adjustment_requests())
    def check(request):
        method, order, query, body = request
        before, refused = _state(), []
        with postgres_text_rules(refused):
            response = client.generic(method, f"/api/v1/conversions/{order}{query}", data=body,
                                      content_type="application/json", headers={"Authorization": f"Bearer {secret}"})
        assert response.status_code < 500 and refused == [], (method, order, query, body[:200])
        if response.status_code >= 400:
            assert _state() == before, (response.status_code, response.content[:200])

    check()
