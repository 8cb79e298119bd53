"""Customer Management operations for the account picker: GetUser and SearchAccounts
(docs/microsoft-api.md#account-picker)."""

from __future__ import annotations

from itertools import groupby

from emulator.auth import reachable_accounts
from emulator.faults import auth_fault, deserialization_fault
from emulator.models import ROLE_SUPER_ADMIN, EmulatorAccount, EmulatorUser

MAX_PAGE_SIZE = 1000
_ORDER_FIELDS = {"Id": lambda a: int(a.account_id), "Name": lambda a: a.name, "Number": lambda a: a.number}


def get_user(user: EmulatorUser, body: dict) -> dict:
    """Only the authenticated user (UserId null or their own id) can be read."""
    requested = body.get("UserId")
    if requested not in (None, "") and str(requested) != user.user_id:
        raise auth_fault(106, "customer")
    return {"User": user_json(user), "CustomerRoles": customer_roles(user)}


def customer_roles(user: EmulatorUser) -> list[dict]:
    """One CustomerRole per manager account; customer-level roles (Super Admin) carry no AccountIds."""
    accounts = reachable_accounts(user).order_by("parent_customer_id", "account_id")
    roles = []
    for customer_id, group in groupby(accounts, key=lambda a: a.parent_customer_id):
        account_ids = [a.account_id for a in group]
        roles.append({
            "CustomerId": customer_id,
            "AccountIds": None if user.role_id == ROLE_SUPER_ADMIN else account_ids,
            "LinkedAccountIds": None,
            "RoleId": user.role_id,
            "CustomerLinkPermission": None,
        })
    return roles


def user_json(user: EmulatorUser) -> dict:
    first = reachable_accounts(user).order_by("account_id").first()
    return {
        "ContactInfo": {"Address": None, "ContactByPhone": False, "ContactByPostalMail": False,
                        "Email": user.email, "EmailFormat": "Html", "Fax": None, "HomePhone": None,
                        "Id": None, "Mobile": None, "Phone1": None, "Phone2": None},
        "CustomerId": first.parent_customer_id if first else None,
        "Id": user.user_id,
        "JobTitle": None,
        "LastModifiedByUserId": None,
        "LastModifiedTime": None,
        "Lcid": "EnglishUS",
        "Name": {"FirstName": user.first_name, "LastName": user.last_name, "MiddleInitial": None},
        "Password": None,
        "SecretAnswer": None,
        "SecretQuestion": "None",
        "UserLifeCycleStatus": "Active",
        "TimeStamp": None,
        "UserName": user.user_name,
        "ForwardCompatibilityMap": None,
        "AuthenticationToken": None,
    }


def search_accounts(user: EmulatorUser, body: dict) -> dict:
    """Accounts the caller can reach, filtered by the predicates, ordered, then one page."""
    accounts = reachable_accounts(user)
    predicates = body.get("Predicates") or []
    if not isinstance(predicates, list) or not predicates:
        raise deserialization_fault("At least one predicate is required.", "customer")
    for predicate in predicates:
        accounts = _filter(accounts, predicate)
    ordered = _order(list(accounts.distinct()), body.get("Ordering"))
    index, size = _page(body.get("PageInfo"))
    return {"Accounts": [account_json(a) for a in ordered[index * size:(index + 1) * size]]}


_PREDICATE_FIELDS = {
    "UserId": "users__user_id",
    "AccountId": "account_id",
    "CustomerId": "parent_customer_id",
    "AccountNumber": "number",
    "AccountName": "name",
    "AccountLifeCycleStatus": "life_cycle_status",
}


def _filter(accounts, predicate):
    if not isinstance(predicate, dict) or predicate.get("Field") not in _PREDICATE_FIELDS:
        raise deserialization_fault(f"Unsupported predicate: {predicate!r}.", "customer")
    lookup, operator = _PREDICATE_FIELDS[predicate["Field"]], predicate.get("Operator")
    value = str(predicate.get("Value") or "")
    if operator == "Equals":
        return accounts.filter(**{lookup: value})
    if operator == "In":
        return accounts.filter(**{f"{lookup}__in": [v.strip() for v in value.split(",")]})
    if operator in ("Contains", "StartsWith"):
        return accounts.filter(**{f"{lookup}__{operator.lower()}": value})
    raise deserialization_fault(f"Unsupported predicate operator: {operator!r}.", "customer")


def _order(accounts: list[EmulatorAccount], ordering) -> list[EmulatorAccount]:
    for rule in reversed(ordering or []):
        key = _ORDER_FIELDS.get((rule or {}).get("Field"))
        if key:
            accounts.sort(key=key, reverse=rule.get("Order") == "Descending")
    return accounts


def _page(page_info) -> tuple[int, int]:
    """Zero-based Index; a PageInfo without Size means size 0 (docs/microsoft-api.md#account-picker)."""
    if not isinstance(page_info, dict):
        raise deserialization_fault("PageInfo is required.", "customer")
    index, size = page_info.get("Index") or 0, page_info.get("Size") or 0
    if not isinstance(index, int) or not isinstance(size, int) or index < 0 or not 0 <= size <= MAX_PAGE_SIZE:
        raise deserialization_fault(f"PageInfo Size must be 0 to {MAX_PAGE_SIZE}.", "customer")
    return index, size


def account_json(account: EmulatorAccount) -> dict:
    return {
        "BillToCustomerId": account.parent_customer_id,
        "CurrencyCode": account.currency_code,
        "AccountFinancialStatus": "ClearFinancialStatus",
        "Id": account.account_id,
        "Language": "English",
        "LastModifiedByUserId": None,
        "LastModifiedTime": None,
        "Name": account.name,
        "Number": account.number,
        "ParentCustomerId": account.parent_customer_id,
        "PaymentMethodId": None,
        "PaymentMethodType": None,
        "PrimaryUserId": None,
        "AccountLifeCycleStatus": account.life_cycle_status,
        "TimeStamp": None,
        "TimeZone": "PacificTimeUSCanadaTijuana",
        "PauseReason": None,
        "ForwardCompatibilityMap": None,
        "LinkedAgencies": None,
        "SalesHouseCustomerId": None,
        "TaxInformation": None,
        "BackUpPaymentInstrumentId": None,
        "BillingThresholdAmount": None,
        "BusinessAddress": None,
        "AutoTagType": "Inactive",
        "SoldToPaymentInstrumentId": None,
        "TaxCertificate": None,
        "AccountMode": "Expert",
        "Type": "AdvertiserAccount",
    }
