"""Customer Management v13 over REST/JSON: who the signed-in user is and which accounts they reach.

Reference: docs/microsoft-api.md#account-picker (account picker). Only `Authorization` and
`DeveloperToken` are sent: Customer Management needs no CustomerId/CustomerAccountId headers.
Base URL: MICROSOFT_ADS_CUSTOMER_API_URL (production, sandbox, emulator or a test double).
"""

from __future__ import annotations

from dataclasses import dataclass

import requests

from adsync.conf import conf
from adsync.microsoft.errors import fault_from_response
from adsync.microsoft.http import new_session, post_json

GET_USER = "/CustomerManagement/v13/User/Query"
# https://learn.microsoft.com/en-us/advertising/customer-management-service/getuser?view=bingads-13
SEARCH_ACCOUNTS = "/CustomerManagement/v13/Accounts/Search"
# https://learn.microsoft.com/en-us/advertising/customer-management-service/searchaccounts?view=bingads-13

PAGE_SIZE = 1000  # the documented maximum (docs/microsoft-api.md#account-picker, paging)
MAX_PAGES = 100   # a guard against a server that never returns a short page
VIEWER_ROLE_ID = 100  # CustomerRole.RoleId of a Viewer: cannot upload conversions (docs/microsoft-api.md#account-picker)
ROLE_NAMES = {16: "Advertiser Campaign Manager", 33: "Aggregator", 41: "Super Admin", 100: "Viewer",
              203: "Standard User"}


@dataclass
class AdAccount:
    """One AdvertiserAccount as the picker shows it; `id` → CustomerAccountId, `customer_id` → CustomerId."""

    id: str
    customer_id: str
    name: str
    number: str
    currency: str
    status: str
    role_ids: tuple[int, ...] = ()

    @property
    def viewer_only(self) -> bool:
        """Every role that reaches this account is Viewer: uploads will fail with 106."""
        return bool(self.role_ids) and all(role == VIEWER_ROLE_ID for role in self.role_ids)

    @property
    def role_names(self) -> str:
        return ", ".join(ROLE_NAMES.get(role, f"role {role}") for role in self.role_ids)

    @classmethod
    def from_json(cls, raw: dict, roles: list[dict]) -> AdAccount:
        account = cls(
            id=_text(raw.get("Id")), customer_id=_text(raw.get("ParentCustomerId")), name=raw.get("Name") or "",
            number=raw.get("Number") or "", currency=raw.get("CurrencyCode") or "",
            status=raw.get("AccountLifeCycleStatus") or "",
        )
        account.role_ids = tuple(_role_ids_for(account, roles))
        return account


class CustomerClient:
    """The signed-in Microsoft user's view of Customer Management."""

    def __init__(self, *, access_token: str, developer_token: str | None = None,
                 session: requests.Session | None = None):
        self.session = session or new_session()
        self.headers = {
            "Authorization": f"Bearer {access_token}",
            "DeveloperToken": developer_token or conf.developer_token,
        }

    def _post(self, path: str, body: dict) -> dict:
        response = post_json(self.session, conf.customer_api_url + path, body, self.headers)
        if not response.ok:
            raise fault_from_response(response)
        try:
            payload = response.json()
        except ValueError:
            payload = None
        return payload if isinstance(payload, dict) else {}

    def get_user(self) -> dict:
        """GetUser with a null UserId: the authenticated user and their CustomerRoles."""
        return self._post(GET_USER, {"UserId": None})

    def search_accounts(self, user_id: str) -> list[dict]:
        """Every account the user can reach, page by page (zero-based Index, up to 1,000 per page)."""
        accounts: list[dict] = []
        for index in range(MAX_PAGES):
            page = self._post(SEARCH_ACCOUNTS, {
                "Predicates": [{"Field": "UserId", "Operator": "Equals", "Value": str(user_id)}],
                "Ordering": [{"Field": "Name", "Order": "Ascending"}],
                "PageInfo": {"Index": index, "Size": PAGE_SIZE},
                "ReturnAdditionalFields": None,
            })
            rows = [row for row in page.get("Accounts") or [] if isinstance(row, dict)]
            accounts.extend(rows)
            if len(rows) < PAGE_SIZE:
                break
        return accounts

    def reachable_accounts(self) -> list[AdAccount]:
        """GetUser then SearchAccounts by user id (the docs' "get ids" recipe), with the user's role per account."""
        payload = self.get_user()
        user = payload.get("User") or {}
        roles = [role for role in payload.get("CustomerRoles") or [] if isinstance(role, dict)]
        return [AdAccount.from_json(raw, roles) for raw in self.search_accounts(_text(user.get("Id")))]


def _text(value) -> str:
    """Ids arrive as strings (REST longs) or numbers (docs/microsoft-api.md#request-body): keep the digits as a string."""
    return "" if value is None else str(value)


def _role_ids_for(account: AdAccount, roles: list[dict]) -> list[int]:
    """The roles that reach an account: listed explicitly, agency-linked, or customer-wide
    (docs/microsoft-api.md#customer-roles)."""
    found = []
    for role in roles:
        account_ids = {_text(a) for a in role.get("AccountIds") or []}
        linked_ids = {_text(a) for a in role.get("LinkedAccountIds") or []}
        customer_wide = not role.get("AccountIds") and _text(role.get("CustomerId")) == account.customer_id
        if account.id in account_ids or account.id in linked_ids or customer_wide:
            try:
                found.append(int(role.get("RoleId")))
            except (TypeError, ValueError):
                continue
    return found
