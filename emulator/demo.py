"""Demo data for the emulator: users, two accounts, goals, campaigns and a refresh token.

`ensure_demo_data()` is idempotent: it creates what is missing and never overwrites rows
staff may have edited in the admin (a paused goal stays paused). The seed command calls it to
connect the demo site without going through OAuth.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from emulator import tokens
from emulator.models import (
    ROLE_SUPER_ADMIN,
    ROLE_VIEWER,
    EmulatorAccount,
    EmulatorCampaign,
    EmulatorGoal,
    EmulatorToken,
    EmulatorUser,
)

CUSTOMER_ID = "251234567"
ACCOUNT_ID = "187654321"
SECOND_ACCOUNT_ID = "187654322"
SCOPE = "openid offline_access https://ads.microsoft.com/msads.manage"
# (name, status, enhanced conversions)
DEMO_GOALS = [("Purchase", EmulatorGoal.ACTIVE, True), ("Lead", EmulatorGoal.ACTIVE, True),
              ("Signup", EmulatorGoal.ACTIVE, False), ("Old Goal", EmulatorGoal.PAUSED, False)]


@dataclass
class DemoAccount:
    customer_id: str
    account_id: str
    account_name: str
    refresh_token: str
    user: EmulatorUser


def ensure_demo_data() -> DemoAccount:
    """Create the demo tenant if needed and return the demo account with a usable refresh token."""
    with transaction.atomic():
        admin, viewer = _users()
        store = _account(ACCOUNT_ID, "Demo Store", "F1DEMO01", [admin])
        client = _account(SECOND_ACCOUNT_ID, "Demo Agency Client", "F1DEMO02", [admin, viewer])
        for name, status, enhanced in DEMO_GOALS:
            _goal(store, name, status, enhanced)
        _goal(client, "Purchase", EmulatorGoal.ACTIVE, False)
        for account, name in [(store, "Brand - Search"), (store, "Generic - Search"), (client, "Agency - Search")]:
            EmulatorCampaign.objects.get_or_create(account=account, name=name)
        refresh_token = demo_refresh_token(admin)
    return DemoAccount(CUSTOMER_ID, store.account_id, store.name, refresh_token, admin)


def _users() -> tuple[EmulatorUser, EmulatorUser]:
    admin, _ = EmulatorUser.objects.get_or_create(user_name="demo.admin", defaults={
        "email": "demo.admin@example.com", "first_name": "Dana", "last_name": "Admin", "role_id": ROLE_SUPER_ADMIN})
    viewer, _ = EmulatorUser.objects.get_or_create(user_name="demo.viewer", defaults={
        "email": "demo.viewer@example.com", "first_name": "Vic", "last_name": "Viewer", "role_id": ROLE_VIEWER})
    return admin, viewer


def _account(account_id: str, name: str, number: str, users: list[EmulatorUser]) -> EmulatorAccount:
    account, created = EmulatorAccount.objects.get_or_create(account_id=account_id, defaults={
        "parent_customer_id": CUSTOMER_ID, "name": name, "number": number, "currency_code": "USD"})
    if created:
        account.users.set(users)
    return account


def _goal(account: EmulatorAccount, name: str, status: str, enhanced: bool) -> None:
    # Created long ago, so the 2-hour rule (5615) never bites the demo even when switched on.
    EmulatorGoal.objects.get_or_create(account=account, name=name, defaults={
        "status": status, "is_enhanced_conversions_enabled": enhanced,
        "created_at": timezone.now() - timedelta(days=30)})


def demo_refresh_token(user: EmulatorUser) -> str:
    """An unspent, unrevoked, unexpired refresh token for the settings' OAuth app, made if none is left."""
    existing = EmulatorToken.objects.filter(
        user=user, kind=EmulatorToken.REFRESH, client_id=settings.MICROSOFT_ADS_CLIENT_ID,
        revoked=False, used_at__isnull=True, expires_at__gt=timezone.now() + timedelta(days=1),
    ).order_by("-created_at").first()
    if existing:
        return existing.value
    return tokens.issue_refresh_token(user, settings.MICROSOFT_ADS_CLIENT_ID, SCOPE).value
