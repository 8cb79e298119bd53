"""The public endpoint's copy of each site, kept per process for ADSYNC_SITE_CACHE_SECONDS.

Every snippet hit needs its site (the origin check, the default currency and country); reading
it from the database was one of the two queries left per hit. An edit to a site (allowed
origins, currency, country) reaches every web process within the TTL; the process that saved it
sees it at once. Unknown keys are cached too, so a flood of made-up keys costs one query per key
per TTL, and the cache is emptied past MAX_ENTRIES so such a flood cannot grow it without bound.
"""

from __future__ import annotations

import time

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from adsync.conf import conf
from adsync.models import Site

# What the public endpoint needs of a site: checking the origin, validating the report, the signature rule.
PUBLIC_SITE_FIELDS = ("id", "key", "allowed_origins", "default_currency", "default_country", "signed_browser_conversions")
MAX_ENTRIES = 10_000

_sites: dict[str, tuple[float, Site | None]] = {}


def site_for_key(key: str) -> Site | None:
    ttl = conf.site_cache_seconds
    now = time.monotonic()
    cached = _sites.get(key)
    if cached and cached[0] > now:
        return cached[1]
    site = Site.objects.filter(key=key).only(*PUBLIC_SITE_FIELDS).first()
    if ttl > 0:
        if len(_sites) >= MAX_ENTRIES:
            _sites.clear()
        _sites[key] = (now + ttl, site)
    return site


def forget(key: str) -> None:
    _sites.pop(key, None)


@receiver([post_save, post_delete], sender=Site, dispatch_uid="tracking.site_cache.forget")
def _forget_changed_site(sender, instance: Site, **kwargs) -> None:
    forget(instance.key)
