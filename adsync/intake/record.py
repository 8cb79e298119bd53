"""Store what the snippet and the server API report: clicks, and conversions with their pushes.

A conversion and its sync-log rows (adsync/push/transitions.py `create_pushes`) are written in one transaction, so the
flush never sees a conversion without its pushes. (site, event, order id) identifies a
conversion: a repeat returns the stored one and changes nothing, including under a race
(the unique constraint decides, and the loser reads the winner's row). The visitor's consent
(adsync/intake/consent.py) is applied first: what it does not allow is never stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db import IntegrityError, transaction
from django.utils import timezone

from adsync.intake import consent
from adsync.intake.matching import attach_click
from adsync.intake.reports import ClickPayload, ConversionPayload
from adsync.models import Click, Conversion, Push, Site
from adsync.push import guards, transitions


class ConversionRefused(ValueError):
    """Conversions adsync would refuse before sending them (adsync/push/guards.py `time_refusal`), refused at
    ingest instead: `problems` holds (index in the request, field, problem)."""

    def __init__(self, problems: list[tuple[int, str, str]]):
        super().__init__("; ".join(f"{field}: {problem}" for _, field, problem in problems))
        self.problems = problems


@dataclass(frozen=True)
class Recorded:
    """A conversion as stored, whether by this call (`created`) or by an earlier one."""

    conversion: Conversion
    created: bool
    pushes: list[Push]


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
    """Store one conversion and its pushes, or return the stored one for a repeated order id.

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
            _explain_earlier_conversions(conversion)
    except IntegrityError:
        # The order is already stored, by an earlier call or a concurrent one.
        existing = _find_existing(site, payload) if payload.order_id is not None else None
        if existing is None:
            raise
        return _recorded(existing, created=False, read_pushes=read_pushes)
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
    return Conversion.objects.filter(site=site, event_name=payload.event, order_id=payload.order_id).first()


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
    )


def _explain_earlier_conversions(conversion: Conversion) -> None:
    """This conversion ties a person to a click: their later pending conversions can use it.

    Without a known click time, this conversion's own time bounds the click from above, so
    only conversions at or after it are claimed (the click must precede the conversion).
    """
    if conversion.msclkid:
        attach_click(conversion.site, conversion.msclkid, conversion.click_time or conversion.occurred_at,
                     visitor_id=conversion.visitor_id, hashed_email=conversion.hashed_email,
                     hashed_phone=conversion.hashed_phone)


def _recorded(conversion: Conversion, *, created: bool, read_pushes: bool = True) -> Recorded:
    # bulk_create(ignore_conflicts=True) returns rows without ids on some backends: read them back.
    pushes = list(conversion.pushes.order_by("id")) if read_pushes else []
    return Recorded(conversion=conversion, created=created, pushes=pushes)
