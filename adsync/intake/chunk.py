"""Storing a chunk of the inbox's hits at once: a constant number of queries however many hits.

The drain (adsync/intake/inbox.py) used to store each hit with the server API's code
(adsync/intake/record.py), about ten queries per hit. A chunk now gives the same rows as
storing its hits one after the other in order, in a dozen queries for the whole chunk:

1. read, in one query each, what those calls would have read: the clicks of the chunk's click
   ids, the clicks of its visitors (for conversions without one), the orders already stored, the
   goal mappings, the conversions still waiting for a click (late matching);
2. replay the calls in hit order in memory: a click stored earlier in the chunk attributes a
   later conversion, a repeated order changes nothing, a conversion stored earlier can be claimed
   by a later click (adsync/intake/matching.py's window), each dedupe key goes to the first push
   that asks for it (adsync/push/transitions.py `ChunkPushes`);
3. write: clicks, conversions and pushes in one INSERT each, late matches in one UPDATE each.

A hit whose report cannot be read fails alone (its error is kept). If the database refuses the
chunk's writes (another writer stored the same click or order a moment before, or a value it
will not take), the caller rolls them back and stores the chunk one hit at a time, as before.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Case, Q, Value, When

from adsync.conf import conf
from adsync.intake import consent, record
from adsync.intake.matching import WINDOW
from adsync.intake.reports import ClickPayload, ConversionPayload
from adsync.models import Click, Conversion, GoalMapping, Hit, Site, bulk
from adsync.push import transitions


@dataclass(slots=True)
class Received:
    """A waiting hit's columns, as the drain reads them: a chunk is hundreds, and model instances cost more."""

    COLUMNS = ("id", "site_id", "kind", "payload", "received_at")

    pk: int
    site_id: int
    kind: str
    payload: dict
    received_at: datetime


@dataclass
class Report:
    """A hit, read: what its site reported and when it was received."""

    hit: Received | Hit
    payload: ClickPayload | ConversionPayload

    @property
    def site_id(self) -> int:
        return self.hit.site_id

    @property
    def moment(self) -> datetime:
        """The conversion's time (the hit's receipt unless the report gave one), untruncated."""
        if isinstance(self.payload, ConversionPayload) and self.payload.occurred_at is not None:
            return self.payload.occurred_at
        return self.hit.received_at


@dataclass
class _Waiting:
    """A conversion without a click id that a click may still explain (matching.attach_click's candidates)."""

    ref: int | Conversion  # a stored conversion's id, or a conversion of this chunk
    site_id: int
    visitor_id: str
    hashed_email: str
    hashed_phone: str
    occurred_at: datetime
    claimed: bool = False


def store_chunk(reports: list[Report]) -> int:
    """Store these reports as if one after the other; returns how many pushes were created."""
    return _Chunk(reports).store()


class _Chunk:
    def __init__(self, reports: list[Report]):
        self.reports = reports
        self.clicks = [r for r in reports if isinstance(r.payload, ClickPayload)]
        self.conversions = [r for r in reports if isinstance(r.payload, ConversionPayload)]
        self.new_clicks: list[Click] = []
        self.new_conversions: list[Conversion] = []
        self.claimed: dict[int, tuple[str, datetime]] = {}  # stored conversion id → (msclkid, click time)

    # --- 1. read ---------------------------------------------------------------------------------

    def read(self) -> None:
        self._apply_consent()
        by_id = {(r.site_id, r.payload.msclkid) for r in self.reports if r.payload.msclkid}
        self.known = {(c.site_id, c.msclkid): c for c in _rows(Click.objects.only(
            "id", "site_id", "msclkid", "visitor_id", "clicked_at"), "msclkid", by_id)}
        # Conversions without a click id take their visitor's latest click (Click.latest_for_visitor).
        visitors = {(r.site_id, r.payload.visitor_id) for r in self.conversions
                    if not r.payload.msclkid and r.payload.visitor_id}
        self.by_visitor: dict[tuple, list[Click]] = defaultdict(list)
        if visitors:
            moments = [r.moment for r in self.conversions]
            window = Q(clicked_at__gte=min(moments) - timedelta(days=conf.retention_days), clicked_at__lte=max(moments))
            for click in _rows(Click.objects.filter(window).only("id", "site_id", "msclkid", "visitor_id", "clicked_at")
                               .order_by("id"), "visitor_id", visitors):
                self.by_visitor[(click.site_id, click.visitor_id)].append(click)
        orders = {(r.site_id, r.payload.order_id) for r in self.conversions if r.payload.order_id is not None}
        self.orders = set(_rows(Conversion.objects.values_list("site_id", "event_name", "order_id"), "order_id", orders))
        # Without an order id, the snippet's idempotency key names the call: a retry of it is stored once.
        calls = {(r.site_id, r.payload.idempotency_key) for r in self.conversions
                 if r.payload.order_id is None and r.payload.idempotency_key}
        self.calls = set(_rows(Conversion.objects.values_list("site_id", "idempotency_key"), "idempotency_key", calls))
        events = {(r.site_id, r.payload.event) for r in self.conversions}
        self.mappings: dict[tuple, list[GoalMapping]] = defaultdict(list)
        if events:
            for mapping in GoalMapping.objects.filter(
                    connection__site_id__in={site for site, _ in events}, event_name__in={e for _, e in events}
            ).select_related("connection").only("goal_name", "event_name", "connection", "connection__site_id",
                                                "connection__enhanced_conversions", "connection__goals_refreshed_at"):
                self.mappings[(mapping.connection.site_id, mapping.event_name)].append(mapping)
        self.pushes = transitions.ChunkPushes(transitions.goal_flags([m for ms in self.mappings.values() for m in ms]))
        self.waiting = self._read_waiting()

    def _apply_consent(self) -> None:
        """What each visitor's consent allows, as record.py applies it (adsync/intake/consent.py): a click
        without ad storage consent is not kept; a conversion loses the identifiers it does not allow."""
        self.sites = Site.objects.only("id", "consent_required", "browser_value_ceiling").in_bulk(
            {r.site_id for r in self.reports})
        kept = []
        for report in self.reports:
            site = self.sites[report.site_id]
            if isinstance(report.payload, ClickPayload):
                if consent.click_allowed(site, report.payload):
                    kept.append(report)
            else:
                report.payload = consent.apply_consent(site, report.payload)
                kept.append(report)
        self.reports = kept
        self.clicks = [r for r in kept if isinstance(r.payload, ClickPayload)]
        self.conversions = [r for r in kept if isinstance(r.payload, ConversionPayload)]

    def _read_waiting(self) -> list[_Waiting]:
        """Stored conversions still waiting for a click, of every visitor a click of this chunk may explain.

        Browser reports tie a click to conversions by their own visitor id only (matching.late_match_identity):
        email and phone are no proof of who sent a browser report.
        """
        people: dict[str, set] = {"visitor_id": set()}
        for r in self.reports:
            for field in people:
                if value := getattr(r.payload, field, ""):
                    people[field].add((r.site_id, value))
        person = Q()
        for field, keys in people.items():
            person |= _keyed(field, keys)
        if not person:
            return []
        rows = Conversion.objects.filter(person, msclkid="").order_by("id").values_list(
            "id", "site_id", "visitor_id", "hashed_email", "hashed_phone", "occurred_at")
        return [_Waiting(*row) for row in rows]

    # --- 2. replay, in hit order -----------------------------------------------------------------

    def replay(self) -> None:
        for report in self.reports:
            if isinstance(report.payload, ClickPayload):
                self._click(report)
            else:
                self._conversion(report)

    def _click(self, report: Report) -> None:
        """record.record_click: the first report of an msclkid wins, and explains its visitor's waiting conversions."""
        payload = report.payload
        if (report.site_id, payload.msclkid) in self.known:
            return
        click = bulk.new(Click, site_id=report.site_id, msclkid=payload.msclkid, visitor_id=payload.visitor_id,
                         clicked_at=report.hit.received_at, landing_url=payload.url)
        self.known[(report.site_id, click.msclkid)] = click
        self.by_visitor[(report.site_id, click.visitor_id)].append(click)
        self.new_clicks.append(click)
        self._claim(report.site_id, click.msclkid, click.clicked_at, visitor_id=click.visitor_id)

    def _conversion(self, report: Report) -> None:
        """record.record_conversion for a browser report: a repeated order (or call) changes nothing, whoever
        stored it first (a browser report never outranks a stored one: record.outranks)."""
        payload, site_id = report.payload, report.site_id
        key = (site_id, payload.event, payload.order_id)
        call = (site_id, payload.idempotency_key) if payload.order_id is None and payload.idempotency_key else None
        if (payload.order_id is not None and key in self.orders) or (call is not None and call in self.calls):
            return
        if payload.order_id is not None:
            self.orders.add(key)
        if call is not None:
            self.calls.add(call)
        moment = report.moment
        msclkid, click_time = payload.msclkid, None
        click = self.known.get((site_id, msclkid)) if msclkid else self._latest_click(site_id, payload.visitor_id, moment)
        if click:
            msclkid, click_time = click.msclkid, click.clicked_at
        conversion = bulk.new(
            Conversion, site_id=site_id, event_name=payload.event, order_id=payload.order_id, value=payload.value,
            currency=payload.currency, occurred_at=moment.replace(microsecond=0), visitor_id=payload.visitor_id,
            msclkid=msclkid, click_time=click_time, hashed_email=payload.hashed_email,
            hashed_phone=payload.hashed_phone, source=Conversion.SOURCE_BROWSER,
            consent=consent.conversion_consent(self.sites[site_id], payload),
            idempotency_key=call[1] if call else "")
        self.new_conversions.append(conversion)
        pushes = self.pushes.create(conversion, self.mappings.get((site_id, payload.event), []))
        if reason := record.value_hold_reason(self.sites[site_id], payload, Conversion.SOURCE_BROWSER):
            self.pushes.hold(pushes, reason)
        if conversion.msclkid:  # record._explain_earlier_conversions, by the visitor id alone
            self._claim(site_id, conversion.msclkid, conversion.click_time or conversion.occurred_at,
                        visitor_id=conversion.visitor_id)
        else:
            self.waiting.append(_Waiting(conversion, site_id, conversion.visitor_id, conversion.hashed_email,
                                         conversion.hashed_phone, conversion.occurred_at))

    def _latest_click(self, site_id: int, visitor_id: str, before: datetime) -> Click | None:
        """Click.latest_for_visitor, over the clicks read and those of this chunk so far."""
        if not visitor_id:
            return None
        start = before - timedelta(days=conf.retention_days)
        clicks = [c for c in self.by_visitor.get((site_id, visitor_id), []) if start <= c.clicked_at <= before]
        return max(clicks, key=lambda c: c.clicked_at, default=None)

    def _claim(self, site_id: int, msclkid: str, click_time: datetime, *, visitor_id: str = "",
               hashed_email: str = "", hashed_phone: str = "") -> None:
        """matching.attach_click over the waiting conversions: those of this person in the click's window."""
        person = {k: v for k, v in (("visitor_id", visitor_id), ("hashed_email", hashed_email),
                                    ("hashed_phone", hashed_phone)) if v}
        if not msclkid or not person:
            return
        low, high = click_time.replace(microsecond=0), click_time + WINDOW
        found = [w for w in self.waiting if not w.claimed and w.site_id == site_id and low <= w.occurred_at <= high
                 and any(getattr(w, field) == value for field, value in person.items())]
        for waiting in found:
            waiting.claimed = True
            if isinstance(waiting.ref, int):
                self.claimed[waiting.ref] = (msclkid, click_time)
            else:
                waiting.ref.msclkid, waiting.ref.click_time = msclkid, click_time
        if found:
            self.pushes.identify([w.ref for w in found], msclkid, click_time)

    # --- 3. write ----------------------------------------------------------------------------------

    def store(self) -> int:
        self.read()
        self.replay()
        bulk.insert(Click, self.new_clicks)
        bulk.insert(Conversion, self.new_conversions, with_ids=True)  # the pushes refer to them
        if self.claimed:
            msclkids = [When(pk=pk, then=Value(m)) for pk, (m, _) in self.claimed.items()]
            times = [When(pk=pk, then=Value(t)) for pk, (_, t) in self.claimed.items()]
            Conversion.objects.filter(pk__any=list(self.claimed), msclkid="").update(
                msclkid=Case(*msclkids), click_time=Case(*times))
        return self.pushes.write()


def _keyed(field: str, keys: set[tuple]) -> Q:
    """(site, value) pairs as one condition: per site, `site_id = s AND field IN (…)`, OR-ed."""
    by_site: dict[int, set] = defaultdict(set)
    for site_id, value in keys:
        by_site[site_id].add(value)
    condition = Q()
    for site_id, values in by_site.items():
        condition |= Q(site_id=site_id, **{f"{field}__any": sorted(values)})
    return condition


def _rows(queryset, field: str, keys: set[tuple]):
    """The rows of `queryset` matching (site, value) pairs on `field`; none when there are no pairs."""
    return queryset.filter(_keyed(field, keys)) if keys else queryset.none()
