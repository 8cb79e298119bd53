"""Bounds on what browsers may send: rate limits per client address and per site, and an inbox cap per site.

The site key is public, so anyone can post what the snippet posts (docs/security.md). A flood
from one address, or against one site from many, is answered 429 with Retry-After (the snippet
retries then); a site whose inbox already holds ADSYNC_INBOX_CAP waiting hits is answered 503
until the worker has stored them.

The counts live in the shared cache (CACHES: Redis when REDIS_URL is set, else a database table),
so every web process sees the same numbers. Asking the cache on every hit would cost the hot path
a round trip (several queries with the database cache), so each process counts locally and adds
its count to the shared one in batches: a key's first tenth of its limit, then every second while
it stays busy. An ordinary visitor (a few hits a minute) never reaches the cache at all; a flood
is stopped after at most one batch per process beyond the limit.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass

from django.core.cache import cache
from django.db import OperationalError
from django.db.models import Max, Min
from django.http import HttpRequest

from adsync.conf import conf
from adsync.models import Hit, Site

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60  # fixed one-minute windows
SYNC_SECONDS = 1.0  # a busy key's count reaches the shared cache at least this often
MAX_KEYS = 50_000  # per process; past it the local counts start afresh (a flood of addresses cannot grow them)
CAP_CHECK_SECONDS = 5.0  # how long a process trusts its count of a site's waiting hits


@dataclass
class _Count:
    window: int
    shared: int = 0  # the shared count after this process's last batch (every process's hits)
    pending: int = 0  # this process's hits since
    synced_at: float | None = None  # monotonic; None: never added to the shared count
    syncing: bool = False


class SharedRateLimit:
    """Hits per key per minute, counted across every web process through the shared cache."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._counts: dict[str, _Count] = {}
        self._lock = threading.Lock()

    def hit(self, key: str, limit: int) -> int | None:
        """Count one hit; None when it is within `limit`, else the seconds until the window ends."""
        now = time.time()
        window = int(now // WINDOW_SECONDS)
        with self._lock:
            count = self._counts.get(key)
            if count is None or count.window != window:
                if len(self._counts) >= MAX_KEYS:
                    self._counts.clear()
                count = self._counts[key] = _Count(window)
            count.pending += 1
            amount = self._batch(count, limit)
        if amount:
            self._add(key, count, amount)
        if count.shared + count.pending <= limit:
            return None
        return max(1, math.ceil((window + 1) * WINDOW_SECONDS - now))

    @staticmethod
    def _batch(count: _Count, limit: int) -> int:
        """How many pending hits to add to the shared count now (0: not yet); marks the count as syncing."""
        if count.syncing:
            return 0
        busy = count.synced_at is not None and time.monotonic() - count.synced_at >= SYNC_SECONDS
        if count.pending < max(1, limit // 10) and not busy:
            return 0
        amount, count.pending, count.syncing = count.pending, 0, True
        return amount

    def _add(self, key: str, count: _Count, amount: int) -> None:
        shared_key = f"adsync:rate:{self.name}:{key}:{count.window}"
        try:
            cache.add(shared_key, 0, timeout=2 * WINDOW_SECONDS)
            total = cache.incr(shared_key, amount)
        except Exception as error:  # noqa: BLE001 - a cache outage must not refuse every hit: count locally
            log.warning("rate limit %s: the shared cache did not answer (%s); counting in this process only",
                        self.name, type(error).__name__)
            total = count.shared + amount
        with self._lock:
            count.shared, count.synced_at, count.syncing = total, time.monotonic(), False

    def forget(self) -> None:
        with self._lock:
            self._counts.clear()


per_client = SharedRateLimit("client")
per_site = SharedRateLimit("site")


def client_address(request: HttpRequest) -> str:
    """The caller's address: REMOTE_ADDR, or with ADSYNC_TRUSTED_PROXY_COUNT proxies in front, the
    X-Forwarded-For entry the nearest trusted proxy added (earlier entries are the client's to forge)."""
    proxies = conf.trusted_proxy_count
    forwarded = [part.strip() for part in request.headers.get("X-Forwarded-For", "").split(",") if part.strip()]
    if proxies and len(forwarded) >= proxies:
        return forwarded[-proxies][:64]
    return request.META.get("REMOTE_ADDR", "")[:64]


def client_over_limit(request: HttpRequest) -> int | None:
    """Seconds to wait when this address sent more than ADSYNC_CLIENT_HITS_PER_MINUTE this minute, else None."""
    return per_client.hit(client_address(request), conf.client_hits_per_minute)


def site_over_limit(site: Site) -> int | None:
    """Seconds to wait when the site took more than ADSYNC_SITE_HITS_PER_MINUTE this minute, else None."""
    return per_site.hit(str(site.pk), conf.site_hits_per_minute)


# --- The inbox cap ------------------------------------------------------------------------------------

@dataclass
class _Waiting:
    checked_at: float
    count: int


_inbox: dict[int, _Waiting] = {}


def inbox_full(site: Site) -> bool:
    """True when the site's inbox holds ADSYNC_INBOX_CAP hits the worker has not stored yet.

    Counted at most every few seconds per process (_waiting_hits), plus the hits this process accepted since.
    """
    cap = conf.inbox_cap
    now = time.monotonic()
    waiting = _inbox.get(site.pk)
    if waiting is None or now - waiting.checked_at >= CAP_CHECK_SECONDS:
        if len(_inbox) >= MAX_KEYS:
            _inbox.clear()
        # One count at a time per process: the requests arriving meanwhile keep the last count. Without
        # this, every request of a busy process counted at once each time the count expired, and took
        # the pool's connections (a p99 of 240 ms instead of 26 in bench/ingest_bench.py).
        previous = waiting.count if waiting is not None else 0
        waiting = _inbox[site.pk] = _Waiting(now, previous)
        try:
            waiting.count = _waiting_hits(site, cap)
        except OperationalError:  # a busy database: the write that follows decides (stored, or a 503)
            pass
    return waiting.count >= cap


def _waiting_hits(site: Site, cap: int) -> int:
    """The site's waiting hits, or a bound on them far below the cap. Every waiting hit of every site has an
    id between the inbox's lowest and highest (two lookups in the primary key): while that span is at most
    half the cap, no site can be full and nothing is counted. Else the site's hits are counted, up to the
    cap: a scan of the inbox (it has no index by site, which every hit would pay for)."""
    bounds = Hit.objects.aggregate(low=Min("pk"), high=Max("pk"))
    if bounds["low"] is None:
        return 0
    span = bounds["high"] - bounds["low"] + 1
    if span <= cap // 2:
        return span
    return Hit.objects.filter(site_id=site.pk).order_by()[:cap].count()


def accepted(site: Site) -> None:
    """One more hit in the site's inbox (until the next count)."""
    waiting = _inbox.get(site.pk)
    if waiting is not None:
        waiting.count += 1


def forget() -> None:
    """Drop this process's counts (tests, between cases)."""
    per_client.forget()
    per_site.forget()
    _inbox.clear()
