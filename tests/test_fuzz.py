"""Malformed requests against the public endpoints: never a 5xx, and nothing stored from invalid input.

Hypothesis draws requests from tests/fuzzing.py (the properties are listed there). Each endpoint
gets ADSYNC_FUZZ_EXAMPLES examples (300 by default, to keep the suite quick); the 10,000-request
run is bench/fuzz_public_endpoints.py. Specific bugs the fuzzer found have their own tests below.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adsync.models import Click, Conversion, Push
from tests import fuzzing

pytestmark = pytest.mark.django_db

EXAMPLES = int(os.environ.get("ADSYNC_FUZZ_EXAMPLES", "300"))


@pytest.fixture
def target(db) -> None:
    fuzzing.make_target()


def nothing_stored() -> bool:
    return (Click.objects.count(), Conversion.objects.count(), Push.objects.count()) == (0, 0, 0)


@pytest.mark.parametrize("endpoint", fuzzing.ENDPOINTS)
@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(data=st.data())
def test_malformed_requests_never_get_a_5xx_or_store_invalid_rows(client, target, endpoint, data):
    request = data.draw(fuzzing.REQUESTS[endpoint], label="request")

    outcome = fuzzing.send(client, request)

    assert outcome.problems == [], request.describe()
