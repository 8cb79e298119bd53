"""AddConversionGoals and GetAccountProperties in the emulator, and adsync's client for them.

https://learn.microsoft.com/en-us/advertising/campaign-management-service/addconversiongoals?view=bingads-13
https://learn.microsoft.com/en-us/advertising/campaign-management-service/getaccountproperties?view=bingads-13
"""

from __future__ import annotations

import gc
from datetime import timedelta

import pytest
from django.utils import timezone

from adsync.microsoft.errors import MicrosoftAdsError
from emulator.demo import ACCOUNT_ID, SECOND_ACCOUNT_ID
from emulator.models import EmulatorAccount, EmulatorGoal, EmulatorUser
from tests.emulator.support import (
    ACCOUNT_PROPERTIES,
    ADD_GOALS,
    APPLY,
    GOALS,
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


@pytest.fixture
def store(demo) -> EmulatorAccount:
    return EmulatorAccount.objects.get(account_id=ACCOUNT_ID)


def offline_goal(name: str = "Closed deal", **extra) -> dict:
    return {"Type": "OfflineConversion", "Name": name, "ConversionWindowInMinutes": 43200, "CountType": "All",
            "Revenue": {"Type": "VariableValue", "CurrencyCode": "USD"}, "Scope": "Account", "Status": "Active",
            **extra}


def add_goals(client, token: str, goals: list, **kwargs):
    return post(client, ADD_GOALS, {"ConversionGoals": goals}, token, **kwargs)


def properties(client, token: str, names: list, **kwargs):
    return post(client, ACCOUNT_PROPERTIES, {"AccountPropertyNames": names}, token, **kwargs)


# --- AddConversionGoals --------------------------------------------------------------------------

def test_an_added_offline_goal_is_created_and_returned_by_id(client, token, store):
    response = add_goals(client, token, [offline_goal(CountType="Unique", ConversionWindowInMinutes=1440)])

    body = response.json()
    goal = EmulatorGoal.objects.get(name="Closed deal")
    assert response.status_code == 200 and body == {"ConversionGoalIds": [goal.goal_id], "PartialErrors": []}
    assert (goal.account, goal.type, goal.status, goal.count_type, goal.conversion_window_in_minutes) == (
        store, "OfflineConversion", "Active", "Unique", 1440)
    queried = post(client, GOALS, {"ConversionGoalIds": [goal.goal_id]}, token).json()["ConversionGoals"][0]
    assert queried["Revenue"] == {"CurrencyCode": "USD", "Type": "VariableValue", "Value": None}


def test_a_new_goal_takes_conversions_at_once_unless_the_two_hour_rule_is_switched_on(client, token):
    add_goals(client, token, [offline_goal()])
    item = {"ConversionName": "Closed deal", "ConversionTime": iso(timezone.now() - timedelta(minutes=5)),
            "MicrosoftClickId": new_click().msclkid}

    assert post(client, APPLY, {"OfflineConversions": [item]}, token).json() == {"PartialErrors": []}


def test_defaults_fill_what_the_request_leaves_out(client, token):
    add_goals(client, token, [{"Type": "OfflineConversion", "Name": "Bare"}])

    goal = EmulatorGoal.objects.get(name="Bare")
    assert (goal.status, goal.count_type, goal.conversion_window_in_minutes, goal.effective_revenue_type) == (
        "Active", "All", 43200, "NoValue")


def test_a_name_that_already_exists_for_the_customer_is_5317(client, token):
    # "Purchase" exists on Demo Store; names are unique across the customer's accounts, whatever the case.
    response = add_goals(client, token, [offline_goal("Purchase"), offline_goal("LEAD"), offline_goal("New")],
                         account_id=SECOND_ACCOUNT_ID)

    body = response.json()
    assert error_codes(response) == {0: 5317, 1: 5317}
    assert body["ConversionGoalIds"][:2] == [None, None] and body["ConversionGoalIds"][2]
    assert body["PartialErrors"][0]["ErrorCode"] == "ConversionGoalNameAlreadyExists"


def test_the_same_name_twice_in_one_request_is_5316_for_the_second(client, token):
    response = add_goals(client, token, [offline_goal("Twice"), offline_goal("twice")])

    assert error_codes(response) == {1: 5316}
    assert EmulatorGoal.objects.filter(name="Twice").count() == 1


@pytest.mark.parametrize(("goal", "code"), [
    (None, 5323),
    (offline_goal(Id="123"), 5324),
    (offline_goal(Name=None), 5319),
    (offline_goal(Name="   "), 5319),
    (offline_goal(Name="x" * 101), 5320),
    (offline_goal(Type="Url"), 204),
    (offline_goal(Scope="Customer"), 204),
    (offline_goal(Status="Deleted"), 5328),
    (offline_goal(ConversionWindowInMinutes=0), 5337),
    (offline_goal(ConversionWindowInMinutes=129601), 5337),
    (offline_goal(Revenue={"Type": "FixedValue"}), 5333),
    (offline_goal(Revenue={"Type": "NoValue", "Value": 5}), 5333),
    (offline_goal(Revenue={"Type": "VariableValue", "Value": -1}), 5333),
    (offline_goal(Revenue={"Type": "VariableValue", "CurrencyCode": "XYZ"}), 5351),
])
def test_each_goal_rule_refuses_only_the_offending_goal(client, token, goal, code):
    response = add_goals(client, token, [goal, offline_goal("Fine")])

    assert error_codes(response) == {0: code}
    assert response.json()["ConversionGoalIds"][0] is None
    assert EmulatorGoal.objects.filter(name="Fine").exists()


def test_an_unknown_count_type_fails_the_whole_request_like_any_bad_enum_value(client, token):
    response = add_goals(client, token, [offline_goal("Fine"), offline_goal(CountType="Sometimes")])

    assert (response.status_code, fault_code(response)) == (400, 100)
    assert not EmulatorGoal.objects.filter(name="Fine").exists()


def test_no_goals_is_5321_and_more_than_100_is_5322(client, token):
    assert fault_code(add_goals(client, token, [])) == 5321
    response = add_goals(client, token, [offline_goal(f"Goal {n}") for n in range(101)])
    assert (response.status_code, response.json()["Type"], fault_code(response)) == (400, "ApiFaultDetail", 5322)


def test_an_account_with_1000_goals_takes_no_more(client, token, store):
    EmulatorGoal.objects.bulk_create(
        EmulatorGoal(account=store, name=f"Bulk {n}", goal_id=str(500_000_000 + n)) for n in range(1000 - 4))

    response = add_goals(client, token, [offline_goal("One too many")])

    assert error_codes(response) == {0: 5326}


def test_a_viewer_cannot_add_goals(client, demo):
    viewer = EmulatorUser.objects.get(user_name="demo.viewer")

    response = add_goals(client, access_token_for(viewer), [offline_goal()], account_id=SECOND_ACCOUNT_ID)

    assert (response.status_code, fault_code(response)) == (403, 106)


def test_adding_a_goal_turns_auto_tagging_back_on(client, token, store):
    EmulatorAccount.objects.filter(pk=store.pk).update(msclkid_auto_tagging_enabled=False)

    add_goals(client, token, [offline_goal()])

    store.refresh_from_db()
    assert store.msclkid_auto_tagging_enabled


def test_a_failed_add_leaves_auto_tagging_off(client, token, store):
    EmulatorAccount.objects.filter(pk=store.pk).update(msclkid_auto_tagging_enabled=False)

    add_goals(client, token, [offline_goal("Purchase")])

    store.refresh_from_db()
    assert not store.msclkid_auto_tagging_enabled


# --- GetAccountProperties ----------------------------------------------------------------------

def test_auto_tagging_is_on_by_default_and_the_admin_switch_turns_it_off(client, token, store):
    before = properties(client, token, ["MSCLKIDAutoTaggingEnabled"]).json()
    EmulatorAccount.objects.filter(pk=store.pk).update(msclkid_auto_tagging_enabled=False)
    after = properties(client, token, ["MSCLKIDAutoTaggingEnabled"]).json()

    assert before == {"AccountProperties": [{"Name": "MSCLKIDAutoTaggingEnabled", "Value": "true"}],
                      "PartialErrors": []}
    assert after["AccountProperties"] == [{"Name": "MSCLKIDAutoTaggingEnabled", "Value": "false"}]


def test_the_switch_is_per_account(client, token, demo):
    EmulatorAccount.objects.filter(account_id=SECOND_ACCOUNT_ID).update(msclkid_auto_tagging_enabled=False)

    store = properties(client, token, ["MSCLKIDAutoTaggingEnabled"]).json()["AccountProperties"][0]["Value"]
    agency = properties(client, token, ["MSCLKIDAutoTaggingEnabled"], account_id=SECOND_ACCOUNT_ID).json()

    assert (store, agency["AccountProperties"][0]["Value"]) == ("true", "false")


def test_properties_come_back_in_the_requested_order(client, token):
    response = properties(client, token, ["FinalUrlSuffix", "MSCLKIDAutoTaggingEnabled", "AdClickParallelTracking"])

    assert [(p["Name"], p["Value"]) for p in response.json()["AccountProperties"]] == [
        ("FinalUrlSuffix", None), ("MSCLKIDAutoTaggingEnabled", "true"), ("AdClickParallelTracking", "true")]


def test_an_unknown_property_name_fails_the_whole_request(client, token):
    response = properties(client, token, ["MSCLKIDAutoTaggingEnabled", "AutoTagging"])

    assert (response.status_code, response.json()["Type"], fault_code(response)) == (400, "AdApiFaultDetail", 100)


def test_a_viewer_may_read_properties_but_not_of_an_account_they_cannot_reach(client, demo):
    viewer_token = access_token_for(EmulatorUser.objects.get(user_name="demo.viewer"))

    reachable = properties(client, viewer_token, ["MSCLKIDAutoTaggingEnabled"], account_id=SECOND_ACCOUNT_ID)
    unreachable = properties(client, viewer_token, ["MSCLKIDAutoTaggingEnabled"])

    assert reachable.status_code == 200
    assert (unreachable.status_code, fault_code(unreachable)) == (403, 106)


def test_the_auto_tagging_switch_is_editable_in_the_account_list(admin_client, store):
    page = admin_client.get("/admin/emulator/emulatoraccount/").content.decode()

    assert 'name="form-0-msclkid_auto_tagging_enabled"' in page


# --- Through adsync's client, over HTTP -------------------------------------------------------

@pytest.fixture
def live(live_server, settings, demo):
    point_adsync_at(live_server, settings)
    yield live_server
    gc.collect()   # see docs/emulator.md, "Using it in tests"


def test_campaign_client_adds_an_offline_goal_and_reads_it_back_over_http(live, token):
    goal_id = campaign_client(token).add_offline_conversion_goal("Closed deal", 1440, "Unique", currency_code="EUR")

    goals = {g["Id"]: g for g in campaign_client(token).get_offline_conversion_goals()}
    assert goals[goal_id]["Name"] == "Closed deal"
    assert (goals[goal_id]["CountType"], goals[goal_id]["ConversionWindowInMinutes"]) == ("Unique", 1440)
    assert goals[goal_id]["Revenue"]["Type"] == "VariableValue"
    assert goals[goal_id]["Revenue"]["CurrencyCode"] == "EUR"


def test_campaign_client_raises_the_partial_error_of_a_goal_that_exists(live, token):
    with pytest.raises(MicrosoftAdsError) as caught:
        campaign_client(token).add_offline_conversion_goal("Purchase", 43200)

    assert (caught.value.code, caught.value.error_code) == (5317, "ConversionGoalNameAlreadyExists")
    assert caught.value.tracking_id


def test_campaign_client_reads_auto_tagging_over_http(live, token, store):
    client = campaign_client(token)

    on = client.msclkid_auto_tagging_enabled()
    EmulatorAccount.objects.filter(pk=store.pk).update(msclkid_auto_tagging_enabled=False)
    off = client.msclkid_auto_tagging_enabled()
    several = client.get_account_properties(["MSCLKIDAutoTaggingEnabled", "TrackingUrlTemplate"])

    assert (on, off) == (True, False)
    assert several == {"MSCLKIDAutoTaggingEnabled": "false", "TrackingUrlTemplate": ""}


def test_campaign_client_gets_a_whole_request_error_for_an_unknown_property(live, token):
    with pytest.raises(MicrosoftAdsError) as caught:
        campaign_client(token).get_account_properties(["NoSuchProperty"])

    assert (caught.value.code, caught.value.http_status) == (100, 400)
