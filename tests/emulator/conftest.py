"""Fixtures of the emulator's tests: emulator mode, the demo tenant and an access token of its admin."""

import pytest

from emulator.demo import ensure_demo_data
from tests.emulator.support import access_token_for


@pytest.fixture(autouse=True)
def emulator_mode(settings):
    """The emulator answers only in emulator mode; the suite's conftest sets client id/secret and dev token."""
    settings.MICROSOFT_ADS_ENVIRONMENT = "emulator"
    return settings


@pytest.fixture
def demo():
    return ensure_demo_data()


@pytest.fixture
def token(demo) -> str:
    return access_token_for(demo.user)
