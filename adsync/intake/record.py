"""Store what the snippet and the server API report: clicks, and conversions with their pushes.

A conversion and its sync-log rows (adsync/push/transitions.py `create_pushes`) are written in one transaction, so the
flush never sees a conversion without its pushes. (site, event, order id) identifies a
conversion; without an order id, the snippet's idempotency key identifies the call that reported it.
The visitor's consent (adsync/intake/consent.py) is applied first: what it does not allow is never stored.

The rules every path that stores a report follows (the server API, the snippet's inbox drain;
docs/tracking.md#source-ranks lists them for any new path):

- `outranks`: an authenticated report (the server API, an admin test) outranks a browser report.
  A repeat from the same or a lower rank changes nothing (the unique constraint decides a race,
  and the loser reads the winner's row). A higher rank replaces the stored row's value, currency,
  time, identity and consent (`_take_server_report`); its pushes follow (transitions.take_server_report).
  A retracted or erased row is final: nothing replaces it.
- `value_hold_reason`: an unsigned browser conversion above the site's value ceiling is stored,
  and its pushes are held for staff (adsync:value_held) instead of going out.
- Late matching by email or phone only between authenticated reports (adsync/intake/matching.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db import IntegrityError, transaction
from django.utils import timezone

from adsync.intake import consent
from adsync.intake.matching import attach_click, late_match_identity
from adsync.intake.reports import ClickPayload, ConversionPayload
from adsync.models import Click, Conversion, Push, Site
from adsync.push import guards, transitions


class ConversionRefused(ValueError):
    """Conversions adsync would refuse before sending them (adsync/push/guards.py `time_refusal`), refused at
    ingest instead: `problems` holds (index in the request, field, problem)."""

    def __init__(self, problems: list[tuple[int, str, str]]):
        super().__init__("; ".join(f"{field}: {problem}" for _, field, problem in problems))
        self.problems = problems

# Who may say what a conversion was: an authenticated report outranks what any browser can send.
SOURCE_RANKS = {Conversion.SOURCE_BROWSER: 1, Conversion.SOURCE_SERVER: 2, Conversion.SOURCE_ADMIN: 2}
# The fields a higher-ranked report replaces; the row keeps its id, event, order id and creation time.
REPORTED_FIELDS = ["value", "currency", "occurred_at", "visitor_id", "msclkid", "click_time", "hashed_email",
                   "hashed_phone", "source", "consent"]


@dataclass(frozen=True)
class Recorded:
    """A conversion as stored, whether by this call (`created`) or by an earlier one.

    `replaced`: this call outranked a browser report of the same order and took its place.
    """

    conversion: Conversion
    created: bool
    pushes: list[Push]
    replaced: bool = False


def outranks(new_source: str, stored_source: str) -> bool:
    """True when a report from `new_source` replaces a stored one from `stored_source`."""
    return SOURCE_RANKS[new_source] > SOURCE_RANKS[stored_source]


def value_hold_reason(site: Site, payload: ConversionPayload, source: str) -> str | None:
    """Why this conversion's pushes wait for staff instead of going out, or None.

    Only an unsigned browser report is held: its value is whatever the page (or a forger, who
    needs nothing but the public site key) said.
    """
    ceiling = site.browser_value_ceiling
    if source != Conversion.SOURCE_BROWSER or payload.signed or ceiling is None or payload.value is None:
        return None
    if payload.value <= ceiling:
        return None
    return (f"The browser reported a value of {payload.value:f} {payload.currency}, above this site's ceiling for "
            f"browser conversions ({ceiling:f}): held for review. Release it to send it, or Drop it.")


def record_click(site: Site, payload: ClickPayload, now: datetime | None = None) -> tuple[Click | None, bool]:
    """(click, created). The first report of an msclkid wins; later ones change nothing. A click without
    ad storage consent is not kept at all: (None, False).

    get_or_create absorbs the insert race: the loser's IntegrityError becomes a read.
    """
    if not consent.click_allowed(site, payload):
        return None, False
    click, created = Click.objects.get_or_create(
        site=site, msclkid=payload.msclkid,
        defaults={"visitor_id": payload.visitor_id, "clicked_at": now or timezone.now(), "landing_url": payload.url},
    )
    if created:
        attach_click(site, click.msclkid, click.clicked_at, visitor_id=click.visitor_id)
    return click, created


def record_conversion(
    site: Site, payload: ConversionPayload, *, source: str, now: datetime | None = None, read_pushes: bool = True,
    strict: bool = False,
) -> Recorded:
    """Store one conversion and its pushes, or settle a repeated order by rank (`outranks`).

    Insert first, look up only on a conflict: a new order (the usual case) costs one query less
    than looking first, and a repeat or a race ends the same way, in the unique constraint.
    `read_pushes=False` (the inbox drain, which answers no one) leaves `Recorded.pushes` empty
    and saves the query that reads them back.
    """
    payload = consent.apply_consent(site, payload)
    now = now or timezone.now()
    conversion = _build(site, payload, source, now)
    refusal = guards.time_refusal(conversion.occurred_at, conversion.click_time, now) if strict else None
    if refusal is not None:  # `strict` (the server API): the click is known only now, from the payload's ids
        raise ConversionRefused([(0, "time", refusal.problem)])
    try:
        with transaction.atomic():
            conversion.save()
            transitions.create_pushes(conversion)
            if reason := value_hold_reason(site, payload, source):
                transitions.hold_for_review(conversion, reason)
            _explain_earlier_conversions(conversion)
    except IntegrityError:
        # The order (or the snippet's call) is already stored, by an earlier call or a concurrent one.
        with transaction.atomic():
            existing = _find_existing(site, payload)
            if existing is None:
                raise
            if not outranks(source, existing.source) or existing.retracted_at or existing.erased_at:
                return _recorded(existing, created=False, read_pushes=read_pushes)
            _take_server_report(existing, conversion)
        return _recorded(existing, created=True, read_pushes=read_pushes, replaced=True)
    return _recorded(conversion, created=True, read_pushes=read_pushes)


def record_conversions(
    site: Site, payloads: list[ConversionPayload], *, source: str, now: datetime | None = None, strict: bool = False
) -> list[Recorded]:
    """A batch, all-or-nothing: an unexpected failure on one item stores none of them. `strict`: a
    conversion adsync would refuse before sending raises ConversionRefused naming every such item."""
    now = now or timezone.now()
    with transaction.atomic():
        recorded, problems = [], []
        for index, payload in enumerate(payloads):
            try:
                recorded.append(record_conversion(site, payload, source=source, now=now, strict=strict))
            except ConversionRefused as refused:
                problems += [(index, field, problem) for _, field, problem in refused.problems]
        if problems:
            raise ConversionRefused(problems)  # rolls the batch back
        return recorded


def _find_existing(site: Site, payload: ConversionPayload) -> Conversion | None:
    """The stored conversion this report repeats, locked until the caller's transaction ends (a rank decision)."""
    rows = Conversion.objects.select_for_update().filter(site=site)
    if payload.order_id is not None:
        return rows.filter(event_name=payload.event, order_id=payload.order_id).first()
    if payload.idempotency_key:
        return rows.filter(idempotency_key=payload.idempotency_key).first()
    return None


def _take_server_report(existing: Conversion, report: Conversion) -> None:
    """The stored browser row becomes the authenticated report; its pushes follow, and its click explains others."""
    for field in REPORTED_FIELDS:
        setattr(existing, field, getattr(report, field))
    existing.save(update_fields=REPORTED_FIELDS)
    transitions.take_server_report(existing)
    _explain_earlier_conversions(existing)


def _build(site: Site, payload: ConversionPayload, source: str, now: datetime) -> Conversion:
    """The unsaved conversion, attributed to a click when one is known."""
    moment = payload.occurred_at or now
    msclkid, click_time = payload.msclkid, None
    if msclkid:
        click = Click.objects.filter(site=site, msclkid=msclkid).first()
    else:
        # Looked up with the untruncated moment, so a click earlier in the same second counts.
        click = Click.latest_for_visitor(site, payload.visitor_id, before=moment)
    if click:
        msclkid, click_time = click.msclkid, click.clicked_at
    return Conversion(
        site=site,
        event_name=payload.event,
        order_id=payload.order_id,
        value=payload.value,
        currency=payload.currency,
        occurred_at=moment.replace(microsecond=0),
        visitor_id=payload.visitor_id,
        msclkid=msclkid,
        click_time=click_time,
        hashed_email=payload.hashed_email,
        hashed_phone=payload.hashed_phone,
        source=source,
        consent=consent.conversion_consent(site, payload),
        # Only a report without an order id needs the call's key: (site, event, order id) identifies the rest.
        idempotency_key=payload.idempotency_key if payload.order_id is None else "",
    )


def _explain_earlier_conversions(conversion: Conversion) -> None:
    """This conversion ties a person to a click: their later pending conversions can use it.

    Without a known click time, this conversion's own time bounds the click from above, so
    only conversions at or after it are claimed (the click must precede the conversion). Who
    counts as the same person depends on the source (matching.late_match_identity).
    """
    if conversion.msclkid:
        attach_click(conversion.site, conversion.msclkid, conversion.click_time or conversion.occurred_at,
                     **late_match_identity(conversion))


def _recorded(conversion: Conversion, *, created: bool, read_pushes: bool = True, replaced: bool = False) -> Recorded:
    # bulk_create(ignore_conflicts=True) returns rows without ids on some backends: read them back.
    pushes = list(Push.objects.of_conversion(conversion).order_by("id")) if read_pushes else []
    return Recorded(conversion=conversion, created=created, pushes=pushes, replaced=replaced)
