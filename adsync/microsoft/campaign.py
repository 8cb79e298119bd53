"""Campaign Management v13 over REST/JSON: the operations adsync uses, one method each.

Reference: docs/microsoft-api.md#apply-offline-conversions and #conversion-goals.
Base URL: MICROSOFT_ADS_CAMPAIGN_API_URL (production, sandbox, emulator or a test double).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import requests

from adsync.conf import conf
from adsync.microsoft.errors import (
    BatchError,
    Kind,
    MicrosoftAdsError,
    fault_from_response,
)
from adsync.microsoft.http import new_session, post_json

APPLY_OFFLINE_CONVERSIONS = "/CampaignManagement/v13/OfflineConversions/Apply"
# https://learn.microsoft.com/en-us/advertising/campaign-management-service/applyofflineconversions?view=bingads-13
QUERY_CONVERSION_GOALS = "/CampaignManagement/v13/ConversionGoals/QueryByIds"
# https://learn.microsoft.com/en-us/advertising/campaign-management-service/getconversiongoalsbyids?view=bingads-13
APPLY_OFFLINE_CONVERSION_ADJUSTMENTS = "/CampaignManagement/v13/OfflineConversionAdjustments/Apply"
# https://learn.microsoft.com/en-us/advertising/campaign-management-service/applyofflineconversionadjustments?view=bingads-13
GET_ACCOUNT_PROPERTIES = "/CampaignManagement/v13/AccountProperties/Query"
# https://learn.microsoft.com/en-us/advertising/campaign-management-service/getaccountproperties?view=bingads-13
ADD_CONVERSION_GOALS = "/CampaignManagement/v13/ConversionGoals"
# https://learn.microsoft.com/en-us/advertising/campaign-management-service/addconversiongoals?view=bingads-13

RESTATE, RETRACT = "Restate", "Retract"  # OfflineConversionAdjustment.AdjustmentType
MSCLKID_AUTO_TAGGING = "MSCLKIDAutoTaggingEnabled"  # an AccountPropertyName
# Every ConversionGoalType, as a flags value (docs/microsoft-api.md#conversion-goals).
ALL_GOAL_TYPES = "AppInstall,Duration,Event,InStoreTransaction,OfflineConversion,PagesViewedPerVisit,Url"


@dataclass
class ApplyResult:
    tracking_id: str
    errors_by_index: dict[int, BatchError] = field(default_factory=dict)


class CampaignClient:
    """One ad account's view of Campaign Management: the four headers of docs/microsoft-api.md#request-headers."""

    def __init__(self, *, access_token: str, customer_id: str, account_id: str,
                 developer_token: str | None = None, session: requests.Session | None = None):
        self.session = session or new_session()
        self.headers = {
            "Authorization": f"Bearer {access_token}",
            "DeveloperToken": developer_token or conf.developer_token,
            "CustomerId": str(customer_id),
            "CustomerAccountId": str(account_id),
        }

    def _post(self, path: str, body: dict) -> tuple[dict, str]:
        response = post_json(self.session, conf.campaign_api_url + path, body, self.headers)
        if not response.ok:
            raise fault_from_response(response)
        try:
            payload = response.json() or {}
        except ValueError:
            payload = {}
        return payload, response.headers.get("TrackingId", "")

    def _apply(self, path: str, key: str, items: list[dict]) -> ApplyResult:
        payload, tracking_id = self._post(path, {key: items})
        result = ApplyResult(tracking_id=tracking_id)
        for raw in payload.get("PartialErrors") or []:
            if isinstance(raw, dict):
                error = BatchError.from_json(raw)
                if 0 <= error.index < len(items):
                    result.errors_by_index[error.index] = error
        return result

    def apply_offline_conversions(self, conversions: list[dict]) -> ApplyResult:
        """Send ≤1,000 OfflineConversion objects; PartialErrors are mapped by Index, never by position."""
        return self._apply(APPLY_OFFLINE_CONVERSIONS, "OfflineConversions", conversions)

    def apply_offline_conversion_adjustments(self, adjustments: list[dict]) -> ApplyResult:
        """Send ≤1,000 OfflineConversionAdjustment objects (see offline_conversion_adjustment_json).

        Same answer as ApplyOfflineConversions: PartialErrors mapped by Index; an item without an
        error was accepted. No batch limit is documented for adjustments; keep to 1,000 as for Apply.
        """
        return self._apply(APPLY_OFFLINE_CONVERSION_ADJUSTMENTS, "OfflineConversionAdjustments", adjustments)

    def get_account_properties(self, names: list[str]) -> dict[str, str]:
        """The named account properties as {Name: Value}; a null Value becomes ""."""
        payload, _ = self._post(GET_ACCOUNT_PROPERTIES, {"AccountPropertyNames": list(names)})
        properties = {}
        for prop in payload.get("AccountProperties") or []:
            if isinstance(prop, dict) and prop.get("Name"):
                value = prop.get("Value")
                properties[str(prop["Name"])] = "" if value is None else str(value)
        return properties

    def msclkid_auto_tagging_enabled(self) -> bool | None:
        """Whether Microsoft appends msclkid to landing URLs (None if the answer does not say).

        https://learn.microsoft.com/en-us/advertising/campaign-management-service/accountproperty?view=bingads-13#msclkidautotaggingenabled
        """
        value = self.get_account_properties([MSCLKID_AUTO_TAGGING]).get(MSCLKID_AUTO_TAGGING, "").strip().lower()
        return {"true": True, "false": False}.get(value)

    def add_offline_conversion_goal(self, name: str, window_minutes: int, count_type: str = "All",
                                    currency_code: str | None = None) -> str:
        """Create an account-scope OfflineConversion goal and return its id.

        Revenue is VariableValue so each conversion's own value and currency count (without a
        currency the account's is used). A PartialError (e.g. 5317, the name already exists) is
        raised as MicrosoftAdsError. Microsoft asks to wait 2 hours before uploading to a new goal.
        https://learn.microsoft.com/en-us/advertising/campaign-management-service/offlineconversiongoal?view=bingads-13
        """
        revenue: dict = {"Type": "VariableValue"}
        if currency_code:
            revenue["CurrencyCode"] = currency_code
        goal = {"Type": "OfflineConversion", "Name": name, "ConversionWindowInMinutes": int(window_minutes),
                "CountType": count_type, "Revenue": revenue, "Scope": "Account", "Status": "Active"}
        payload, tracking_id = self._post(ADD_CONVERSION_GOALS, {"ConversionGoals": [goal]})
        errors = [BatchError.from_json(raw) for raw in payload.get("PartialErrors") or [] if isinstance(raw, dict)]
        if errors:
            first = errors[0]
            raise MicrosoftAdsError(first.message, kind=first.kind, code=first.code, error_code=first.error_code,
                                    tracking_id=tracking_id, batch_errors=errors)
        ids = payload.get("ConversionGoalIds") or []
        if not ids or ids[0] is None:
            raise MicrosoftAdsError("Microsoft answered AddConversionGoals without a goal id", kind=Kind.REVIEW,
                                    tracking_id=tracking_id)
        return str(ids[0])

    def get_offline_conversion_goals(self) -> list[dict]:
        """All offline conversion goals of the account (no ids = all), as Microsoft returns them."""
        return self.get_conversion_goals("OfflineConversion")

    def get_conversion_goals(self, types: str = ALL_GOAL_TYPES) -> list[dict]:
        """The account's goals of the given types (a comma-separated ConversionGoalType flags value)."""
        payload, _ = self._post(QUERY_CONVERSION_GOALS, {
            "ConversionGoalIds": None,
            "ConversionGoalTypes": types,
            "ReturnAdditionalFields": "IsExternallyAttributed,IsEnhancedConversionsEnabled",
        })
        return [goal for goal in payload.get("ConversionGoals") or [] if isinstance(goal, dict)]


def offline_conversion_adjustment_json(*, goal_name: str, conversion_time: datetime, adjustment_type: str,
                                       adjustment_time: datetime, value: float | None = None, currency: str = "",
                                       msclkid: str = "", hashed_email: str = "", hashed_phone: str = "") -> dict:
    """One OfflineConversionAdjustment: the original conversion's goal name, click id (or hashes) and
    ConversionTime, exactly as first sent, plus the adjustment. Empty values are left out.

    Restate needs a value (and takes an optional currency); Retract must have neither. This builder
    only formats: Microsoft's rules are Microsoft's (and the emulator's) to check.
    https://learn.microsoft.com/en-us/advertising/campaign-management-service/offlineconversionadjustment?view=bingads-13
    """
    item: dict = {
        "AdjustmentType": adjustment_type,
        "AdjustmentTime": utc_timestamp(adjustment_time),
        "ConversionName": goal_name,
        "ConversionTime": utc_timestamp(conversion_time),
    }
    if value is not None:
        item["AdjustmentValue"] = float(value)
    if currency:
        item["AdjustmentCurrencyCode"] = currency
    if msclkid:
        item["MicrosoftClickId"] = msclkid
    if hashed_email:
        item["HashedEmailAddress"] = hashed_email
    if hashed_phone:
        item["HashedPhoneNumber"] = hashed_phone
    return item


def utc_timestamp(moment: datetime) -> str:
    """UTC, whole seconds, trailing Z: the form Microsoft's examples use and adsync sends conversions in.

    A naive datetime is refused rather than guessed: its time zone is unknown.
    """
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("A time sent to Microsoft must be timezone-aware.")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
