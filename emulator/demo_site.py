"""The README's demo: a demo site connected to the emulator, a staff login, and the demo shop page.

Emulator mode only (the emulator app is installed only then). The connection's refresh token is
one the emulator issued, so the whole flow works before anyone runs the OAuth flow.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_safe

from adsync.models import Connection, GoalMapping, Site
from emulator.demo import ensure_demo_data

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


@require_safe
def shop(request: HttpRequest) -> HttpResponse:
    """A little shop page that embeds the snippet, to try the whole flow by hand."""
    site = Site.objects.filter(key=DEMO_SITE_KEY).first() or Site.objects.order_by("pk").first()
    page_origin = f"{request.scheme}://{request.get_host()}"
    context = {
        "site": site,
        "snippet_url": request.build_absolute_uri("/t/v1/adsync.js"),
        "page_origin": page_origin,
        "origin_allowed": bool(site and site.allows_origin(page_origin)),
        "msclkid_cookie": request.COOKIES.get("adsync_msclkid", ""),
    }
    return render(request, "demo/shop.html", context)
