"""Campaign Management operations: ApplyOfflineConversions, GetConversionGoalsByIds, AddConversionGoals
and GetAccountProperties (docs/microsoft-api.md#apply-offline-conversions, #conversion-goals and
#auto-tagging-check). ApplyOfflineConversionAdjustments lives in emulator/adjustments.py.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from django.db import transaction
from django.utils import timezone

from emulator import behaviour, rules
from emulator.faults import batch_error, deserialization_fault, operation_fault
from emulator.models import EmulatorAccount, EmulatorConversion, EmulatorGoal, dedup_key

GOAL_TYPES = set(EmulatorGoal.TYPES)


def apply_offline_conversions(account: EmulatorAccount, body: dict, tracking_id: str) -> dict:
    """Validate every item, record the accepted ones, and answer PartialErrors.

    PartialErrors come back in reverse Index order on purpose: Microsoft says the list does not
    correspond to the request's positions (docs/microsoft-api.md#response-model), and a client must map them by Index.
    """
    items = rules.parse_conversions(body)
    ctx = _context(account, items)
    errors, accepted = [], []
    for index, item in enumerate(items):
        code = rules.item_error(item, ctx)
        if code:
            errors.append(batch_error(code, index))
        else:
            accepted.append(item)
    _record(account, ctx, accepted, tracking_id)
    return {"PartialErrors": list(reversed(errors))}


def _context(account: EmulatorAccount, items: list) -> rules.Context:
    click_ids = {item.msclkid for item in items if item and item.msclkid}
    goals = account.goals.filter(type=EmulatorGoal.OFFLINE, status__in=[EmulatorGoal.ACTIVE, EmulatorGoal.PAUSED])
    return rules.Context(
        goals={goal.name: goal for goal in goals},
        clicks={click.msclkid: click for click in account.clicks.filter(msclkid__in=click_ids)},
        now=timezone.now(),
        enforce_goal_age=behaviour.current().enforce_goal_minimum_age,
    )


def _record(account: EmulatorAccount, ctx: rules.Context, items: list[rules.OfflineConversion],
            tracking_id: str) -> None:
    """Store accepted conversions; a repeat of an earlier (goal, click, time) is kept but flagged duplicate."""
    earlier = EmulatorConversion.objects.filter(
        account=account, duplicate=False, conversion_time__in={item.time for item in items})
    seen = {conversion.dedup_key() for conversion in earlier}
    rows = []
    for item in items:
        key = dedup_key(item.name, item.msclkid, item.hashed_email, item.hashed_phone, item.time)
        rows.append(EmulatorConversion(
            account=account, goal=ctx.goal(item), goal_name=item.name, msclkid=item.msclkid,
            conversion_time=item.time, value=item.value, currency=item.currency.upper(),
            hashed_email=item.hashed_email, hashed_phone=item.hashed_phone, tracking_id=tracking_id,
            duplicate=key in seen,
        ))
        seen.add(key)
    EmulatorConversion.objects.bulk_create(rows)


def query_conversion_goals(account: EmulatorAccount, body: dict) -> dict:
    """The account's goals of the requested types; with ids, one slot per id (null when unknown)."""
    types = _goal_types(body.get("ConversionGoalTypes"))
    extra = _names(body.get("ReturnAdditionalFields"))
    goals = list(account.goals.filter(type__in=types).order_by("goal_id").select_related("account"))
    ids = body.get("ConversionGoalIds")
    if ids:
        by_id = {goal.goal_id: goal for goal in goals}
        found = [by_id.get(str(goal_id)) for goal_id in ids]
        return {"ConversionGoals": [goal_json(g, extra) if g else None for g in found], "PartialErrors": []}
    return {"ConversionGoals": [goal_json(goal, extra) for goal in goals], "PartialErrors": []}


def _names(value) -> set[str]:
    """A REST flags value: "Url, Event" (comma-separated string) or a JSON array of names."""
    if value is None:
        return set()
    parts = value.split(",") if isinstance(value, str) else value
    if not isinstance(parts, list):
        raise deserialization_fault(f"The value '{value}' cannot be parsed as a flags value.")
    return {str(part).strip() for part in parts if str(part).strip()}


def _goal_types(value) -> set[str]:
    names = _names(value)
    unknown = names - GOAL_TYPES - {"OfflineConversionGoal"}
    if unknown:
        raise deserialization_fault(f"The value '{sorted(unknown)[0]}' is not a valid ConversionGoalType.")
    if "OfflineConversionGoal" in names:
        names = (names - {"OfflineConversionGoal"}) | {EmulatorGoal.OFFLINE}
    return names or GOAL_TYPES


def goal_json(goal: EmulatorGoal, extra: set[str]) -> dict:
    """A ConversionGoal as GetConversionGoalsByIds returns it; additional fields only when asked for."""
    offline = goal.type == EmulatorGoal.OFFLINE
    value = float(goal.revenue_value) if goal.revenue_value is not None else None
    return {
        "AttributionModelType": None,
        "ConversionWindowInMinutes": goal.conversion_window_in_minutes,
        "CountType": goal.count_type,
        "ExcludeFromBidding": False,
        "GoalCategory": None,
        "Id": goal.goal_id,
        "IsEnhancedConversionsEnabled": (
            goal.is_enhanced_conversions_enabled if "IsEnhancedConversionsEnabled" in extra else None),
        "Name": goal.name,
        "Revenue": {"CurrencyCode": goal.revenue_currency_code or goal.account.currency_code,
                    "Type": goal.effective_revenue_type, "Value": value},
        "Scope": "Account",
        "Status": goal.status,
        "TagId": None,
        "TrackingStatus": None if offline else "TagInactive",
        "Type": goal.type,
        "ViewThroughConversionWindowInMinutes": None,
        "IsExternallyAttributed": False if offline and "IsExternallyAttributed" in extra else None,
    }


# --- AddConversionGoals ----------------------------------------------------------------------
# https://learn.microsoft.com/en-us/advertising/campaign-management-service/addconversiongoals?view=bingads-13
# https://learn.microsoft.com/en-us/advertising/campaign-management-service/offlineconversiongoal?view=bingads-13

MAX_GOALS_PER_CALL = 100
MAX_GOALS_PER_ACCOUNT = 1000
MAX_GOAL_NAME = 100
MAX_REVENUE = Decimal(9_999_999)  # "0 to 999,9999" on the ConversionGoalRevenue page
GOAL_STATUSES = {"Active", "Paused", "Deleted", "InActive"}   # the ConversionGoalStatus values
COUNT_TYPES = {"All", "Unique"}
OFFLINE_TYPES = {EmulatorGoal.OFFLINE, "OfflineConversionGoal"}


def add_conversion_goals(account: EmulatorAccount, body: dict) -> dict:
    """Create the valid goals; one id slot per request item (null where it failed) and PartialErrors by Index.

    Only account-scope OfflineConversion goals are emulated; anything else gets 204. Adding a goal
    turns the account's MSCLKIDAutoTaggingEnabled on, as Microsoft documents.
    """
    raw_goals = body.get("ConversionGoals")
    if raw_goals is not None and not isinstance(raw_goals, list):
        raise deserialization_fault("ConversionGoals must be an array.")
    if not raw_goals:
        raise operation_fault(5321, "campaign")
    if len(raw_goals) > MAX_GOALS_PER_CALL:
        raise operation_fault(5322, "campaign")
    parsed = [_parse_goal(raw) for raw in raw_goals]
    with transaction.atomic():
        # Names are unique per customer (Microsoft's 5317 text); compared without case by the emulator.
        taken = {name.casefold() for name in EmulatorGoal.objects.select_for_update().filter(
            account__parent_customer_id=account.parent_customer_id).values_list("name", flat=True)}
        room = MAX_GOALS_PER_ACCOUNT - account.goals.count()
        ids, errors, seen = [], [], set()
        for index, goal in enumerate(parsed):
            code = _goal_error(goal, taken, seen) or (5326 if room <= 0 else None)
            if goal is not None and goal.get("Name"):
                seen.add(goal["Name"].casefold())
            if code:
                ids.append(None)
                errors.append(batch_error(code, index))
                continue
            ids.append(_create_goal(account, goal).goal_id)
            taken.add(goal["Name"].casefold())
            room -= 1
        if any(ids):
            EmulatorAccount.objects.filter(pk=account.pk).update(msclkid_auto_tagging_enabled=True)
    return {"ConversionGoalIds": ids, "PartialErrors": list(reversed(errors))}


def _parse_goal(raw) -> dict | None:
    """Enum values that do not exist fail the whole request, like any value JSON cannot deserialize."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise deserialization_fault("Each ConversionGoal must be an object.")
    for key, allowed in (("Status", GOAL_STATUSES), ("CountType", COUNT_TYPES), ("Scope", {"Account", "Customer"})):
        if raw.get(key) is not None and raw[key] not in allowed:
            raise deserialization_fault(f"The value '{raw[key]}' is not a valid {key}.")
    revenue = raw.get("Revenue") or {}
    if not isinstance(revenue, dict):
        raise deserialization_fault("Revenue must be an object.")
    if revenue.get("Type") is not None and revenue["Type"] not in EmulatorGoal.REVENUE_TYPES:
        raise deserialization_fault(f"The value '{revenue['Type']}' is not a valid ConversionGoalRevenueType.")
    window = raw.get("ConversionWindowInMinutes")
    if window is not None and (isinstance(window, bool) or not isinstance(window, int)):
        raise deserialization_fault(f"The value '{window}' cannot be parsed as the type 'Int32'.")
    value = revenue.get("Value")
    if value is not None:
        value = _decimal(value)
    name = raw.get("Name")
    if name is not None and not isinstance(name, str):
        raise deserialization_fault(f"The value '{name}' cannot be parsed as the type 'String'.")
    return {**raw, "Revenue": {**revenue, "Value": value}}


def _decimal(value) -> Decimal:
    """A JSON number (or numeric string) as a Decimal; through str() so 0.1 stays 0.1."""
    try:
        if isinstance(value, bool):
            raise InvalidOperation
        return Decimal(str(value))
    except InvalidOperation:
        raise deserialization_fault(f"The value '{value}' cannot be parsed as the type 'Decimal'.") from None


def _goal_error(goal: dict | None, taken: set[str], seen: set[str]) -> int | None:
    if goal is None:
        return 5323
    if goal.get("Id") is not None:
        return 5324
    name = (goal.get("Name") or "").strip()
    if not name:
        return 5319
    if len(goal["Name"]) > MAX_GOAL_NAME:
        return 5320
    if goal["Name"].casefold() in seen:
        return 5316
    if goal["Name"].casefold() in taken:
        return 5317
    if goal.get("Type") not in OFFLINE_TYPES or goal.get("Scope") == "Customer":
        return 204
    if goal.get("Status") in ("Deleted", "InActive"):
        return 5328
    window = goal.get("ConversionWindowInMinutes")
    if window is not None and not 1 <= window <= 129600:
        return 5337
    return _revenue_error(goal["Revenue"])


def _revenue_error(revenue: dict) -> int | None:
    kind, value, currency = revenue.get("Type") or "NoValue", revenue.get("Value"), revenue.get("CurrencyCode")
    if kind == "FixedValue" and value is None:
        return 5333
    if kind == "NoValue" and value is not None:
        return 5333
    if value is not None and not Decimal(0) <= value <= MAX_REVENUE:
        return 5333
    if currency and not rules.is_known_currency(currency):
        return 5351
    return None


def _create_goal(account: EmulatorAccount, goal: dict) -> EmulatorGoal:
    revenue = goal["Revenue"]
    return EmulatorGoal.objects.create(
        account=account, name=goal["Name"], type=EmulatorGoal.OFFLINE,
        status=goal.get("Status") or EmulatorGoal.ACTIVE,
        conversion_window_in_minutes=goal.get("ConversionWindowInMinutes") or 43200,
        count_type=goal.get("CountType") or "All",
        revenue_type=revenue.get("Type") or "NoValue",
        revenue_value=revenue.get("Value"),
        revenue_currency_code=(revenue.get("CurrencyCode") or "").upper(),
        # Enhanced conversions can only be switched on in Microsoft's UI, never through the API.
        is_enhanced_conversions_enabled=False,
        created_at=timezone.now(),
    )


# --- GetAccountProperties --------------------------------------------------------------------
# https://learn.microsoft.com/en-us/advertising/campaign-management-service/getaccountproperties?view=bingads-13
# https://learn.microsoft.com/en-us/advertising/campaign-management-service/accountproperty?view=bingads-13

# The other AccountPropertyName values, answered with what a new account has.
ACCOUNT_PROPERTY_DEFAULTS: dict[str, str | None] = {
    "None": None,
    "TrackingUrlTemplate": None,
    "AdClickParallelTracking": "true",
    "FinalUrlSuffix": None,
    "IncludeViewThroughConversions": "true",
    "ProfileExpansionEnabled": "false",
    "AllowImageAutoRetrieve": "false",
    "AutoApplyRecommendations": "MultimediaAdsAutoApply=true;ResponsiveSearchAdsAutoApply=false;"
                                "ExpandedTextAdsAutoApply=false",
    "IncludeAutoBiddingViewThroughConversions": None,
    "AutoBiddingViewThroughConversionsValueAttributionWeight": None,
    "LoopBackWindowForViewThroughConversions": None,
    "BusinessAttributes": None,
    "EnableMMAUnderDSAAdgroups": None,
}
AUTO_TAGGING = "MSCLKIDAutoTaggingEnabled"


def get_account_properties(account: EmulatorAccount, body: dict) -> dict:
    """One AccountProperty per requested name, in the request's order; an unknown name fails deserialization."""
    names = body.get("AccountPropertyNames") or []
    if not isinstance(names, list):
        raise deserialization_fault("AccountPropertyNames must be an array.")
    properties = []
    for name in names:
        if name != AUTO_TAGGING and name not in ACCOUNT_PROPERTY_DEFAULTS:
            raise deserialization_fault(f"The value '{name}' is not a valid AccountPropertyName.")
        value = ("true" if account.msclkid_auto_tagging_enabled else "false") if name == AUTO_TAGGING \
            else ACCOUNT_PROPERTY_DEFAULTS[name]
        properties.append({"Name": name, "Value": value})
    return {"AccountProperties": properties, "PartialErrors": []}
