"""Campaign Management operations: ApplyOfflineConversions and GetConversionGoalsByIds
(docs/microsoft-api.md#apply-offline-conversions and #conversion-goals)."""

from __future__ import annotations

from django.utils import timezone

from emulator import behaviour, rules
from emulator.faults import batch_error, deserialization_fault
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
        "Revenue": {"CurrencyCode": goal.account.currency_code,
                    "Type": "NoValue" if value is None else "VariableValue", "Value": value},
        "Scope": "Account",
        "Status": goal.status,
        "TagId": None,
        "TrackingStatus": None if offline else "TagInactive",
        "Type": goal.type,
        "ViewThroughConversionWindowInMinutes": None,
        "IsExternallyAttributed": False if offline and "IsExternallyAttributed" in extra else None,
    }
