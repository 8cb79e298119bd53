"""The emulated Microsoft Advertising REST endpoints, one small view per operation.

Each view checks the headers Microsoft checks (emulator/auth.py), then hands the body to the
operation's module. JSON parsing, the TrackingId header and fault rendering are done by
`api_endpoint` (emulator/http.py).
"""

from __future__ import annotations

from urllib.parse import urlencode

from django.core.signing import TimestampSigner
from django.http import HttpRequest
from django.urls import reverse

from emulator import adjustments, behaviour, campaign, customer, reports
from emulator.auth import account_from_headers, authenticate
from emulator.faults import auth_fault
from emulator.http import ApiCall, api_endpoint

REPORT_SIGNER_SALT = "emulator.report-download"


# Campaign Management:
# https://learn.microsoft.com/en-us/advertising/campaign-management-service/applyofflineconversions?view=bingads-13
@api_endpoint("campaign")
def apply_offline_conversions(request: HttpRequest, call: ApiCall) -> dict:
    user = authenticate(request, call.service)
    account = account_from_headers(request, user, call.service)
    if not user.can_write:
        raise auth_fault(106, call.service)    # a Viewer cannot upload conversions (docs/microsoft-api.md#account-picker)
    behaviour.inject_apply_failure()
    return campaign.apply_offline_conversions(account, call.body, call.tracking_id)


# https://learn.microsoft.com/en-us/advertising/campaign-management-service/applyofflineconversionadjustments?view=bingads-13
@api_endpoint("campaign")
def apply_offline_conversion_adjustments(request: HttpRequest, call: ApiCall) -> dict:
    user = authenticate(request, call.service)
    account = account_from_headers(request, user, call.service)
    if not user.can_write:
        raise auth_fault(106, call.service)    # a Viewer cannot change conversions either
    return adjustments.apply_offline_conversion_adjustments(account, call.body, call.tracking_id)


# https://learn.microsoft.com/en-us/advertising/campaign-management-service/addconversiongoals?view=bingads-13
@api_endpoint("campaign")
def add_conversion_goals(request: HttpRequest, call: ApiCall) -> dict:
    user = authenticate(request, call.service)
    account = account_from_headers(request, user, call.service)
    if not user.can_write:
        raise auth_fault(106, call.service)
    return campaign.add_conversion_goals(account, call.body)


# https://learn.microsoft.com/en-us/advertising/campaign-management-service/getaccountproperties?view=bingads-13
@api_endpoint("campaign")
def get_account_properties(request: HttpRequest, call: ApiCall) -> dict:
    user = authenticate(request, call.service)
    return campaign.get_account_properties(account_from_headers(request, user, call.service), call.body)


# https://learn.microsoft.com/en-us/advertising/campaign-management-service/getconversiongoalsbyids?view=bingads-13
@api_endpoint("campaign")
def query_conversion_goals(request: HttpRequest, call: ApiCall) -> dict:
    user = authenticate(request, call.service)
    account = account_from_headers(request, user, call.service)
    return campaign.query_conversion_goals(account, call.body)


# Customer Management: https://learn.microsoft.com/en-us/advertising/customer-management-service/getuser?view=bingads-13
@api_endpoint("customer")
def get_user(request: HttpRequest, call: ApiCall) -> dict:
    return customer.get_user(authenticate(request, call.service), call.body)


# https://learn.microsoft.com/en-us/advertising/customer-management-service/searchaccounts?view=bingads-13
@api_endpoint("customer")
def search_accounts(request: HttpRequest, call: ApiCall) -> dict:
    return customer.search_accounts(authenticate(request, call.service), call.body)


# Reporting: https://learn.microsoft.com/en-us/advertising/reporting-service/submitgeneratereport?view=bingads-13
@api_endpoint("reporting")
def submit_report(request: HttpRequest, call: ApiCall) -> dict:
    user = authenticate(request, call.service)
    account_from_headers(request, user, call.service, required=False)
    return reports.submit(user, call.body)


# https://learn.microsoft.com/en-us/advertising/reporting-service/pollgeneratereport?view=bingads-13
@api_endpoint("reporting")
def poll_report(request: HttpRequest, call: ApiCall) -> dict:
    user = authenticate(request, call.service)
    account_from_headers(request, user, call.service, required=False)
    return reports.poll(user, call.body, lambda request_id: report_download_url(request, request_id))


def report_download_url(request: HttpRequest, request_id: str) -> str:
    """An absolute, signed URL that works without headers for 5 minutes, like Microsoft's."""
    signature = TimestampSigner(salt=REPORT_SIGNER_SALT).sign(request_id)
    path = reverse("emulator:report-download", args=[request_id])
    return request.build_absolute_uri(f"{path}?{urlencode({'sig': signature})}")
