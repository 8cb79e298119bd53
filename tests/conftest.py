"""Shared fixtures: small factories for sites, connections and conversions, and Microsoft
test doubles at the HTTP boundary (`responses`), never by patching our own functions."""

from __future__ import annotations

import itertools
from datetime import timedelta
from decimal import Decimal

import pytest
import responses as responses_lib
from django.utils import timezone

from adsync.models import Connection, Conversion, GoalMapping, Push, Site
from adsync.push import transitions

CAMPAIGN = "https://campaign.example.test"
CUSTOMER = "https://clientcenter.example.test"
REPORTING = "https://reporting.example.test"
TOKEN_URL = "https://login.example.test/common/oauth2/v2.0/token"
AUTHORIZE_URL = "https://login.example.test/common/oauth2/v2.0/authorize"
APPLY_URL = CAMPAIGN + "/CampaignManagement/v13/OfflineConversions/Apply"
GOALS_URL = CAMPAIGN + "/CampaignManagement/v13/ConversionGoals/QueryByIds"

_counter = itertools.count(1)


@pytest.fixture(autouse=True)
def microsoft_test_double_urls(settings):
    """Every Microsoft URL points at a host that only `responses` (or the emulator) answers."""
    settings.MICROSOFT_ADS_CAMPAIGN_API_URL = CAMPAIGN
    settings.MICROSOFT_ADS_CUSTOMER_API_URL = CUSTOMER
    settings.MICROSOFT_ADS_REPORTING_API_URL = REPORTING
    settings.MICROSOFT_ADS_OAUTH_TOKEN_URL = TOKEN_URL
    settings.MICROSOFT_ADS_OAUTH_AUTHORIZE_URL = AUTHORIZE_URL
    settings.MICROSOFT_ADS_CLIENT_ID = "client-id"
    settings.MICROSOFT_ADS_CLIENT_SECRET = "client-secret"
    settings.MICROSOFT_ADS_DEVELOPER_TOKEN = "dev-token"
    # A test's rows live in its open transaction, which a flush lane's own database connection
    # cannot see: one lane here; tests/push/test_flush_lanes.py runs several on committed data.
    settings.ADSYNC_FLUSH_LANES = 1
    # Sites are created and rolled back test by test: no process-wide copy survives a test.
    settings.ADSYNC_SITE_CACHE_SECONDS = 0
    return settings


@pytest.fixture(autouse=True)
def shared_cache_of_its_own(settings):
    """Each test counts rate limits and login failures afresh: a key prefix of its own in the shared cache (the
    database table outlives transactional tests), and none of the counts this process kept for an earlier test."""
    from adsync.security import crypto
    from tracking import limits

    settings.CACHES = {name: {**options, "KEY_PREFIX": f"test{next(_counter)}"}
                       for name, options in settings.CACHES.items()}
    limits.forget()
    crypto.forget_key_state()
    yield
    limits.forget()


@pytest.fixture(autouse=True)
def group_commit_writer_closed():
    """The inbox's group-commit thread keeps its own connection: close it after each test, or the
    test database could not be dropped (nor a transactional test's tables be flushed) under it."""
    yield
    from tracking.accept import group_writer

    group_writer.close_connection()


@pytest.fixture
def mocked():
    with responses_lib.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


@pytest.fixture
def make_site(db):
    def make(**kwargs) -> Site:
        n = next(_counter)
        defaults = {"name": f"Shop {n}", "key": f"pk_test{n}", "allowed_origins": "https://shop.example.com"}
        return Site.objects.create(**{**defaults, **kwargs})
    return make


@pytest.fixture
def site(make_site) -> Site:
    return make_site()


@pytest.fixture
def make_connection(db):
    def make(site: Site, goals: dict[str, str] | None = None, **kwargs) -> Connection:
        defaults = {
            "status": Connection.ACTIVE, "customer_id": "251234567", "account_id": "187654321",
            "account_name": "Shop account", "access_token": "access-1", "refresh_token": "refresh-1",
            "token_expires_at": timezone.now() + timedelta(hours=1),
        }
        conn = Connection.objects.create(site=site, **{**defaults, **kwargs})
        for event, goal in (goals if goals is not None else {"purchase": "Purchase"}).items():
            GoalMapping.objects.create(connection=conn, event_name=event, goal_name=goal)
        return conn
    return make


@pytest.fixture
def connection(site, make_connection) -> Connection:
    return make_connection(site)


@pytest.fixture
def make_conversion(db):
    def make(site: Site, event: str = "purchase", msclkid: str | None = None, **kwargs) -> Conversion:
        n = next(_counter)
        conversion = Conversion.objects.create(
            site=site, event_name=event, order_id=kwargs.pop("order_id", f"order-{n}"),
            value=kwargs.pop("value", Decimal("10.50")), currency=kwargs.pop("currency", "USD"),
            msclkid=f"{n:032x}" if msclkid is None else msclkid,
            occurred_at=kwargs.pop("occurred_at", timezone.now().replace(microsecond=0) - timedelta(hours=2)),
            **kwargs,
        )
        transitions.create_pushes(conversion)
        return conversion
    return make


def bulk_queue(site: Site, count: int, event: str = "purchase") -> None:
    """Queue `count` conversions quickly (bulk_create), each with a click id."""
    now = timezone.now().replace(microsecond=0) - timedelta(hours=2)
    start = Conversion.objects.count()
    conversions = Conversion.objects.bulk_create(
        Conversion(site=site, event_name=event, order_id=f"bulk-{start + i}", value=Decimal("1"), currency="USD",
                   msclkid=f"{start + i:032x}", occurred_at=now)
        for i in range(count)
    )
    if not conversions[0].pk:  # backends without RETURNING ids
        conversions = list(Conversion.objects.filter(site=site, order_id__startswith="bulk-"))
    mappings = list(GoalMapping.objects.filter(connection__site=site, event_name=event).select_related("connection"))
    Push.objects.bulk_create(
        Push(conversion=c, connection=m.connection, goal_name=m.goal_name, msclkid=c.msclkid, value=c.value,
             currency=c.currency, conversion_time=c.occurred_at)
        for c in conversions for m in mappings
    )


def run_queued_jobs() -> list[str]:
    """Run what adsync queued for the worker (django-q2's ORM queue), oldest first, as the worker would."""
    from django.utils.module_loading import import_string
    from django_q.models import OrmQ

    lines = []
    while (queued := OrmQ.objects.order_by("id").first()) is not None:
        task = queued.task
        queued.delete()
        lines.append(import_string(task["func"])(*task["args"], **task["kwargs"]))
    return lines


def form_fields(html: str) -> dict[str, str]:
    """The values a browser would submit for the page's main form (inputs, selects, textareas), as a dict."""
    from html.parser import HTMLParser

    class Fields(HTMLParser):
        def __init__(self):
            super().__init__()
            self.data: dict[str, str] = {}
            self.select: str | None = None
            self.textarea: str | None = None

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            name = a.get("name")
            if tag == "input" and name and a.get("type") not in ("submit", "button", "file"):
                if a.get("type") in ("checkbox", "radio"):
                    if "checked" in a:
                        self.data[name] = a.get("value", "on")
                else:
                    self.data[name] = a.get("value", "")
            elif tag == "select" and name:
                self.select = name
                self.data.setdefault(name, "")
            elif tag == "option" and self.select and "selected" in a:
                self.data[self.select] = a.get("value", "")
            elif tag == "textarea" and name:
                self.textarea = name
                self.data[name] = ""

        def handle_endtag(self, tag):
            if tag == "select":
                self.select = None
            elif tag == "textarea":
                self.textarea = None

        def handle_data(self, data):
            if self.textarea:
                self.data[self.textarea] += data.removeprefix("\n") if not self.data[self.textarea] else data

    parser = Fields()
    parser.feed(html)
    return parser.data
