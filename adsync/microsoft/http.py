"""The single HTTP choke point for calls to Microsoft: a session with a timeout and a User-Agent.

Network failures become MicrosoftAdsError(kind=TRANSIENT), so callers deal with one error type.
"""

from contextlib import contextmanager

import requests

from adsync.conf import conf
from adsync.microsoft.errors import Kind, MicrosoftAdsError

USER_AGENT = "adsync/0.1 (+offline conversions)"


def new_session() -> requests.Session:
    session = requests.Session()
    session.headers["User-Agent"] = USER_AGENT
    return session


def post_json(session: requests.Session, url: str, body: dict, headers: dict) -> requests.Response:
    """POST JSON with the configured timeout; transport failures are transient errors."""
    with transport_errors(url):
        return session.post(
            url,
            json=body,
            headers={"Content-Type": "application/json", "Accept": "application/json", **headers},
            timeout=conf.timeout,
        )


def get(session: requests.Session, url: str, headers: dict | None = None) -> requests.Response:
    """GET with the configured timeout (e.g. a report download URL); transport failures are transient."""
    with transport_errors(url):
        return session.get(url, headers=headers or {}, timeout=conf.timeout)


@contextmanager
def transport_errors(url: str):
    """Timeouts and connection failures become MicrosoftAdsError(kind=TRANSIENT), URL without its query."""
    try:
        yield
    except requests.Timeout:
        raise MicrosoftAdsError(f"Timed out after {conf.timeout:g}s calling {_no_query(url)}",
                                kind=Kind.TRANSIENT) from None
    except requests.RequestException as exc:
        raise MicrosoftAdsError(f"Network error calling {_no_query(url)}: {exc.__class__.__name__}",
                                kind=Kind.TRANSIENT) from None


def _no_query(url: str) -> str:
    """Download URLs carry a signature in their query string: keep it out of messages and logs."""
    return url.split("?", 1)[0]
