"""adsync's data, one module per kind of row; everything is importable from `adsync.models`.

- sites.py: Site (a client website) and ApiSecret (its server API secrets, hashed).
- conversions.py: Click and Conversion (what a site reported).
- adjustments.py: Adjustment (a conversion restated or retracted).
- inbox.py: Hit (snippet reports accepted, not stored yet).
- connections.py: Connection (the Microsoft Ads card), GoalMapping, AccountGoal.
- pushes.py: Push (a sync-log row) and the OfflineConversion JSON it is sent as.
- insights.py: CampaignInsight (campaign performance per day).
- diagnosis.py: DiagnosisRun (the card's checklist, history kept), GoalReportDay (Microsoft's count per goal and day).
- staff.py: StaffNotificationPreference.
- erasures.py: Erasure (the audit line of a "forget this person").
- keys.py: EncryptionKeyState (whether the key derived from SECRET_KEY is retired).
"""

from adsync.models import bulk  # noqa: F401  (registers the `any` lookup)
from adsync.models.adjustments import Adjustment
from adsync.models.connections import AccountGoal, Connection, GoalMapping
from adsync.models.conversions import Click, Conversion
from adsync.models.diagnosis import CheckResult, DiagnosisRun, DiagnosisSummary, GoalReportDay
from adsync.models.erasures import Erasure
from adsync.models.inbox import Hit
from adsync.models.insights import CampaignInsight
from adsync.models.keys import EncryptionKeyState
from adsync.models.pushes import (
    ADSYNC_ERROR_PREFIX,
    Push,
    format_conversion_time,
    offline_conversion_json,
    request_item_json,
)
from adsync.models.sites import ApiSecret, Site, hash_api_secret
from adsync.models.staff import StaffNotificationPreference

__all__ = [
    "ADSYNC_ERROR_PREFIX", "AccountGoal", "Adjustment", "ApiSecret", "CampaignInsight", "CheckResult", "Click",
    "Connection", "Conversion", "DiagnosisRun", "DiagnosisSummary", "EncryptionKeyState", "Erasure", "GoalMapping",
    "GoalReportDay", "Hit", "Push", "Site", "StaffNotificationPreference", "format_conversion_time", "hash_api_secret",
    "offline_conversion_json", "request_item_json",
]
