"""Keeping a connection's access token fresh: refresh before expiry, once, and save the rotation.

Reference: docs/microsoft-api.md#oauth (lifetimes, rotation, invalid_grant).
Two workers must never spend the same rotating refresh token, so a refresh runs under a
lease on the connection row (a conditional UPDATE), and whoever waits re-reads the token the
other one saved instead of refreshing again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import TypeVar

from django.db.models import Q
from django.utils import timezone

from adsync.connections import health
from adsync.microsoft import oauth
from adsync.microsoft.errors import Kind, MicrosoftAdsError
from adsync.models import Connection

log = logging.getLogger(__name__)
T = TypeVar("T")

REFRESH_MARGIN = timedelta(minutes=5)
LOCK_LEASE = timedelta(seconds=60)
LOCK_WAIT_SECONDS = 30.0


def token_is_fresh(connection: Connection, margin: timedelta = REFRESH_MARGIN) -> bool:
    return bool(
        connection.access_token
        and connection.token_expires_at
        and connection.token_expires_at - timezone.now() > margin
    )


def access_token_for(connection: Connection) -> str:
    """A usable access token, refreshed first if it expires within the margin."""
    if token_is_fresh(connection):
        return connection.access_token
    return refresh(connection)


def call_with_refresh(connection: Connection, access_token: str, call: Callable[[str], T],
                      operation: str = Connection.UPLOAD) -> tuple[T, str]:
    """Run `call(access_token)`; on 105/109 refresh once and retry once (the official SDK's pattern,
    docs/microsoft-api.md#response-model).

    Returns (result, the access token that worked) so the caller keeps using the fresh one. A
    second auth failure marks the card Token expired and is re-raised as RECONNECT.
    """
    try:
        return call(access_token), access_token
    except MicrosoftAdsError as err:
        if err.kind != Kind.AUTH:
            raise
    access_token = refresh(connection, stale_access_token=access_token)
    try:
        return call(access_token), access_token
    except MicrosoftAdsError as err:
        if err.kind == Kind.AUTH:
            err.kind = Kind.RECONNECT
            health.mark_token_expired(connection, operation, err)
        raise


def refresh(connection: Connection, *, stale_access_token: str | None = None) -> str:
    """Refresh under the row lease and return the new access token.

    With `stale_access_token` (after a 109 from the API) the refresh happens only if the stored
    token is still that one; otherwise another worker already refreshed and its token is used.
    """
    _acquire_lock(connection)
    try:
        connection.refresh_from_db(fields=["access_token", "refresh_token", "token_expires_at", "status"])
        if stale_access_token is None and token_is_fresh(connection):
            return connection.access_token
        if stale_access_token is not None and connection.access_token != stale_access_token:
            return connection.access_token
        if connection.status == Connection.DISCONNECTED:
            # Disconnected while this worker was on its way: the wipe stands, nothing to mark.
            raise MicrosoftAdsError("The connection is disconnected: click Connect.", kind=Kind.RECONNECT)
        if not connection.refresh_token:
            missing = MicrosoftAdsError("No refresh token stored: connect the account.", kind=Kind.RECONNECT)
            health.mark_token_expired(connection, Connection.TOKEN_REFRESH, missing)
            raise missing
        client_id, client_secret = connection.oauth_client()
        try:
            tokens = oauth.refresh(client_id, client_secret, connection.refresh_token)
        except MicrosoftAdsError as err:
            if err.kind == Kind.RECONNECT:
                health.mark_token_expired(connection, Connection.TOKEN_REFRESH, err)
            else:
                health.record_failure(connection, Connection.TOKEN_REFRESH, err)
            log.warning("token refresh failed for connection %s: %s", connection.pk, err.kind)
            raise
        save_tokens(connection, tokens)
        return tokens.access_token
    finally:
        Connection.objects.filter(pk=connection.pk).update(refresh_lock_until=None)


def save_tokens(connection: Connection, tokens: oauth.TokenSet) -> None:
    """Persist a token set at once (the old refresh token must not be used again)."""
    connection.access_token = tokens.access_token
    connection.refresh_token = tokens.refresh_token
    connection.token_expires_at = tokens.expires_at
    connection.refreshed_at = timezone.now()
    connection.save(update_fields=["access_token", "refresh_token", "token_expires_at", "refreshed_at"])


@contextmanager
def lease(connection: Connection) -> Iterator[None]:
    """Hold the refresh lease while replacing or wiping tokens (Connect, Reconnect, Disconnect).

    A refresh in flight would otherwise save tokens of the old grant over the new ones, or
    resurrect tokens that Disconnect just wiped.
    """
    _acquire_lock(connection)
    try:
        yield
    finally:
        Connection.objects.filter(pk=connection.pk).update(refresh_lock_until=None)


def _acquire_lock(connection: Connection) -> None:
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while True:
        now = timezone.now()
        won = Connection.objects.filter(pk=connection.pk).filter(
            Q(refresh_lock_until__isnull=True) | Q(refresh_lock_until__lt=now)
        ).update(refresh_lock_until=now + LOCK_LEASE)
        if won:
            return
        if time.monotonic() > deadline:
            raise MicrosoftAdsError("Another worker is refreshing this connection's token", kind=Kind.TRANSIENT)
        time.sleep(0.1)
