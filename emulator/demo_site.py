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
from django.utils import timezone
from django.views.decorators.http import require_safe

from adsync.models import Connection, GoalMapping, Site
from emulator.demo import ACCOUNT_ID, ensure_demo_data

DEMO_SITE_KEY = "demo"
DEMO_GOALS = {"purchase": "Purchase", "lead": "Lead", "signup": "Signup"}


@dataclass
class DemoLogin:
    """The demo's staff login. `password` is set only when it was just created or reset: it is stored
    nowhere but the database (as a hash), so it is printed once, then kept across restarts."""

    username: str
    password: str = ""


def demo_origins() -> str:
    base = settings.ADSYNC_PUBLIC_URL
    origins = {base, base.replace("127.0.0.1", "localhost"), base.replace("localhost", "127.0.0.1")}
    return "\n".join(sorted(origins))


@transaction.atomic
def ensure_demo_site() -> Site:
    """The demo site and its connection to the emulator, created once.

    Idempotent whatever staff did since: a second connection on the site, a Disconnect, edited
    mappings or goals are left as they are; only what is missing (the site, its first connection)
    is created.
    """
    account = ensure_demo_data()
    site, _ = Site.objects.get_or_create(
        key=DEMO_SITE_KEY, defaults={"name": "Demo shop", "allowed_origins": demo_origins()}
    )
    if demo_connection(site) is None:
        connection = Connection.objects.create(
            site=site, platform=Connection.PLATFORM_MICROSOFT_ADS, customer_id=account.customer_id,
            account_id=account.account_id, account_name=account.account_name, status=Connection.ACTIVE,
            refresh_token=account.refresh_token, connected_at=timezone.now())
        GoalMapping.objects.bulk_create(GoalMapping(connection=connection, event_name=event, goal_name=goal)
                                        for event, goal in DEMO_GOALS.items())
    return site


def demo_connection(site: Site) -> Connection | None:
    """The site's connection to the demo account (the first one when staff added others), or its first."""
    connections = site.connections.order_by("pk")
    return connections.filter(account_id=ACCOUNT_ID).first() or connections.first()


def ensure_demo_staff(username: str = "admin", *, reset: bool = False) -> DemoLogin:
    """A superuser created once with a random password (returned to be printed once); `reset` sets a new one."""
    user_model = get_user_model()
    user = user_model.objects.filter(username=username).first()
    if user is not None and not reset:
        return DemoLogin(username)
    password = secrets.token_urlsafe(12)
    if user is None:
        user_model.objects.create_superuser(username, "admin@example.com", password)
    else:
        user.is_staff = user.is_superuser = user.is_active = True
        user.set_password(password)
        user.save(update_fields=["password", "is_staff", "is_superuser", "is_active"])
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
