"""ApplyOfflineConversionAdjustments in the emulator, and adsync's client for it.

https://learn.microsoft.com/en-us/advertising/campaign-management-service/applyofflineconversionadjustments?view=bingads-13
"""

from __future__ import annotations

import gc
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from adsync.microsoft.campaign import (
    RESTATE,
    RETRACT,
    offline_conversion_adjustment_json,
)
from adsync.microsoft.errors import Kind, MicrosoftAdsError
from emulator.models import EmulatorAdjustment, EmulatorConversion, EmulatorUser
from tests.emulator.support import (
    ADJUST,
    APPLY,
    access_token_for,
    campaign_client,
    error_codes,
    fault_code,
    iso,
    new_click,
    point_adsync_at,
    post,
)

pytestmark = pytest.mark.django_db

HASHED_EMAIL = "ec81f3ac7b2b19675bab9d54cf416f9f18cff87c97da5cca82c0f0891bc40602"


def received(client, token: str, *, name: str = "Purchase", click=None, age: timedelta = timedelta(hours=2),
             **extra) -> dict:
    """Upload one conversion through ApplyOfflineConversions; returns the OfflineConversion as sent."""
    item = {"ConversionName": name, "ConversionTime": iso(timezone.now() - age), "ConversionValue": 10.0,
            "ConversionCurrencyCode": "USD", **extra}
    if click is not None:
        item["MicrosoftClickId"] = click.msclkid
    assert post(client, APPLY, {"OfflineConversions": [item]}, token).json()["PartialErrors"] == []
    return item


def adjustment(original: dict, adjustment_type: str = RESTATE, delay: timedelta = timedelta(minutes=30),
               **extra) -> dict:
    """An adjustment naming `original` exactly; a Restate to 25.0 unless told otherwise."""
    conversion_time = datetime.fromisoformat(original["ConversionTime"])
    item = {"AdjustmentType": adjustment_type, "AdjustmentTime": iso(conversion_time + delay),
            "ConversionName": original["ConversionName"], "ConversionTime": original["ConversionTime"]}
    for key in ("MicrosoftClickId", "HashedEmailAddress", "HashedPhoneNumber"):
        if key in original:
            item[key] = original[key]
    if adjustment_type == RESTATE:
        item["AdjustmentValue"] = 25.0
    return {**item, **extra}


def adjust(client, token: str, items: list, **kwargs):
    return post(client, ADJUST, {"OfflineConversionAdjustments": items}, token, **kwargs)


@pytest.fixture
def original(client, token) -> dict:
    return received(client, token, click=new_click())


# --- Accepted adjustments ---------------------------------------------------------------------

def test_a_restate_of_a_received_conversion_is_accepted_and_changes_its_reported_value(client, token, original):
    response = adjust(client, token, [adjustment(original, AdjustmentCurrencyCode="eur")])

    conversion = EmulatorConversion.objects.get()
    recorded = EmulatorAdjustment.objects.get()
    assert response.status_code == 200 and response.json() == {"PartialErrors": []}
    assert response["TrackingId"] == recorded.tracking_id
    assert (conversion.value, conversion.reported_value, conversion.restated_currency) == (10.0, 25.0, "EUR")
    assert (recorded.adjustment_type, recorded.conversion, recorded.value) == (RESTATE, conversion, 25.0)


def test_a_retract_is_accepted_and_marks_the_conversion_retracted(client, token, original):
    response = adjust(client, token, [adjustment(original, RETRACT)])

    assert response.json() == {"PartialErrors": []}
    assert EmulatorConversion.objects.get().retracted
    assert EmulatorAdjustment.objects.get().adjustment_type == RETRACT


def test_an_adjustment_time_equal_to_the_conversion_time_is_accepted(client, token, original):
    response = adjust(client, token, [adjustment(original, delay=timedelta(0))])

    assert response.json() == {"PartialErrors": []}


def test_a_conversion_sent_with_hashes_only_is_adjusted_by_the_same_hashes(client, token):
    original = received(client, token, name="Lead", HashedEmailAddress=HASHED_EMAIL)

    response = adjust(client, token, [adjustment(original, RETRACT)])

    assert response.json() == {"PartialErrors": []}
    assert EmulatorConversion.objects.get().retracted


def test_a_repeated_upload_is_adjusted_through_the_original_not_the_duplicate(client, token, original):
    post(client, APPLY, {"OfflineConversions": [original]}, token)

    adjust(client, token, [adjustment(original, RETRACT)])

    assert list(EmulatorConversion.objects.order_by("id").values_list("duplicate", "retracted")) == [
        (False, True), (True, False)]


def test_the_latest_restatement_wins_whatever_order_they_arrive_in(client, token, original):
    later = adjustment(original, delay=timedelta(minutes=50), AdjustmentValue=40.0)
    earlier = adjustment(original, delay=timedelta(minutes=10), AdjustmentValue=15.0)

    assert adjust(client, token, [later]).json() == {"PartialErrors": []}
    assert adjust(client, token, [earlier]).json() == {"PartialErrors": []}

    assert EmulatorConversion.objects.get().reported_value == 40.0
    assert EmulatorAdjustment.objects.count() == 2   # both recorded, only the latest in force


def test_a_repeated_retract_is_accepted_silently_but_a_restate_of_a_retracted_conversion_is_5627(
        client, token, original):
    adjust(client, token, [adjustment(original, RETRACT)])

    response = adjust(client, token, [adjustment(original, RETRACT), adjustment(original, RESTATE)])

    assert error_codes(response) == {1: 5627}
    assert EmulatorConversion.objects.get().reported_value == 10.0


def test_adjustments_in_one_request_apply_in_order(client, token, original):
    response = adjust(client, token, [adjustment(original, RESTATE), adjustment(original, RETRACT),
                                      adjustment(original, RESTATE, AdjustmentValue=99.0)])

    assert error_codes(response) == {2: 5627}
    conversion = EmulatorConversion.objects.get()
    assert (conversion.retracted, conversion.reported_value) == (True, 25.0)


# --- Refused adjustments ----------------------------------------------------------------------

def test_retract_with_a_value_is_refused(client, token, original):
    response = adjust(client, token, [adjustment(original, RETRACT, AdjustmentValue=5.0)])

    assert error_codes(response) == {0: 5624}
    assert response.json()["PartialErrors"][0]["ErrorCode"] == "OfflineConversionAdjustmentValueNotExpected"
    assert not EmulatorConversion.objects.get().retracted


def test_restate_without_a_value_is_refused(client, token, original):
    response = adjust(client, token, [adjustment(original, AdjustmentValue=None)])

    assert error_codes(response) == {0: 5625}
    assert response.json()["PartialErrors"][0]["Message"] == "The offline conversion adjustment value is required."


@pytest.mark.parametrize("adjustment_type", ["Delete", "restate", "", None])
def test_an_unknown_adjustment_type_is_refused(client, token, original, adjustment_type):
    response = adjust(client, token, [adjustment(original, AdjustmentType=adjustment_type)])

    assert error_codes(response) == {0: 5618}


def test_an_adjustment_time_before_the_conversion_time_is_refused(client, token, original):
    response = adjust(client, token, [adjustment(original, delay=timedelta(seconds=-1))])

    assert error_codes(response) == {0: 5620}


def test_an_adjustment_time_in_the_future_is_refused(client, token, original):
    response = adjust(client, token, [adjustment(original, AdjustmentTime=iso(timezone.now() + timedelta(hours=1)))])

    assert error_codes(response) == {0: 5622}


def test_an_adjustment_time_a_few_seconds_ahead_is_clock_skew_not_the_future(client, token, original):
    response = adjust(client, token, [adjustment(original, AdjustmentTime=iso(timezone.now() + timedelta(seconds=20)))])

    assert response.json() == {"PartialErrors": []}


def test_an_adjustment_without_an_adjustment_time_is_refused(client, token, original):
    response = adjust(client, token, [adjustment(original, AdjustmentTime=None)])

    assert error_codes(response) == {0: 5619}


@pytest.mark.parametrize(("change", "code"), [
    ({"MicrosoftClickId": "0" * 32}, 5604),                      # a click that never converted
    ({"ConversionTime": "shift"}, 5607),                          # the click converted, but not at that time
    ({"ConversionName": "Lead"}, 5604),                           # the click converted for another goal
    ({"ConversionName": "purchase "}, 5606),                      # not a goal name (exact match)
    ({"ConversionName": "Old Goal"}, 5604),                       # a paused goal is still a goal
])
def test_an_adjustment_that_matches_no_received_conversion_is_refused(client, token, original, change, code):
    if change.get("ConversionTime") == "shift":
        change = {"ConversionTime": iso(datetime.fromisoformat(original["ConversionTime"]) - timedelta(seconds=1))}

    response = adjust(client, token, [adjustment(original, **change)])

    assert error_codes(response) == {0: code}
    assert not EmulatorAdjustment.objects.exists()


def test_hashes_that_never_converted_are_5603_and_known_hashes_at_another_time_are_5607(client, token):
    original = received(client, token, name="Lead", HashedEmailAddress=HASHED_EMAIL)
    other_hash = {"HashedEmailAddress": "f" * 64}
    other_time = {"ConversionTime": iso(datetime.fromisoformat(original["ConversionTime"]) - timedelta(minutes=1))}

    response = adjust(client, token, [adjustment(original, **other_hash), adjustment(original, **other_time)])

    assert error_codes(response) == {0: 5603, 1: 5607}


@pytest.mark.parametrize(("change", "code"), [
    ({"ConversionName": ""}, 5605),
    ({"ConversionTime": None}, 5608),
    ({"MicrosoftClickId": None}, 5603),
    ({"MicrosoftClickId": None, "HashedEmailAddress": "someone@example.com"}, 8004),
    ({"AdjustmentValue": -1.0}, 5610),
    ({"AdjustmentCurrencyCode": "XYZ"}, 5611),
])
def test_each_other_rule_refuses_only_the_offending_adjustment(client, token, original, change, code):
    response = adjust(client, token, [adjustment(original, **change), adjustment(original)])

    assert error_codes(response) == {0: code}
    assert EmulatorConversion.objects.get().reported_value == 25.0


def test_a_conversion_time_older_than_90_days_or_in_the_future_is_refused(client, token, original):
    old = iso(timezone.now() - timedelta(days=91))
    future = iso(timezone.now() + timedelta(hours=1))

    response = adjust(client, token, [adjustment(original, ConversionTime=old, AdjustmentTime=iso(timezone.now())),
                                      adjustment(original, ConversionTime=future, AdjustmentTime=future)])

    assert error_codes(response) == {0: 5609, 1: 5614}


def test_a_null_adjustment_is_5602_and_errors_come_back_in_reverse_index_order(client, token, original):
    response = adjust(client, token, [None, adjustment(original), adjustment(original, AdjustmentType="x")])

    assert [e["Index"] for e in response.json()["PartialErrors"]] == [2, 0]
    assert error_codes(response) == {0: 5602, 2: 5618}


def test_more_than_1000_adjustments_fail_the_whole_request(client, token, original):
    response = adjust(client, token, [adjustment(original)] * 1001)

    assert (response.status_code, response.json()["Type"], fault_code(response)) == (400, "ApiFaultDetail", 5601)
    assert not EmulatorAdjustment.objects.exists()


def test_an_empty_adjustment_list_is_5600(client, token):
    assert fault_code(adjust(client, token, [])) == 5600


def test_an_unparseable_adjustment_time_fails_the_whole_request_and_applies_nothing(client, token, original):
    response = adjust(client, token, [adjustment(original), adjustment(original, AdjustmentTime="12017-11-13T07:22:35")])

    body = response.json()
    assert (response.status_code, body["Type"], fault_code(response)) == (400, "AdApiFaultDetail", 100)
    assert "cannot be parsed as the type 'DateTime'" in body["Errors"][0]["Detail"]
    assert not EmulatorAdjustment.objects.exists()


def test_a_viewer_cannot_adjust_conversions(client, demo, original):
    viewer = EmulatorUser.objects.get(user_name="demo.viewer")
    viewer.accounts.add(demo.user.accounts.get(account_id=demo.account_id))

    response = adjust(client, access_token_for(viewer), [adjustment(original)])

    assert (response.status_code, fault_code(response)) == (403, 106)


# --- The JSON builder --------------------------------------------------------------------------

def test_the_adjustment_builder_writes_utc_whole_seconds_and_leaves_out_empty_fields():
    conversion_time = datetime(2026, 11, 20, 14, 3, 11, 500_000, tzinfo=UTC)
    local_adjustment_time = datetime.fromisoformat("2026-11-21T10:00:00+01:00")

    restate = offline_conversion_adjustment_json(
        goal_name="Closed deal", conversion_time=conversion_time, adjustment_type=RESTATE,
        adjustment_time=local_adjustment_time, value=1250, currency="USD", msclkid="f894f652ea334e739002f7167ab8f8e3")
    retract = offline_conversion_adjustment_json(
        goal_name="Closed deal", conversion_time=conversion_time, adjustment_type=RETRACT,
        adjustment_time=local_adjustment_time, hashed_email=HASHED_EMAIL)

    assert restate == {"AdjustmentType": "Restate", "AdjustmentTime": "2026-11-21T09:00:00Z",
                       "ConversionName": "Closed deal", "ConversionTime": "2026-11-20T14:03:11Z",
                       "AdjustmentValue": 1250.0, "AdjustmentCurrencyCode": "USD",
                       "MicrosoftClickId": "f894f652ea334e739002f7167ab8f8e3"}
    assert retract == {"AdjustmentType": "Retract", "AdjustmentTime": "2026-11-21T09:00:00Z",
                       "ConversionName": "Closed deal", "ConversionTime": "2026-11-20T14:03:11Z",
                       "HashedEmailAddress": HASHED_EMAIL}


def test_the_adjustment_builder_refuses_a_naive_time():
    with pytest.raises(ValueError, match="timezone-aware"):
        offline_conversion_adjustment_json(goal_name="G", conversion_time=datetime(2026, 11, 20, 14, 0),
                                           adjustment_type=RETRACT, adjustment_time=timezone.now())


# --- Through adsync's client, over HTTP -------------------------------------------------------

@pytest.fixture
def live(live_server, settings, demo):
    point_adsync_at(live_server, settings)
    yield live_server
    gc.collect()   # see docs/emulator.md, "Using it in tests"


def test_campaign_client_applies_adjustments_over_http_and_maps_errors_by_index(live, token):
    click = new_click()
    conversion_time = (timezone.now() - timedelta(hours=2)).replace(microsecond=0)
    uploaded = campaign_client(token).apply_offline_conversions([{
        "ConversionName": "Purchase", "ConversionTime": iso(conversion_time), "ConversionValue": 10.0,
        "MicrosoftClickId": click.msclkid}])
    common = {"goal_name": "Purchase", "conversion_time": conversion_time, "msclkid": click.msclkid,
              "adjustment_time": conversion_time + timedelta(hours=1)}
    items = [offline_conversion_adjustment_json(adjustment_type=RETRACT, value=1.0, **common),
             offline_conversion_adjustment_json(adjustment_type=RESTATE, **common),
             offline_conversion_adjustment_json(adjustment_type=RESTATE, value=42.5, currency="USD", **common),
             offline_conversion_adjustment_json(
                 adjustment_type=RESTATE, value=1.0, **{**common, "adjustment_time": timezone.now() + timedelta(1)})]

    result = campaign_client(token).apply_offline_conversion_adjustments(items)

    assert uploaded.errors_by_index == {}
    assert {i: (e.code, e.kind) for i, e in result.errors_by_index.items()} == {
        0: (5624, Kind.ROW), 1: (5625, Kind.ROW), 3: (5622, Kind.WAIT)}
    assert result.tracking_id == EmulatorAdjustment.objects.get().tracking_id
    assert EmulatorConversion.objects.get().reported_value == 42.5


def test_campaign_client_gets_5601_for_too_many_adjustments_as_a_whole_request_error(live, token):
    item = offline_conversion_adjustment_json(
        goal_name="Purchase", conversion_time=timezone.now() - timedelta(hours=2), adjustment_type=RETRACT,
        adjustment_time=timezone.now(), msclkid=new_click().msclkid)

    with pytest.raises(MicrosoftAdsError) as caught:
        campaign_client(token).apply_offline_conversion_adjustments([item] * 1001)

    assert (caught.value.code, caught.value.http_status) == (5601, 400)


# --- Admin and status page ---------------------------------------------------------------------

def test_received_adjustments_are_in_the_admin_and_retractions_show_on_the_status_page(
        client, admin_client, token, original):
    adjust(client, token, [adjustment(original, RETRACT)])

    listing = admin_client.get("/admin/emulator/emulatoradjustment/")
    status = admin_client.get("/emulator/").content.decode()

    assert listing.status_code == 200 and EmulatorAdjustment.objects.get().tracking_id in listing.content.decode()
    assert admin_client.get("/admin/emulator/emulatoradjustment/add/").status_code == 403
    assert "retracted (not counted)" in status and "MSCLKID auto-tagging on" in status
