"""The header checks Microsoft makes before any operation runs (docs/microsoft-api.md#request-headers and
#account-picker).

Order: Authorization (105 unknown or revoked, 109 expired), DeveloperToken (105), then for
Campaign Management and Reporting the CustomerId (1029) and CustomerAccountId (1030) headers
and whether the token's user can reach that account (106).
"""

from __future__ import annotations

import re

from django.conf import settings
from django.http import HttpRequest

from emulator.faults import auth_fault, operation_fault
from emulator.models import EmulatorAccount, EmulatorToken, EmulatorUser

SANDBOX_DEVELOPER_TOKEN = "BBD37VB98"
_DIGITS = re.compile(r"^[0-9]{1,18}$")


def accepted_developer_tokens() -> set[str]:
    return {settings.MICROSOFT_ADS_DEVELOPER_TOKEN, SANDBOX_DEVELOPER_TOKEN}


def authenticate(request: HttpRequest, service: str) -> EmulatorUser:
    """The user behind `Authorization: Bearer <access token>`, if the DeveloperToken is also good."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme != "Bearer" or not value.strip():
        raise auth_fault(105, service)
    token = EmulatorToken.objects.filter(value=value.strip(), kind=EmulatorToken.ACCESS).select_related("user").first()
    if token is None or token.revoked:
        raise auth_fault(105, service)
    if token.is_expired:
        raise auth_fault(109, service)
    if request.headers.get("DeveloperToken", "") not in accepted_developer_tokens():
        raise auth_fault(105, service)
    return token.user


def reachable_accounts(user: EmulatorUser):
    return EmulatorAccount.objects.filter(users=user)


def account_from_headers(request: HttpRequest, user: EmulatorUser, service: str,
                         required: bool = True) -> EmulatorAccount | None:
    """The account named by CustomerId + CustomerAccountId, which the user must be able to reach."""
    customer_id = request.headers.get("CustomerId", "").strip()
    account_id = request.headers.get("CustomerAccountId", "").strip()
    if not customer_id:
        raise operation_fault(1029, service)
    if not _DIGITS.match(customer_id):
        raise operation_fault(1490, service)
    if not account_id:
        if required:
            raise operation_fault(1030, service)
        return None
    if not _DIGITS.match(account_id):
        raise operation_fault(1102, service)
    account = reachable_accounts(user).filter(account_id=account_id, parent_customer_id=customer_id).first()
    if account is None:
        raise auth_fault(106, service)
    return account
