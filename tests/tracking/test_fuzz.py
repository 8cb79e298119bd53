"""Malformed requests against the public endpoints: never a 5xx, and nothing stored from invalid input.

Hypothesis draws requests from tests/fuzzing.py (the properties are listed there). Each endpoint
gets ADSYNC_FUZZ_EXAMPLES examples (300 by default, to keep the suite quick); the 10,000-request
run is bench/fuzz_public_endpoints.py. Specific bugs the fuzzer found have their own tests below.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adsync.models import Click, Conversion, Hit, Push
from tests import fuzzing

pytestmark = pytest.mark.django_db

EXAMPLES = int(os.environ.get("ADSYNC_FUZZ_EXAMPLES", "300"))


@pytest.fixture
def target(db, settings) -> None:
    # Hundreds of examples from one address in a minute: the rate limits (tested in tests/security) would
    # answer most of them 429 before their bodies are even read.
    settings.ADSYNC_CLIENT_HITS_PER_MINUTE = settings.ADSYNC_SITE_HITS_PER_MINUTE = 10**9
    fuzzing.make_target()


def nothing_stored() -> bool:
    return (Click.objects.count(), Conversion.objects.count(), Push.objects.count(), Hit.objects.count()) == (0, 0, 0, 0)


@pytest.mark.parametrize("endpoint", fuzzing.ENDPOINTS)
@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(data=st.data())
def test_malformed_requests_never_get_a_5xx_or_store_invalid_rows(client, target, endpoint, data):
    request = data.draw(fuzzing.REQUESTS[endpoint], label="request")

    outcome = fuzzing.send(client, request)

    assert outcome.problems == [], request.describe()


# --- What the fuzzer found --------------------------------------------------------------------

AUTH = {"Authorization": f"Bearer {fuzzing.SECRET}"}


def post_api(client, body: str):
    return client.post("/api/v1/conversions", body, content_type="application/json", headers=AUTH)


@pytest.mark.parametrize("body, error", [
    ('{"site": "\\ud823", "type": "click"}', "site: must not contain NUL characters or unpaired surrogates"),
    ('{"site": "pk_fuzz", "type": "conversion", "event": "purchase", "email": "x\\udfff@example.com"}',
     "email: must not contain NUL characters or unpaired surrogates"),
    ('{"site": "pk_fuzz", "type": "conversion", "event": "purchase", "orderId": "A\\u0000"}',
     "orderId: must not contain NUL characters or unpaired surrogates"),
    ('{"site": "pk_fuzz", "type": "conversion", "event": "purchase\\n"}',
     "event: must be 1-100 characters of A-Z a-z 0-9 _ . : -"),
])
def test_text_no_database_can_hold_is_a_400_not_a_500(client, target, body, error):
    response = client.post("/t/v1/collect", body, content_type="text/plain", headers={"Origin": fuzzing.ORIGIN})

    assert (response.status_code, response.json()) == (400, {"error": error})
    assert nothing_stored()


def test_a_time_near_year_one_is_a_400_not_an_overflow(client, target):
    response = post_api(client, '{"event": "purchase", "visitorId": "v1", "time": "0001-01-01T00:00:00Z"}')

    assert (response.status_code, response.json()) == (400, {"error": "time: must be 2000-01-01 or later"})
    assert nothing_stored()


@pytest.mark.parametrize("request_path, status", [
    ("/api/v1/conversions/A%00", 404),
    ("/api/v1/conversions/A?event=purchase%00", 404),
])
def test_a_nul_in_a_lookup_never_reaches_the_database(client, target, request_path, status):
    found: list[str] = []

    with fuzzing.postgres_text_rules(found):
        response = client.get(request_path, headers=AUTH)

    assert response.status_code == status
    assert found == []  # PostgreSQL would have refused the query: a 500


def test_a_preflight_naming_a_site_key_with_a_nul_is_refused_without_a_query_postgresql_refuses(client, target):
    found: list[str] = []

    with fuzzing.postgres_text_rules(found):
        response = client.options("/t/v1/collect?site=pk_fuzz%00", headers={"Origin": fuzzing.ORIGIN})

    assert response.status_code == 403
    assert found == []


def test_a_click_that_duplicates_a_same_second_conversion_does_not_break_the_dedupe_key(client, target):
    """An order without a click id, then one with it in the same second: one push per (goal, click, second)."""
    when = (timezone.now() - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")  # inside Microsoft's 90 days
    post_api(client, f'{{"event": "purchase", "orderId": "A", "visitorId": "v1", "time": "{when}"}}')

    response = post_api(client, '{"event": "purchase", "orderId": "B", "visitorId": "v1", '
                                f'"msclkid": "f894f652ea334e739002f7167ab8f8e3", "time": "{when}"}}')

    assert response.status_code == 201
    assert Conversion.objects.filter(msclkid="f894f652ea334e739002f7167ab8f8e3").count() == 2
    statuses = sorted(Push.objects.values_list("conversion__order_id", "status"))
    assert statuses == [("A", Push.PENDING_IDENTITY), ("B", Push.QUEUED)]
