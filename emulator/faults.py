"""Microsoft's error vocabulary and the JSON shapes it travels in.

Reference: docs/microsoft-api.md#response-model (fault shapes) and docs/microsoft-api.md#error-codes (codes). Messages
quoted in docs/microsoft-api.md#error-codes are used verbatim; the others paraphrase Microsoft's operation-error-codes page,
and the reporting codes 2001-2011 follow the older adCenter reporting list (their symbolic
names are the emulator's best guess). The conversion-goal codes (5316-5351), the adjustment
codes (5618-5627), 204 and 2015 take their names and texts from Microsoft's list:
https://learn.microsoft.com/en-us/advertising/guides/operation-error-codes?view=bingads-13
A view raises a Fault; emulator/http.py renders it with the request's TrackingId.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Code → (ErrorCode, Message).
ERRORS: dict[int, tuple[str, str]] = {
    0: ("InternalError", "An internal error has occurred."),
    100: ("NullRequest", "The request message is null."),
    105: ("InvalidCredentials", "Authentication failed. Either supplied credentials are invalid or the account is "
                                "inactive."),
    106: ("UserIsNotAuthorized", "The user is not authorized to perform this action."),
    109: ("AuthenticationTokenExpired", "Authentication token expired. Please renew it or obtain a new token."),
    117: ("CallRateExceeded", "You have exceeded the number of calls that you are allowed to make in a minute. "
                              "Please reduce the number of calls that you make per minute."),
    204: ("OperationNotSupported", "The operation is not supported."),
    207: ("ConcurrentRequestOverLimit", "You have exceeded the number of concurrent report requests that you are "
                                        "allowed to make. Please wait for your earlier requests to complete."),
    1029: ("CampaignServiceCustomerIdHasToBeSpecified", "The CustomerId header element cannot be null or empty."),
    1030: ("CampaignServiceAccountIdHasToBeSpecified", "The CustomerAccountId header element cannot be null or "
                                                       "empty."),
    1102: ("CampaignServiceInvalidAccountId", "The account ID is invalid."),
    1490: ("CampaignServiceInvalidCustomerId", "The customer ID is invalid."),
    2001: ("ReportingServiceNullReportRequest", "The report request is null."),
    2003: ("ReportingServiceAccountNotAuthorized", "The user is not authorized to request reports for one or more "
                                                   "of the specified accounts."),
    2004: ("NoCompleteDataAvaliable", "Complete data is not available for the requested time period."),
    2007: ("ReportingServiceInvalidReportAggregation", "The report aggregation is not valid for the specified "
                                                       "report time period."),
    2008: ("ReportingServiceInvalidTime", "The report time is null or invalid."),
    2009: ("ReportingServiceInvalidCustomDateRangeStart", "The report time contains an invalid custom date range "
                                                          "start."),
    2010: ("ReportingServiceInvalidCustomDateRangeEnd", "The report time contains an invalid custom date range end."),
    2011: ("ReportingServiceCustomDateRangeEndBeforeStart", "The report time contains an invalid custom date range "
                                                            "because the end date is before the start date."),
    2015: ("ReportingServiceRequiredColumnsNotSelected", "The list of columns to include in the report must "
                                                         "contain all required columns."),
    2035: ("ReportingServiceInvalidAccountIds", "One or more of the specified account IDs are invalid."),
    2101: ("ReportingServiceReportNotFound", "The specified report request ID is not found."),
    # Conversion goals (AddConversionGoals).
    5316: ("DuplicateConversionGoalName", "Duplicate Conversion Goal names are not allowed."),
    5317: ("ConversionGoalNameAlreadyExists", "The Conversion Goal with the same name already exists for the "
                                              "customer."),
    5319: ("ConversionGoalNameNotPassed", "The Conversion Goal name is required."),
    5320: ("InvalidConversionGoalName", "The Conversion Goal name is invalid or exceeds the length limit."),
    5321: ("ConversionGoalsNotPassed", "The Conversion Goals are required."),
    5322: ("ConversionGoalArrayExceedsLimit", "The list of Conversion Goals exceeds the limit."),
    5323: ("ConversionGoalIsNull", "The Conversion Goal is required."),
    5324: ("ConversionGoalIdIsNotNull", "The Conversion Goal ID must be null."),
    5326: ("TotalConversionGoalsExceedAccountLimit", "The total Conversion Goal count would exceed the account "
                                                     "level limit."),
    5328: ("InvalidConversionGoalStatus", "The Conversion Goal status is invalid."),
    5333: ("InvalidConversionGoalRevenueValue", "The Conversion Goal revenue value is invalid."),
    5337: ("InvalidConversionGoalConversionWindow", "The Conversion Window for Conversion Goal is invalid."),
    5351: ("InvalidGoalCurrencyCode", "The currency code of the goal is invalid."),
    5600: ("OfflineConversionsNullOrEmpty", "The list of offline conversions cannot be null or empty."),
    5601: ("OfflineConversionsLimitExceeded", "The list of offline conversions exceeds the limit."),
    5602: ("OfflineConversionIsNull", "The offline conversion cannot be null."),
    5603: ("OfflineConversionMicrosoftClickIdNullOrEmpty", "The Microsoft Click Id of the offline conversion cannot "
                                                          "be null or empty."),
    5604: ("OfflineConversionMicrosoftClickIdInvalid", "The Microsoft Click Id of the offline conversion is invalid."),
    5605: ("OfflineConversionNameNullOrEmpty", "The conversion name of the offline conversion cannot be null or "
                                              "empty."),
    5606: ("OfflineConversionNameInvalid", "The conversion name do not match an existing offline conversion goal."),
    5607: ("OfflineConversionTimeInvalid", "The conversion time of the offline conversion is invalid."),
    5608: ("OfflineConversionTimeNullOrEmpty", "The conversion time of the offline conversion cannot be null or "
                                              "empty."),
    5609: ("OfflineConversionTimeOutOfWindow", "The conversion time is out of the conversion window."),
    5610: ("OfflineConversionValueInvalid", "The conversion value of the offline conversion is invalid."),
    5611: ("OfflineConversionCurrencyCodeInvalid", "The currency code of the offline conversion is invalid."),
    5612: ("OfflineConversionsApplyFailed", "Failed to send offline conversions to internal server."),
    5614: ("FutureConversionTimeCannotBeSet", "A future conversion time cannot be set."),
    5615: ("OfflineConversionNotAcceptedForGoal", "Offline conversions are not accepted for this goal yet: you must "
                                                 "wait 2 hours after the goal was created."),
    5616: ("ConversionTimeEarlierThanClickTime", "The conversion time must be later than the click time."),
    5617: ("ClickIdDateTimeOutsideGoalConversionWindow", "The date and time for the click ID is outside the "
                                                        "conversion window for this goal."),
    # Adjustments (ApplyOfflineConversionAdjustments).
    5618: ("OfflineConversionInvalidAdjustmentType", "The offline conversion adjustment type is invalid."),
    5619: ("OfflineConversionAdjustmentTimeNullOrEmpty", "The offline conversion adjustment time is empty."),
    5620: ("OfflineConversionAdjustmentTimeEarlierThanConversionTime", "The offline conversion adjustment time is "
                                                                      "earlier than conversion time."),
    5621: ("OfflineConversionAdjustmentTimeInvalid", "The offline conversion adjustment time is invalid."),
    5622: ("OfflineConversionFutureAdjustmentTimeCannotBeSet", "The offline conversion adjustment time cannot be "
                                                              "in the future."),
    5623: ("OfflineConversionAdjustmentTimeOutOfWindow", "The offline conversion adjustment time is out of the "
                                                        "window."),
    5624: ("OfflineConversionAdjustmentValueNotExpected", "The offline conversion adjustment value is not "
                                                         "expected."),
    5625: ("OfflineConversionAdjustmentValueRequired", "The offline conversion adjustment value is required."),
    5626: ("OfflineConversionCurrencyValueRequired", "The offline conversion currency value is required."),
    5627: ("OfflineConversionRestateRetractNotSupported", "The offline conversion restate or retract operation is "
                                                         "not supported."),
    8004: ("EmailMustBeHashed", "Email address can't be in plain text and must be hashed."),
}


def error_code(code: int) -> str:
    return ERRORS[code][0]


def message(code: int) -> str:
    return ERRORS[code][1]


def batch_error(code: int, index: int) -> dict:
    """One BatchError (docs/microsoft-api.md#response-model), keys in Microsoft's order."""
    return {
        "Code": code, "Details": None, "ErrorCode": error_code(code), "FieldPath": None,
        "ForwardCompatibilityMap": None, "Index": index, "Message": message(code), "Type": "BatchError",
    }


@dataclass(eq=False)
class Fault(Exception):
    """A whole-request failure. `kind` picks the JSON shape; `status` the HTTP status."""

    code: int
    status: int = 400
    kind: str = "AdApiFaultDetail"      # or "ApiFaultDetail", "ApiFault" (Customer Management)
    detail: str | None = None
    message_text: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def body(self, tracking_id: str) -> dict:
        text = self.message_text or message(self.code)
        if self.kind == "AdApiFaultDetail":
            errors = [{"Code": self.code, "Detail": self.detail, "ErrorCode": error_code(self.code), "Message": text}]
            return {"TrackingId": tracking_id, "Type": "AdApiFaultDetail", "Errors": errors}
        if self.kind == "ApiFault":
            errors = [{"Code": self.code, "Details": self.detail, "Message": text}]
            return {"TrackingId": tracking_id, "Type": "ApiFault", "OperationErrors": errors}
        errors = [{"Code": self.code, "Details": self.detail, "ErrorCode": error_code(self.code), "Message": text}]
        return {"TrackingId": tracking_id, "Type": "ApiFaultDetail", "BatchErrors": [], "OperationErrors": errors}


def auth_fault(code: int, service: str) -> Fault:
    """105/106/109 and friends: AdApiFaultDetail for Campaign/Reporting, ApiFault for Customer Management."""
    status = {105: 401, 109: 401, 106: 403}.get(code, 400)
    return Fault(code, status=status, kind="ApiFault" if service == "customer" else "AdApiFaultDetail")


def operation_fault(code: int, service: str, status: int = 400, **kwargs) -> Fault:
    """A validation failure of the whole request (e.g. 5600, 5601, 2101)."""
    return Fault(code, status=status, kind="ApiFault" if service == "customer" else "ApiFaultDetail", **kwargs)


def deserialization_fault(text: str, service: str = "campaign") -> Fault:
    """A body the service cannot even read (docs/microsoft-api.md#request-body): one fault, no index, nothing applied."""
    kind = "ApiFault" if service == "customer" else "AdApiFaultDetail"
    return Fault(100, status=400, kind=kind, detail=text,
                 message_text=f"The request message could not be deserialized. {text}")
