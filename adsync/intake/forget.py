"""Forgetting a person (a data subject's erasure request), by email, phone, visitor id or order id.

What goes: their clicks and inbox hits (deleted), and every identifier of their conversions and
sync-log rows: click id, click time, visitor id, order id, hashed email and phone. What stays is an
anonymous line per conversion and row (event or goal, time, value, status), so counts and the
audit trail still add up. Rows that could still go to Microsoft (queued, pending_identity) are
cancelled: Microsoft must not receive them after the erasure. What Microsoft already received is
Microsoft's to keep (docs/tracking.md, Forgetting a person).

Email and phone are hashed on the way in (adsync/intake/identity.py) and never kept raw. The
person is found by the keys given, then by everything their rows tie together (the click behind
an order, the same visitor's other orders, the orders with the same email hash), until nothing new
turns up; the confirmation lists it all before anything changes. Every erasure is an Erasure row
saying who and when, never what.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import reduce
from operator import or_

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from adsync.intake.identity import hash_email, hash_phone
from adsync.models import Click, Conversion, Erasure, Hit, Push, Site
from adsync.push import transitions
from adsync.push.operations import TEST_MSCLKID

# A click id many test conversions share (admin → Send test conversion): never a person's.
SHARED_CLICK_IDS = frozenset({TEST_MSCLKID})


@dataclass
class Person:
    """The keys an erasure searches by; email and phone only as Microsoft's SHA-256 hashes."""

    hashed_emails: set[str] = field(default_factory=set)
    hashed_phones: set[str] = field(default_factory=set)
    visitor_ids: set[str] = field(default_factory=set)
    order_ids: set[str] = field(default_factory=set)
    conversion_ids: set[int] = field(default_factory=set)
    site: Site | None = None

    @property
    def keys(self) -> list[str]:
        """The kinds of key given (for the audit line: never their values)."""
        kinds = [("email", self.hashed_emails), ("phone", self.hashed_phones), ("visitor id", self.visitor_ids),
                 ("order id", self.order_ids), ("conversion", self.conversion_ids)]
        return [name for name, values in kinds if values]


def person(*, email: str = "", phone: str = "", visitor_id: str = "", order_id: str = "",
           site: Site | None = None) -> Person:
    """The keys from what an operator typed. Raises identity.IdentifierError for an email or phone that
    cannot be read. A phone without a country code is read in each site's country (or the given site's)."""
    found = Person(site=site)
    if email.strip():
        found.hashed_emails.add(hash_email(email))
    if phone.strip():
        countries = [site.default_country] if site else Site.objects.values_list("default_country", flat=True)
        found.hashed_phones |= {hash_phone(phone, country) for country in set(countries) or {"US"}}
    if visitor_id.strip():
        found.visitor_ids.add(visitor_id.strip())
    if order_id.strip():
        found.order_ids.add(order_id.strip())
    return found


@dataclass
class Footprint:
    """Everything of one person that an erasure touches, found before anything changes."""

    person: Person
    conversions: list[Conversion]
    clicks: list[Click]
    hits: list[Hit]
    pushes: int
    unsent: int

    @property
    def empty(self) -> bool:
        return not (self.conversions or self.clicks or self.hits)

    def counts(self) -> dict[str, int]:
        return {"clicks": len(self.clicks), "inbox hits": len(self.hits), "conversions": len(self.conversions),
                "sync-log rows": self.pushes, "cancelled before sending": self.unsent}

    def lines(self) -> list[str]:
        """What will go, for the confirmation page and the command."""
        lines = [f"Click {c.clicked_at:%Y-%m-%d %H:%M} UTC on {c.site}: deleted (msclkid {c.msclkid}, visitor "
                 f"{c.visitor_id})" for c in self.clicks]
        lines += [f"Inbox hit #{h.pk} ({h.kind}, received {h.received_at:%Y-%m-%d %H:%M} UTC"
                  f"{', failed' if h.error else ''}): deleted" for h in self.hits]
        lines += [f"Conversion {c.event_name} {c.order_id or '(no order id)'} of {c.occurred_at:%Y-%m-%d %H:%M} UTC on "
                  f"{c.site}: order id, click id, visitor id and hashes removed; event, time, value and status kept"
                  for c in self.conversions]
        if self.pushes:
            lines.append(f"{self.pushes} sync-log row(s): click id and hashes removed; {self.unsent} not sent yet "
                         f"cancelled (Microsoft never receives them)")
        return lines


def find(who: Person) -> Footprint:
    """The person's rows: those the keys name, then everything their visitor ids, click ids and hashes tie
    together, until nothing new turns up (the confirmation shows it all before anything changes)."""
    keys = _Keys(visitor_id=set(who.visitor_ids), msclkid=set(), hashed_email=set(who.hashed_emails),
                 hashed_phone=set(who.hashed_phones))
    conversions = {c.pk: c for c in _scoped(Conversion.objects, who).filter(_seed_conversions(who))}
    clicks: dict[int, Click] = {}
    for _ in range(MAX_ROUNDS):
        keys.learn([*conversions.values(), *clicks.values()])
        found_clicks = _scoped(Click.objects, who).filter(keys.match("visitor_id", "msclkid") or Q(pk__in=[]))
        found = _scoped(Conversion.objects, who).filter(keys.match() or Q(pk__in=[]))
        before = (len(conversions), len(clicks))
        clicks.update((c.pk, c) for c in found_clicks)
        conversions.update((c.pk, c) for c in found)
        if (len(conversions), len(clicks)) == before:
            break
    hit_ties = keys.match(prefix="payload__") or Q(pk__in=[])
    if who.order_ids:
        hit_ties |= Q(payload__order_id__in=sorted(who.order_ids))
    hits = list(_scoped(Hit.objects, who).filter(hit_ties).order_by("id"))
    rows = Push.objects.filter(conversion__in=list(conversions))
    return Footprint(who, sorted(conversions.values(), key=lambda c: (c.occurred_at, c.pk)),
                     sorted(clicks.values(), key=lambda c: c.clicked_at), hits, rows.count(),
                     rows.filter(status__in=(Push.QUEUED, Push.PENDING_IDENTITY)).count())


MAX_ROUNDS = 5  # a person's rows tie together in two or three; the cap bounds a pathological chain


@dataclass
class _Keys:
    """The identifiers known to be the person's, by column name."""

    visitor_id: set[str]
    msclkid: set[str]
    hashed_email: set[str]
    hashed_phone: set[str]

    def learn(self, rows) -> None:
        for row in rows:
            for name in ("visitor_id", "msclkid", "hashed_email", "hashed_phone"):
                value = getattr(row, name, "")
                if value and value not in SHARED_CLICK_IDS:
                    getattr(self, name).add(value)

    def match(self, *names: str, prefix: str = "") -> Q | None:
        names = names or ("visitor_id", "msclkid", "hashed_email", "hashed_phone")
        return _any_of(**{prefix + name: getattr(self, name) for name in names})


def erase(footprint: Footprint, *, actor: str, via: str) -> Erasure:
    """Delete and anonymise what `find` found, and write the audit line (who, when, how many; never what)."""
    now = timezone.now()
    ids = [c.pk for c in footprint.conversions]
    with transaction.atomic():
        rows = Push.objects.filter(conversion__in=ids)
        transitions.cancel_for_erasure(rows)
        rows.update(msclkid="", hashed_email="", hashed_phone="", click_time=None, dedupe_key=None, updated_at=now)
        Conversion.objects.filter(pk__in=ids).update(
            order_id=None, msclkid="", click_time=None, visitor_id="", hashed_email="", hashed_phone="", erased_at=now)
        Click.objects.filter(pk__in=[c.pk for c in footprint.clicks]).delete()
        Hit.objects.filter(pk__in=[h.pk for h in footprint.hits]).delete()
        return Erasure.objects.create(erased_at=now, actor=actor, via=via, keys=", ".join(footprint.person.keys),
                                      counts=footprint.counts())


def _seed_conversions(who: Person) -> Q:
    return _any_of(pk=who.conversion_ids, order_id=who.order_ids, visitor_id=who.visitor_ids,
                   hashed_email=who.hashed_emails, hashed_phone=who.hashed_phones) or Q(pk__in=[])


def _any_of(**values: set) -> Q | None:
    """`field IN values` for each field with values, OR-ed; None when no field has any."""
    parts = [Q(**{f"{name}__in": sorted(found)}) for name, found in values.items() if found]
    return reduce(or_, parts) if parts else None


def _scoped(manager, who: Person):
    return manager.filter(site=who.site) if who.site else manager.all()
