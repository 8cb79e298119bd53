"""Demo data for the README's run command: a demo site connected to the built-in emulator.

Only for MICROSOFT_ADS_ENVIRONMENT=emulator: the connection's refresh token is one the
emulator issued, so the spine works end to end before anyone runs the OAuth flow.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

from adsync.models import Connection, GoalMapping, Site

DEMO_SITE_KEY = "demo"
DEMO_GOALS = {"purchase": "Purchase", "lead": "Lead", "signup": "Signup"}


@dataclass
class DemoLogin:
    username: str
    password: str


def demo_origins() -> str:
    base = settings.ADSYNC_PUBLIC_URL
    origins = {base, base.replace("127.0.0.1", "localhost"), base.replace("localhost", "127.0.0.1")}
    return "\n".join(sorted(origins))


@transaction.atomic
def ensure_demo_site() -> Site:
    from emulator.demo import ensure_demo_data

    account = ensure_demo_data()
    site, _ = Site.objects.get_or_create(
        key=DEMO_SITE_KEY, defaults={"name": "Demo shop", "allowed_origins": demo_origins()}
    )
    connection, created = Connection.objects.get_or_create(
        site=site, platform=Connection.PLATFORM_MICROSOFT_ADS,
        defaults={"customer_id": account.customer_id, "account_id": account.account_id,
                  "account_name": account.account_name, "status": Connection.ACTIVE},
    )
    if created or not connection.refresh_token:
        connection.refresh_token = account.refresh_token
        connection.status = Connection.ACTIVE
        connection.save(update_fields=["refresh_token", "status"])
    for event, goal in DEMO_GOALS.items():
        GoalMapping.objects.get_or_create(connection=connection, event_name=event, defaults={"goal_name": goal})
    return site


def ensure_demo_staff(username: str = "admin") -> DemoLogin:
    """A superuser with a fresh random password on every run, printed by the command."""
    user_model = get_user_model()
    user, _ = user_model.objects.get_or_create(username=username, defaults={"email": "admin@example.com"})
    password = secrets.token_urlsafe(9)
    user.is_staff = user.is_superuser = True
    user.set_password(password)
    user.save()
    return DemoLogin(username, password)



