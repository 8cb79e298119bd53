"""Consent: what a visitor's ad storage and ad user data signals allow adsync to keep and send.

In the style of Microsoft's UET consent mode (docs/microsoft-api.md#uet-consent-mode): `ad_storage`
decides whether adsync may keep the visitor's click id and send the conversion to Microsoft at all;
`ad_user_data` whether their hashed email and phone may go with it (when not given, it follows
`ad_storage`). With no signal, a site that requires consent (Site.consent_required) counts as
denied ("missing"); any other site as not asked, so nothing changes for it. An explicit "denied"
is always obeyed. A conversion without consent is still stored, as a count: its identifiers are
dropped here and its sync-log rows are skipped_no_consent (never sent, never a failure).

Both ingest paths call these functions before storing (adsync/intake/record.py, and the inbox drain
through it); a drain that stores hits another way must call them too (docs/tracking.md, Consent).
"""

from __future__ import annotations

from dataclasses import replace

from adsync.intake.reports import ClickPayload, ConversionPayload
from adsync.models import Conversion, Site

GRANTED, DENIED = "granted", "denied"
SIGNALS = (GRANTED, DENIED)


def decide(signal: str, site: Site) -> str:
    """A consent signal as Conversion.consent records it: granted, denied, missing or not asked."""
    if signal == GRANTED:
        return Conversion.CONSENT_GRANTED
    if signal == DENIED:
        return Conversion.CONSENT_DENIED
    return Conversion.CONSENT_MISSING if site.consent_required else Conversion.CONSENT_NOT_ASKED


def allows(decision: str) -> bool:
    return decision in (Conversion.CONSENT_GRANTED, Conversion.CONSENT_NOT_ASKED)


def click_allowed(site: Site, click: ClickPayload) -> bool:
    """A landing's click id is kept only with ad storage consent (or on a site that does not require it)."""
    return allows(decide(click.ad_storage, site))


def conversion_consent(site: Site, conversion: ConversionPayload) -> str:
    """The Conversion.consent value of a reported conversion (its ad storage decision)."""
    return decide(conversion.ad_storage, site)


def apply_consent(site: Site, conversion: ConversionPayload) -> ConversionPayload:
    """The conversion with what its consent does not allow removed before anything is stored.

    Without ad storage consent: no click id, visitor id, email or phone hash (it is kept as a count
    only and never sent). Without ad user data consent: no email or phone hash.
    """
    if not allows(conversion_consent(site, conversion)):
        return replace(conversion, msclkid="", visitor_id="", hashed_email="", hashed_phone="")
    if not allows(decide(conversion.ad_user_data or conversion.ad_storage, site)):
        return replace(conversion, hashed_email="", hashed_phone="")
    return conversion
