"""Microsoft Ads failures: one error type, and the only place codes and statuses are classified.

Reference: docs/microsoft-api.md#response-model (fault shapes), #error-codes (codes), #rate-limits
(throttling), #adsync-rules (handling). Microsoft's message is always kept verbatim; the remedy hint is
shown beside it, never instead of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from datetime import timezone as dt_timezone
from email.utils import parsedate_to_datetime
from enum import StrEnum

import requests


class Kind(StrEnum):
    TRANSIENT = "transient"      # network, timeout, 5xx, 0, 5612: retry with backoff
    THROTTLED = "throttled"      # 117 / HTTP 429: wait Retry-After (60 s without one) for the whole account
    WAIT = "wait"                # 5614 clock skew, 5615 goal younger than 2 h: hold and retry later
    AUTH = "auth"                # 105 / 109: refresh the token once and retry
    RECONNECT = "reconnect"      # invalid_grant, 122-126, 3101: the card goes to Token expired
    NO_ACCESS = "no_access"      # 106: this Microsoft user cannot reach the account
    ACCOUNT = "account"          # the account or developer token cannot upload (5613, 1029, 1030, ...)
    ROW = "row"                  # permanent for this conversion (5604, 5606, 5609, ...)
    REVIEW = "review"            # a code we do not know: an error that needs a human, never endless retries


# Offline-conversion and generic codes (docs/microsoft-api.md#error-codes).
_CODE_KINDS: dict[int, Kind] = {
    0: Kind.TRANSIENT,
    5612: Kind.TRANSIENT,
    117: Kind.THROTTLED,
    5614: Kind.WAIT,
    5615: Kind.WAIT,
    105: Kind.AUTH,
    109: Kind.AUTH,
    122: Kind.RECONNECT, 123: Kind.RECONNECT, 124: Kind.RECONNECT, 125: Kind.RECONNECT, 126: Kind.RECONNECT,
    3101: Kind.RECONNECT,
    106: Kind.NO_ACCESS,
    108: Kind.ACCOUNT, 116: Kind.ACCOUNT, 120: Kind.ACCOUNT, 1001: Kind.ACCOUNT,
    1029: Kind.ACCOUNT, 1030: Kind.ACCOUNT, 1102: Kind.ACCOUNT, 1490: Kind.ACCOUNT, 5613: Kind.ACCOUNT,
    5600: Kind.REVIEW, 5601: Kind.REVIEW, 5602: Kind.REVIEW, 5608: Kind.REVIEW, 8004: Kind.REVIEW,
    5603: Kind.ROW, 5604: Kind.ROW, 5605: Kind.ROW, 5606: Kind.ROW, 5607: Kind.ROW, 5609: Kind.ROW,
    5610: Kind.ROW, 5611: Kind.ROW, 5616: Kind.ROW, 5617: Kind.ROW,
    # ApplyOfflineConversionAdjustments: permanent for that adjustment, except a future adjustment
    # time (clock skew, like 5614).
    # https://learn.microsoft.com/en-us/advertising/guides/operation-error-codes?view=bingads-13
    5618: Kind.ROW, 5619: Kind.ROW, 5620: Kind.ROW, 5621: Kind.ROW, 5622: Kind.WAIT, 5623: Kind.ROW,
    5624: Kind.ROW, 5625: Kind.ROW, 5626: Kind.ROW, 5627: Kind.ROW,
    # Reporting (docs/microsoft-api.md#reporting): 207 is too many concurrent report requests, not a call-rate limit.
    207: Kind.THROTTLED, 2101: Kind.TRANSIENT,
    2003: Kind.NO_ACCESS, 2035: Kind.ACCOUNT,
}

GOAL_NOT_FOUND_CODE = 5606

# Remedy hints, after the seed's troubleshooting checklist.
_CODE_HINTS: dict[int, str] = {
    5606: "Goal Name mismatch: copy the exact Goal Name from Microsoft Ads → Tools → Conversion goals "
          "(case-sensitive, including spaces) into the mapping. The next flush retries these rows.",
    5604: "The msclkid does not match a real click in this account: it may be older than 90 days, from another "
          "account, modified by a redirect, or a test id such as test_msclkid_123 (expected to fail).",
    5609: "The conversion is outside the goal's conversion window (the goal's window, at most 90 days after the click).",
    5617: "The click is outside the goal's conversion window: check the goal's window in Microsoft Ads.",
    5616: "The conversion time is before the click time: check the time zone of the conversion times you send.",
    5613: "This Microsoft Ads customer is not enabled for offline conversions.",
    5615: "The goal was created less than 2 hours ago; adsync retries automatically.",
    5614: "The conversion time is in the future (clock skew); adsync retries automatically.",
    5603: "No msclkid: check auto-tagging in Microsoft Ads and that the snippet is on every landing page.",
    207: "Too many reports are being generated for this account at once; the next daily sync tries again, "
         "or click Resync now in a few minutes.",
    2101: "Microsoft no longer knows this report request (report ids live one day); the next sync submits a new one.",
}
_KIND_HINTS: dict[Kind, str] = {
    Kind.TRANSIENT: "Temporary problem at Microsoft or on the network; adsync retries with backoff.",
    Kind.THROTTLED: "Microsoft's rate limit was reached; adsync pauses the account for as long as Microsoft's "
                    "Retry-After says (60 seconds without one, at most 15 minutes) and resumes.",
    Kind.WAIT: "Held; adsync retries automatically.",
    Kind.AUTH: "Authorization failed: click Reconnect on the Microsoft Ads card if it persists.",
    Kind.RECONNECT: "Token expired: click Reconnect and sign in with a user that has Standard access or more.",
    Kind.NO_ACCESS: "The connected Microsoft user has no access to this account: Reconnect with a user that "
                    "has Standard access or more, and pick the same account.",
    Kind.ACCOUNT: "The account or the developer token cannot upload conversions; check the Account ID and the "
                  "developer token's approval in the Microsoft Advertising Developer Portal.",
    Kind.ROW: "Microsoft rejected this conversion; it will not be retried unless you fix the cause and replay it.",
    Kind.REVIEW: "An error adsync does not recognise: review Microsoft's message; it is not retried automatically.",
}


def classify_code(code: int | None) -> Kind:
    if code is None:
        return Kind.REVIEW
    return _CODE_KINDS.get(code, Kind.REVIEW)


def remedy_hint(code: int | None, kind: Kind | str | None = None) -> str:
    if code is not None and code in _CODE_HINTS:
        return _CODE_HINTS[code]
    if kind is None:
        kind = classify_code(code)
    return _KIND_HINTS.get(Kind(kind), "")


@dataclass
class BatchError:
    """One item's failure inside a 200 response (PartialErrors) or a batch fault."""

    index: int
    code: int | None
    error_code: str
    message: str

    @property
    def kind(self) -> Kind:
        return classify_code(self.code)

    @classmethod
    def from_json(cls, raw: dict) -> BatchError:
        return cls(
            index=int(raw.get("Index", -1)),
            code=_as_int(raw.get("Code")),
            error_code=raw.get("ErrorCode") or "",
            message=raw.get("Message") or raw.get("Details") or "",
        )


class MicrosoftAdsError(Exception):
    """A failed call to Microsoft, classified once. `message` is Microsoft's text, verbatim."""

    def __init__(self, message: str, *, kind: Kind, code: int | None = None, error_code: str = "",
                 http_status: int | None = None, tracking_id: str = "", retry_after: float | None = None,
                 batch_errors: list[BatchError] | None = None):
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.code = code
        self.error_code = error_code
        self.http_status = http_status
        self.tracking_id = tracking_id
        self.retry_after = retry_after
        self.batch_errors = batch_errors or []

    @property
    def permanent(self) -> bool:
        return self.kind not in (Kind.TRANSIENT, Kind.THROTTLED, Kind.WAIT, Kind.AUTH)

    @property
    def hint(self) -> str:
        return remedy_hint(self.code, self.kind)

    def describe(self) -> str:
        """Verbatim message with its code, for the card and the sync log."""
        code = f"{self.code} {self.error_code}".strip() if self.code is not None else self.error_code
        return f"{code}: {self.message}" if code else self.message


def _as_int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _retry_after(response: requests.Response) -> float | None:
    """Seconds to wait, from Retry-After as seconds or as an HTTP date (RFC 9110); None without a usable one."""
    raw = (response.headers.get("Retry-After") or "").strip()
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt_timezone.utc)
    return max(0.0, (moment - datetime.now(dt_timezone.utc)).total_seconds())


def fault_from_response(response: requests.Response) -> MicrosoftAdsError:
    """Turn a non-2xx answer into a classified error: a top-level fault, or an ApplicationFault wrapper
    (docs/microsoft-api.md#response-model)."""
    status = response.status_code
    tracking_id = response.headers.get("TrackingId", "")
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("ApplicationFault"), dict):
        body = body["ApplicationFault"]
    errors: list[dict] = []
    batch_errors: list[BatchError] = []
    if isinstance(body, dict):
        tracking_id = body.get("TrackingId") or tracking_id
        errors = list(body.get("Errors") or []) + list(body.get("OperationErrors") or [])
        batch_errors = [BatchError.from_json(e) for e in body.get("BatchErrors") or [] if isinstance(e, dict)]
    first = next((e for e in errors if isinstance(e, dict)), None)
    code = _as_int(first.get("Code")) if first else None
    error_code = (first.get("ErrorCode") or "") if first else ""
    message = ((first.get("Message") or first.get("Details") or "") if first else "") or _fallback_message(response)

    if status == 429 or code == 117:
        kind = Kind.THROTTLED
    elif code is not None:
        kind = classify_code(code)
    elif batch_errors:
        kind = Kind.ROW
    elif status >= 500:
        kind = Kind.TRANSIENT
    elif status == 401:
        kind = Kind.AUTH
    else:
        kind = Kind.REVIEW
    return MicrosoftAdsError(message, kind=kind, code=code, error_code=error_code, http_status=status,
                             tracking_id=tracking_id, retry_after=_retry_after(response), batch_errors=batch_errors)


def _fallback_message(response: requests.Response) -> str:
    text = (response.text or "").strip()
    snippet = text[:300] if text else response.reason or ""
    return f"HTTP {response.status_code} {snippet}".strip()
