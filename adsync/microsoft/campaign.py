"""Campaign Management v13 over REST/JSON: the operations adsync uses, one method each.

Reference: docs/microsoft-api.md#apply-offline-conversions and #conversion-goals.
Base URL: MICROSOFT_ADS_CAMPAIGN_API_URL (production, sandbox, emulator or a test double).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import requests

from adsync.conf import conf
from adsync.microsoft.errors import BatchError, fault_from_response
from adsync.microsoft.http import new_session, post_json

APPLY_OFFLINE_CONVERSIONS = "/CampaignManagement/v13/OfflineConversions/Apply"
# https://learn.microsoft.com/en-us/advertising/campaign-management-service/applyofflineconversions?view=bingads-13
QUERY_CONVERSION_GOALS = "/CampaignManagement/v13/ConversionGoals/QueryByIds"
# https://learn.microsoft.com/en-us/advertising/campaign-management-service/getconversiongoalsbyids?view=bingads-13


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

    def apply_offline_conversions(self, conversions: list[dict]) -> ApplyResult:
        """Send ≤1,000 OfflineConversion objects; PartialErrors are mapped by Index, never by position."""
        payload, tracking_id = self._post(APPLY_OFFLINE_CONVERSIONS, {"OfflineConversions": conversions})
        result = ApplyResult(tracking_id=tracking_id)
        for raw in payload.get("PartialErrors") or []:
            if isinstance(raw, dict):
                error = BatchError.from_json(raw)
                if 0 <= error.index < len(conversions):
                    result.errors_by_index[error.index] = error
        return result

    def get_offline_conversion_goals(self) -> list[dict]:
        """All offline conversion goals of the account (no ids = all), as Microsoft returns them."""
        payload, _ = self._post(QUERY_CONVERSION_GOALS, {
            "ConversionGoalIds": None,
            "ConversionGoalTypes": "OfflineConversion",
            "ReturnAdditionalFields": "IsExternallyAttributed,IsEnhancedConversionsEnabled",
        })
        return [goal for goal in payload.get("ConversionGoals") or [] if isinstance(goal, dict)]
