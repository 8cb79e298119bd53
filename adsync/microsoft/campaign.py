"""Campaign Management v13 over REST/JSON: the operations adsync uses, one method each.

Reference: ../shared/docs/microsoft-ads-api.md §1 (ApplyOfflineConversions) and §4 (goals).
Base URL: settings.MICROSOFT_ADS_CAMPAIGN_API_URL (production, sandbox, emulator or a test double).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import requests
from django.conf import settings

from adsync.microsoft.errors import BatchError, fault_from_response
from adsync.microsoft.http import new_session, post_json

APPLY_OFFLINE_CONVERSIONS = "/CampaignManagement/v13/OfflineConversions/Apply"
# https://learn.microsoft.com/en-us/advertising/campaign-management-service/applyofflineconversions?view=bingads-13
QUERY_CONVERSION_GOALS = "/CampaignManagement/v13/ConversionGoals/QueryByIds"
# https://learn.microsoft.com/en-us/advertising/campaign-management-service/getconversiongoalsbyids?view=bingads-13
APPLY_OFFLINE_CONVERSION_ADJUSTMENTS = "/CampaignManagement/v13/OfflineConversionAdjustments/Apply"
# https://learn.microsoft.com/en-us/advertising/campaign-management-service/applyofflineconversionadjustments?view=bingads-13

RESTATE, RETRACT = "Restate", "Retract"  # OfflineConversionAdjustment.AdjustmentType


@dataclass
class ApplyResult:
    tracking_id: str
    errors_by_index: dict[int, BatchError] = field(default_factory=dict)


class CampaignClient:
    """One ad account's view of Campaign Management: the four headers of §1.2 on every call."""

    def __init__(self, *, access_token: str, customer_id: str, account_id: str,
                 developer_token: str | None = None, session: requests.Session | None = None):
        self.session = session or new_session()
        self.headers = {
            "Authorization": f"Bearer {access_token}",
            "DeveloperToken": developer_token or settings.MICROSOFT_ADS_DEVELOPER_TOKEN,
            "CustomerId": str(customer_id),
            "CustomerAccountId": str(account_id),
        }

    def _post(self, path: str, body: dict) -> tuple[dict, str]:
        response = post_json(self.session, settings.MICROSOFT_ADS_CAMPAIGN_API_URL + path, body, self.headers)
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

    def get_offline_conversion_goals(self) -> list[dict]:
        """All offline conversion goals of the account (no ids = all), as Microsoft returns them."""
        payload, _ = self._post(QUERY_CONVERSION_GOALS, {
            "ConversionGoalIds": None,
            "ConversionGoalTypes": "OfflineConversion",
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
