"""The one owner of a push's state: every write of status, attempts, next attempt and error fields.

A push (a sync-log row) moves through these states:

    created ──► queued ──► sent
       │          │  ▲
       │          │  └── retry (transient failure, backoff) / hold (not yet sendable) / release
       │          └────► error (Microsoft refused it, adsync's pre-send check, or too many attempts)
       ├──► pending_identity ──► queued (a click learned later) / error (90-day window closed)
       ├──► skipped_no_consent (final: the visitor gave no ad storage consent)
       └──► error adsync:value_held (a browser value above the site's ceiling) ──► queued / pending_identity
                  (Release) or error adsync:value_dropped (Drop)
                  error ──► queued (Replay, or a fixed Goal Name)
    queued (unclaimed), pending_identity, error ──► cancelled (final: retracted before sending)
    queued, pending_identity ──► cancelled (final: the person's data was erased)

An adjustment of a sent conversion is a row of its own (kind restate or retract), created queued,
and follows the same edges; it is cancelled when the conversion it adjusts never reached Microsoft.

A browser report's push that was not sent yet takes a server report of the same order in place
(any state but sent, and not claimed by a flush); beside one that was sent, the server report gets
a push of its own (`take_server_report`, docs/tracking.md#source-ranks).

Each edge is one function here, written with filter(...).update(...) under the condition it
checked, so a row's state only moves as this module allows and a constant number of queries
serves a whole batch. Nothing else in adsync writes these columns.
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db.models import F, Q, QuerySet
from django.utils import timezone

from adsync.conf import conf
from adsync.microsoft.errors import GOAL_NOT_FOUND_CODE
from adsync.models import ADSYNC_ERROR_PREFIX, AccountGoal, Adjustment, Connection, Conversion, GoalMapping, Push, bulk

log = logging.getLogger(__name__)

MICROSOFT_WINDOW = timedelta(days=90)  # conversions older than this are refused (docs/microsoft-api.md#time-rules)
BACKOFF_BASE_SECONDS = 60
BACKOFF_CAP_SECONDS = 6 * 3600
# 5614 (clock skew) and 5615 (goal younger than 2 hours): Microsoft says when to try again.
WAIT_DELAYS = {5614: timedelta(minutes=5), 5615: timedelta(minutes=30)}
IDENTITY_EXPIRED_REASON = (
    "No msclkid arrived before Microsoft's 90-day window closed: this conversion can no longer be "
    "attributed. Check auto-tagging and that the snippet is on every landing page.")
NO_CONSENT_REASONS = {
    Conversion.CONSENT_DENIED: "The visitor denied ad storage consent: adsync keeps this conversion but never sends it.",
    Conversion.CONSENT_MISSING: "No consent signal came with this conversion and the site requires consent: adsync "
                                "keeps it but never sends it. Check that the consent banner calls adsync.consent().",
}
_RESET_ERROR = {"error_code": None, "error_symbol": "", "error_message": ""}
_UNCLAIM = {"claim_token": None, "claimed_until": None}


# --- Created -------------------------------------------------------------------------------------

def initial_status(conversion: Conversion, connection: Connection, goal_enhanced: bool | None = None) -> str:
    """queued when Microsoft can match the conversion: a click id, or hashes with enhanced conversions on,
    both on the connection (staff's opt-in) and, when the goal list is known, for the goal itself in
    Microsoft Ads (`goal_enhanced`; None: the goal list was never fetched, the connection's switch decides);
    skipped_no_consent, whatever it carries, when the visitor gave no ad storage consent."""
    if conversion.without_consent:
        return Push.SKIPPED_NO_CONSENT
    if conversion.msclkid:
        return Push.QUEUED
    if connection.enhanced_conversions and goal_enhanced is not False and conversion.has_hashed_pii:
        return Push.QUEUED
    return Push.PENDING_IDENTITY


def _goal_enhanced(conversion: Conversion, mappings: list[GoalMapping],
                   flags: dict[tuple[int, str], bool] | None = None) -> dict[int, bool | None]:
    """mapping id → its goal's enhanced-conversions flag from the cached goal list (None when not fetched).
    One query (none with `flags`, goal_flags read beforehand), and only for conversions matched by hashes alone."""
    if conversion.msclkid or not conversion.has_hashed_pii:
        return {}
    known = [m for m in mappings if m.connection.enhanced_conversions and m.connection.goals_refreshed_at]
    if flags is None:
        flags = goal_flags(known)
    return {m.pk: flags.get((m.connection_id, m.goal_name), False) if m in known else None for m in mappings}


def goal_flags(mappings: list[GoalMapping]) -> dict[tuple[int, str], bool]:
    """(connection id, Goal Name) → the goal's enhanced-conversions flag, for mappings whose connection sends
    hashes and knows its goal list: one query for any number of mappings."""
    known = [m for m in mappings if m.connection.enhanced_conversions and m.connection.goals_refreshed_at]
    if not known:
        return {}
    return {(pk, name): enhanced for pk, name, enhanced in AccountGoal.objects.filter(
        connection_id__in={m.connection_id for m in known}, name__in={m.goal_name for m in known},
        missing_since__isnull=True).values_list("connection_id", "name", "enhanced_conversions")}


def create_pushes(conversion: Conversion, mappings: list[GoalMapping] | None = None) -> list[Push]:
    """One push per connection of the conversion's site that maps its event (or per given mapping).

    Connections that are not active still get queued rows: they wait, and go out on the first
    flush after Reconnect. A push whose dedupe key is taken already (the same goal, click and
    second) is not created: Microsoft would ignore it as a duplicate.
    """
    if mappings is None:
        # Only what a push needs: this runs for every stored conversion, and loading the whole
        # connection would decrypt its OAuth tokens for nothing.
        mappings = GoalMapping.objects.filter(
            connection__site_id=conversion.site_id, event_name=conversion.event_name
        ).select_related("connection").only("goal_name", "connection", "connection__enhanced_conversions",
                                            "connection__goals_refreshed_at")
    mappings = list(mappings)
    return Push.objects.bulk_create(new_pushes(conversion, mappings, timezone.now(), _goal_enhanced(conversion, mappings)),
                                    ignore_conflicts=True)


def new_pushes(conversion: Conversion, mappings, now: datetime, enhanced: dict) -> list[Push]:
    """The unsaved pushes of a new conversion, one per mapping, in their initial state with their dedupe keys
    (`enhanced`: _goal_enhanced's flags)."""
    pushes = [
        bulk.new(
            Push, conversion_id=conversion.pk, connection_id=mapping.connection_id, goal_name=mapping.goal_name,
            msclkid=conversion.msclkid, hashed_email=conversion.hashed_email, hashed_phone=conversion.hashed_phone,
            value=conversion.value, currency=conversion.currency, conversion_time=conversion.occurred_at,
            click_time=conversion.click_time, source=conversion.source,
            status=initial_status(conversion, mapping.connection, enhanced.get(mapping.pk)),
            next_attempt_at=now, created_at=now, updated_at=now,
        )
        for mapping in mappings
    ]
    for push in pushes:
        push.dedupe_key = push.compute_dedupe_key()
        if push.status == Push.SKIPPED_NO_CONSENT:
            push.error_symbol = ADSYNC_ERROR_PREFIX + "no_consent"
            push.error_message = NO_CONSENT_REASONS[conversion.consent]
    return pushes


class ChunkPushes:
    """The pushes a chunk of reports creates and identifies, decided in report order, written at the end.

    The inbox drain (adsync/intake/chunk.py) stores hundreds of reports at once. Replaying, in
    order, what `create_pushes` and `identify` would have done for each report one after the other
    gives the same rows (a dedupe key goes to the first push that asks for it, in the chunk or
    before it), and writing them all at once costs a constant number of queries however long the
    chunk: read the pending pushes of stored conversions the chunk explains, read which keys are
    taken, insert the new pushes, update the identified ones.
    """

    def __init__(self, flags: dict[tuple[int, str], bool]):
        self.now = timezone.now()
        self.flags = flags  # goal_flags() of every mapping the chunk may use
        # ("create", [Push], Conversion) / ("identify", [conversion id or Conversion], msclkid, time)
        self.events: list[tuple] = []

    def create(self, conversion: Conversion, mappings) -> list[Push]:
        """As create_pushes(conversion, mappings): the unsaved pushes, kept for write()."""
        pushes = new_pushes(conversion, mappings, self.now, _goal_enhanced(conversion, mappings, self.flags))
        self.events.append(("create", pushes, conversion))
        return pushes

    def hold(self, pushes: list[Push], reason: str) -> None:
        """As hold_for_review(): these new pushes wait for staff (Release or Drop) instead of going out."""
        for push in pushes:
            if push.status in (Push.QUEUED, Push.PENDING_IDENTITY):
                push.status, push.error_code, push.error_symbol, push.error_message = Push.ERROR, None, VALUE_HELD, reason

    def identify(self, conversions: list, msclkid: str, click_time: datetime) -> None:
        """As identify(): stored conversions (by id) or this chunk's new ones (objects) took a click."""
        self.events.append(("identify", conversions, msclkid, click_time))

    def write(self) -> int:
        """Decide every dedupe key in report order and write: returns how many pushes were inserted."""
        stored_ids = {c for event in self.events if event[0] == "identify" for c in event[1] if isinstance(c, int)}
        pending: dict[int, list[Push]] = defaultdict(list)
        if stored_ids:
            for push in Push.objects.filter(conversion_id__in=stored_ids, kind=Push.CONVERSION,
                                            status=Push.PENDING_IDENTITY).order_by("id"):
                pending[push.conversion_id].append(push)
        every: dict[int, list[Push]] = defaultdict(list)  # this chunk's new conversions (by object id) → pushes
        for event in self.events:
            if event[0] == "create":
                every[id(event[2])] += event[1]
        wanted: set[str] = set()  # every key any push may ask for, to read which are taken in one query
        for event in self.events:
            if event[0] == "create":
                wanted.update(p.dedupe_key for p in event[1] if p.dedupe_key)
            else:
                wanted.update(self._key_after(p, event[2], event[3]) for p in self._pushes_of(event[1], pending, every))
        by_chunk: dict[int, list[Push]] = {}  # the same, for pushes created so far in the replay
        taken = set(Push.objects.filter(dedupe_key__any=wanted).values_list("dedupe_key", flat=True)) if wanted else set()
        created: list[Push] = []
        chunk_of: dict[int, int] = {}  # push (object id) → its conversion (object id)
        identified: dict[int, Push] = {}
        for event in self.events:
            if event[0] == "create":
                for push in event[1]:
                    if push.dedupe_key in taken:
                        continue  # Microsoft would ignore it as a duplicate: not created (bulk_create's conflict)
                    if push.dedupe_key:
                        taken.add(push.dedupe_key)
                    created.append(push)
                    chunk_of[id(push)] = id(event[2])
                    by_chunk.setdefault(id(event[2]), []).append(push)
                continue
            _, conversions, msclkid, click_time = event
            for push in self._pushes_of(conversions, pending, by_chunk):
                key = self._key_after(push, msclkid, click_time)
                if key in taken:
                    continue  # stays pending_identity, as identify() leaves it
                taken.add(key)
                push.msclkid, push.click_time, push.status, push.dedupe_key = msclkid, click_time, Push.QUEUED, key
                push.next_attempt_at = push.updated_at = self.now
                if push.pk:
                    identified[push.pk] = push
        conversions = {id(event[2]): event[2] for event in self.events if event[0] == "create"}
        for push in created:
            if push.conversion_id is None:  # this chunk's conversion, saved since the push was built
                push.conversion_id = conversions[chunk_of[id(push)]].pk
        bulk.insert(Push, created)  # a key taken since it was read: IntegrityError, the caller stores one by one
        Push.objects.bulk_update(list(identified.values()),
                                 ["msclkid", "click_time", "status", "next_attempt_at", "updated_at", "dedupe_key"])
        return len(created)

    @staticmethod
    def _pushes_of(conversions: list, pending: dict, by_chunk: dict) -> list[Push]:
        found = []
        for conversion in conversions:
            if isinstance(conversion, int):
                found += [p for p in pending.get(conversion, []) if p.status == Push.PENDING_IDENTITY]
            else:
                found += [p for p in by_chunk.get(id(conversion), []) if p.status == Push.PENDING_IDENTITY]
        return found

    @staticmethod
    def _key_after(push: Push, msclkid: str, click_time: datetime) -> str | None:
        before = push.msclkid, push.click_time
        push.msclkid, push.click_time = msclkid, click_time
        key = push.compute_dedupe_key()
        push.msclkid, push.click_time = before
        return key


# --- A server report replaces a browser report (docs/tracking.md#source-ranks) ---------------------

DUPLICATE_REASON = ("Another conversion was already sent or queued for this goal, click and second: Microsoft would "
                    "ignore this one as a duplicate.")


def take_server_report(conversion: Conversion) -> list[Push]:
    """`conversion` now holds a server report that outranked its browser report: its pushes follow.

    A browser push not sent yet (queued and not claimed by a flush, pending_identity, error,
    skipped_no_consent) takes the server's values in place and starts afresh. A sent one, or one a
    flush is sending right now, stays as it is, and the server report gets a push of its own beside
    it (create_pushes); if that one's goal, click and second equal the sent one's, it is not
    created: Microsoft would ignore it. Should the flush's attempt of the browser push fail,
    BatchOutcome.write retires it (`_retire_replaced`). Cancelled rows and adjustments stay as they are.
    """
    now = timezone.now()
    mappings = list(GoalMapping.objects.filter(connection__site_id=conversion.site_id, event_name=conversion.event_name)
                    .select_related("connection"))
    enhanced = {m.connection_id: flag for m in mappings for pk, flag in _goal_enhanced(conversion, mappings).items()
                if pk == m.pk}
    replaceable = Push.objects.filter(_not_claimed(now), conversion=conversion, kind=Push.CONVERSION,
                                      source=Conversion.SOURCE_BROWSER).exclude(status__in=(Push.SENT, Push.CANCELLED))
    for push in replaceable.select_related("connection").only("id", "goal_name", "connection",
                                                                 "connection__enhanced_conversions"):
        push.msclkid, push.hashed_email, push.hashed_phone = conversion.msclkid, conversion.hashed_email, \
            conversion.hashed_phone
        push.conversion_time, push.click_time = conversion.occurred_at, conversion.click_time
        key = push.compute_dedupe_key()
        status = initial_status(conversion, push.connection, enhanced.get(push.connection_id))
        fields = {"status": status, "error_code": None, "error_symbol": "", "error_message": ""}
        if status == Push.SKIPPED_NO_CONSENT:
            fields.update(error_symbol=ADSYNC_ERROR_PREFIX + "no_consent", error_message=NO_CONSENT_REASONS[
                conversion.consent])
        elif key and Push.objects.filter(dedupe_key=key).exclude(pk=push.pk).exists():
            key, fields = None, {"status": Push.ERROR, "error_code": None,
                                 "error_symbol": ADSYNC_ERROR_PREFIX + "duplicate", "error_message": DUPLICATE_REASON}
        replaceable.filter(pk=push.pk).update(
            source=conversion.source, msclkid=push.msclkid, hashed_email=push.hashed_email,
            hashed_phone=push.hashed_phone, value=conversion.value, currency=conversion.currency,
            conversion_time=push.conversion_time, click_time=push.click_time, dedupe_key=key, attempts=0,
            tracking_id="", sent_at=None, next_attempt_at=now, updated_at=now, **fields, **_UNCLAIM)
    return create_pushes(conversion, mappings)  # beside the sent (or in-flight) ones, and for goals mapped since


# --- created → error adsync:value_held → released / dropped ---------------------------------------------

VALUE_HELD = ADSYNC_ERROR_PREFIX + "value_held"
VALUE_DROPPED = ADSYNC_ERROR_PREFIX + "value_dropped"
DROPPED_REASON = "Dropped by staff after review: never sent to Microsoft."
_REVIEWED = (VALUE_HELD, VALUE_DROPPED)


def hold_for_review(conversion: Conversion, reason: str) -> int:
    """The conversion's new pushes wait for staff (Release or Drop) instead of going out."""
    return Push.objects.filter(conversion=conversion, status__in=(Push.QUEUED, Push.PENDING_IDENTITY)).update(
        status=Push.ERROR, error_code=None, error_symbol=VALUE_HELD, error_message=reason, updated_at=timezone.now())


def release_held_values(pushes: QuerySet[Push]) -> int:
    """Staff vouch for held (or dropped) rows: queued if Microsoft can match them, else pending_identity.

    Rows of a conversion since retracted or erased stay as they are: the site or the person called it off."""
    now = timezone.now()
    held = list(pushes.filter(status=Push.ERROR, error_symbol__in=_REVIEWED, conversion__retracted_at__isnull=True,
                              conversion__erased_at__isnull=True).select_related("connection").only(
        "id", "msclkid", "hashed_email", "hashed_phone", "connection", "connection__enhanced_conversions"))
    for push in held:
        matchable = push.msclkid or (push.connection.enhanced_conversions and (push.hashed_email or push.hashed_phone))
        push.status = Push.QUEUED if matchable else Push.PENDING_IDENTITY
        push.error_code, push.error_symbol, push.error_message = None, "", ""
        push.attempts, push.next_attempt_at, push.updated_at = 0, now, now
    Push.objects.bulk_update(held, ["status", "error_code", "error_symbol", "error_message", "attempts",
                                    "next_attempt_at", "updated_at"], batch_size=500)
    return len(held)


def drop_held_values(pushes: QuerySet[Push]) -> int:
    """Staff judged held rows false: they stay unsent for good (Release still undoes it)."""
    return pushes.filter(status=Push.ERROR, error_symbol=VALUE_HELD).update(
        error_symbol=VALUE_DROPPED, error_message=DROPPED_REASON, updated_at=timezone.now())


# --- pending_identity → queued / error ---------------------------------------------------------------

def identify(conversion_ids: list[int], msclkid: str, click_time: datetime) -> int:
    """A click learned late: these conversions' pending_identity pushes take it and are queued.

    Pushes whose (connection, goal, click, second) is already taken stay pending_identity:
    Microsoft would ignore them as duplicates, and the unique dedupe key would refuse them.
    """
    now = timezone.now()
    # Oldest first: when two would take the same key, the earlier conversion keeps it (the drain replays this).
    pushes = list(Push.objects.filter(conversion_id__in=conversion_ids, kind=Push.CONVERSION,
                                      status=Push.PENDING_IDENTITY).order_by("id"))
    for push in pushes:
        push.msclkid, push.click_time, push.status = msclkid, click_time, Push.QUEUED
        push.next_attempt_at = push.updated_at = now
        push.dedupe_key = push.compute_dedupe_key()
    pushes = _without_taken_keys(pushes)
    Push.objects.bulk_update(pushes, ["msclkid", "click_time", "status", "next_attempt_at", "updated_at", "dedupe_key"],
                             batch_size=500)
    return len(pushes)


def expire_pending_identity(now: datetime | None = None) -> int:
    """pending_identity rows older than Microsoft's 90 days can never be sent: error, with the reason."""
    now = now or timezone.now()
    return Push.objects.filter(status=Push.PENDING_IDENTITY, conversion_time__lt=now - MICROSOFT_WINDOW).update(
        status=Push.ERROR, error_code=None, error_symbol=ADSYNC_ERROR_PREFIX + "identity_expired",
        error_message=IDENTITY_EXPIRED_REASON, updated_at=now)


# --- error → queued -----------------------------------------------------------------------------------

def replay(pushes: QuerySet[Push]) -> int:
    """Re-queue `error` rows still inside Microsoft's 90-day window; returns how many.

    A retracted conversion's rows stay as they are: the site called the conversion off; rows held for review
    (a browser value above the site's ceiling) too: Release decides them."""
    now = timezone.now()
    return pushes.filter(status=Push.ERROR, conversion_time__gte=now - MICROSOFT_WINDOW).exclude(
        kind=Push.CONVERSION, conversion__retracted_at__isnull=False).exclude(error_symbol__in=_REVIEWED).update(
        status=Push.QUEUED, attempts=0, next_attempt_at=now, updated_at=now, **_UNCLAIM, **_RESET_ERROR)


def rename_goal(mapping: GoalMapping) -> int:
    """A fixed Goal Name: the mapping's queued rows take it, and its goal-not-found rows retry with it.

    Rows Microsoft rejected with 5606 and rows adsync's own goal check refused are re-queued if
    still inside Microsoft's window; nothing else is re-sent. Returns how many rows were re-queued.
    """
    now = timezone.now()
    # Adjustments keep the name their conversion was sent under: Microsoft finds the original by it.
    rows = Push.objects.filter(connection=mapping.connection, conversion__event_name=mapping.event_name,
                               kind=Push.CONVERSION)
    rows.filter(status=Push.QUEUED).update(goal_name=mapping.goal_name, updated_at=now)
    failed = rows.filter(status=Push.ERROR, conversion_time__gte=now - MICROSOFT_WINDOW,
                         conversion__retracted_at__isnull=True).filter(
        Q(error_code=GOAL_NOT_FOUND_CODE) | Q(error_symbol=ADSYNC_ERROR_PREFIX + "goal_not_found"))
    pushes = list(failed.only("id", "connection_id", "msclkid", "hashed_email", "hashed_phone", "conversion_time"))
    for push in pushes:
        push.goal_name = mapping.goal_name
        push.dedupe_key = push.compute_dedupe_key()
    pushes = _without_taken_keys(pushes)  # already pushed under that goal
    for push in pushes:
        push.status, push.attempts, push.next_attempt_at, push.updated_at = Push.QUEUED, 0, now, now
        push.error_code, push.error_symbol, push.error_message = None, "", ""
    Push.objects.bulk_update(pushes, ["status", "goal_name", "dedupe_key", "attempts", "next_attempt_at",
                                      "error_code", "error_symbol", "error_message", "updated_at"], batch_size=500)
    log.info("mapping %s changed: %s row(s) re-queued", mapping.pk, len(pushes))
    return len(pushes)


def _without_taken_keys(pushes: list[Push]) -> list[Push]:
    """Drop pushes whose dedupe key a stored push, or an earlier one of this list, already holds."""
    keys = [p.dedupe_key for p in pushes if p.dedupe_key]
    taken = set(Push.objects.filter(dedupe_key__in=keys).values_list("dedupe_key", flat=True)) if keys else set()
    kept = []
    for push in pushes:
        if push.dedupe_key in taken:
            continue
        if push.dedupe_key:
            taken.add(push.dedupe_key)
        kept.append(push)
    return kept


# --- Adjustments and erasure: unsent rows change or are called off; sent ones get adjustment rows ------

UNSENT = (Push.QUEUED, Push.PENDING_IDENTITY, Push.ERROR)
RETRACTED_REASON = "Retracted (refund or cancellation) before it was sent: never sent to Microsoft."
ERASED_REASON = "The person's data was erased on request before this was sent: never sent to Microsoft."


def _not_claimed(now: datetime) -> Q:
    """Rows no flush holds right now: one that does may be on its way to Microsoft."""
    return Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)


def restate_unsent(conversion: Conversion, value, currency: str) -> int:
    """A new value for the conversion's rows not sent yet (in flight included: if the call fails they are
    resent with it; if it succeeds, the Restate row corrects Microsoft). Sent rows keep what was sent."""
    return Push.objects.filter(conversion=conversion, kind=Push.CONVERSION).exclude(status=Push.SENT).update(
        value=value, currency=currency, updated_at=timezone.now())


def cancel_unsent(pushes: QuerySet[Push], symbol: str, reason: str) -> int:
    """Call off rows that have not reached Microsoft and that no flush holds: final, with the reason.

    A row a flush has claimed is left alone: its request may be on the wire, and the flush records
    what Microsoft answered (the caller then adjusts it at Microsoft).
    """
    now = timezone.now()
    return pushes.filter(_not_claimed(now), status__in=UNSENT).update(
        status=Push.CANCELLED, error_code=None, error_symbol=ADSYNC_ERROR_PREFIX + symbol, error_message=reason,
        updated_at=now, **_UNCLAIM)


def cancel_for_erasure(pushes: QuerySet[Push]) -> int:
    """An erased person's rows that could still go out (queued, pending_identity) are cancelled for good.

    A row a flush holds keeps its claim: if that request reaches Microsoft the flush records `sent`
    (the truth); if it fails, the row stays cancelled and is never retried.
    """
    return pushes.filter(status__in=(Push.QUEUED, Push.PENDING_IDENTITY)).update(
        status=Push.CANCELLED, error_code=None, error_symbol=ADSYNC_ERROR_PREFIX + "erased",
        error_message=ERASED_REASON, updated_at=timezone.now())


def retract_unsent(conversion: Conversion) -> int:
    """A retract before sending: the conversion's unsent rows are cancelled, and nothing goes to Microsoft."""
    rows = Push.objects.filter(conversion=conversion, kind=Push.CONVERSION)
    return cancel_unsent(rows, "retracted", RETRACTED_REASON)


def possibly_at_microsoft(conversion: Conversion) -> list[Push]:
    """The conversion's rows Microsoft has (sent) or may be receiving right now (claimed by a flush)."""
    now = timezone.now()
    return list(Push.objects.filter(conversion=conversion, kind=Push.CONVERSION).filter(
        Q(status=Push.SENT) | Q(status=Push.QUEUED, claimed_until__gte=now)))


def create_adjustment_pushes(adjustment: Adjustment, originals: list[Push]) -> int:
    """One queued row per original the adjustment must reach, naming it exactly as it was sent.

    A repeat of the same adjustment finds its rows already there (push_adjustment_once_per_source). A
    conversion a server report replaced after its browser report was sent has two originals per
    connection (docs/tracking.md#source-ranks): the adjustment reaches both."""
    now = timezone.now()
    restate = adjustment.kind == Adjustment.RESTATE
    rows = [
        Push(conversion_id=original.conversion_id, connection_id=original.connection_id, kind=adjustment.kind,
             adjustment=adjustment, adjustment_time=adjustment.adjusted_at, goal_name=original.goal_name,
             msclkid=original.msclkid, hashed_email=original.hashed_email, hashed_phone=original.hashed_phone,
             conversion_time=original.conversion_time, click_time=original.click_time, source=original.source,
             value=adjustment.value if restate else None, currency=adjustment.currency if restate else "",
             status=Push.QUEUED, next_attempt_at=now, created_at=now, updated_at=now)
        for original in originals
    ]
    return len(Push.objects.bulk_create(rows, ignore_conflicts=True))


# --- queued: waiting for the connection ------------------------------------------------------------

def release_held(connection: Connection) -> int:
    """Queued rows parked while the connection could not send become due now (after a Reconnect)."""
    now = timezone.now()
    return Push.objects.filter(connection=connection, status=Push.QUEUED, next_attempt_at__gt=now).update(
        next_attempt_at=now)


# --- queued → sent / retry / hold / error: one flush batch ----------------------------------------------

def retry_delay(code: int | None, attempts: int) -> timedelta:
    """Backoff before the next attempt: Microsoft's own wait for 5614/5615, else exponential with jitter."""
    if code in WAIT_DELAYS:
        return WAIT_DELAYS[code]
    seconds = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** attempts)
    return timedelta(seconds=seconds * random.uniform(0.8, 1.2))


@dataclass
class BatchCounts:
    """What writing one batch's outcome did to its rows."""

    sent: int = 0
    errors: int = 0
    requeued: int = 0
    error_messages: list[str] = field(default_factory=list)


class BatchOutcome:
    """Collects a claimed batch's row outcomes, then writes them as a few grouped UPDATEs.

    Every UPDATE is limited to rows still carrying this batch's claim token, so a batch whose
    lease ran out (and was claimed by another worker) cannot overwrite that worker's result.
    """

    def __init__(self, claim_token):
        self.token = claim_token
        self.now = timezone.now()
        self.sent: list[int] = []
        self.failed: dict[tuple, list[int]] = defaultdict(list)
        self.refused: dict[tuple, list[int]] = defaultdict(list)
        self.retried: dict[tuple, list[int]] = defaultdict(list)
        self.released: dict = defaultdict(list)
        self.held: dict[tuple, list[int]] = defaultdict(list)
        self.cancelled: dict[tuple, list[int]] = defaultdict(list)

    def send(self, push) -> None:
        """Microsoft accepted it."""
        self.sent.append(push.pk)

    def fail(self, push, code, symbol, message) -> None:
        """Final: Microsoft refused it for good (it was sent: an attempt, with the request's TrackingId)."""
        self.failed[(code, symbol or "", message or "")].append(push.pk)

    def refuse(self, push, symbol: str, reason: str) -> None:
        """Final: adsync's pre-send check refused it. Never sent, so no attempt and no TrackingId."""
        self.refused[(symbol, reason)].append(push.pk)

    def retry(self, push, code, symbol, message) -> None:
        """A transient failure: retried after a backoff, until ADSYNC_MAX_ATTEMPTS, then final."""
        if push.attempts + 1 >= conf.max_attempts:
            self.fail(push, code, symbol, message)
            return
        # Grouped by attempt count: one jittered delay serves the whole group (one UPDATE).
        self.retried[(push.attempts, code, symbol or "", message or "")].append(push.pk)

    def hold(self, push, until, symbol: str, reason: str) -> None:
        """Not sent yet and not an attempt: stays queued until `until`, with the reason visible."""
        self.held[(until, symbol, reason)].append(push.pk)

    def cancel(self, push, symbol: str, reason: str) -> None:
        """Final and not sent, not an error: nothing left to do (an adjustment whose conversion never reached Microsoft)."""
        self.cancelled[(symbol, reason)].append(push.pk)

    def release(self, pushes, next_attempt_at) -> None:
        """Not sent, through no fault of the rows (throttled, connection problem): queued, no attempt counted."""
        self.released[next_attempt_at].extend(p.pk for p in pushes)

    def _rows(self, ids: list[int]) -> QuerySet[Push]:
        return Push.objects.filter(id__any=ids, claim_token=self.token)

    def write(self, tracking_id: str) -> BatchCounts:
        counts = BatchCounts()
        unclaim = {**_UNCLAIM, "updated_at": self.now}
        attempt = {"tracking_id": tracking_id, "attempts": F("attempts") + 1}
        if self.sent:
            counts.sent += self._rows(self.sent).update(
                status=Push.SENT, sent_at=self.now, **attempt, **_RESET_ERROR, **unclaim)
        for (code, symbol, message), ids in self.failed.items():
            counts.errors += self._rows(ids).update(
                status=Push.ERROR, **attempt, error_code=code, error_symbol=symbol, error_message=message, **unclaim)
            counts.error_messages.append(message)
        for (symbol, reason), ids in self.refused.items():
            counts.errors += self._rows(ids).update(
                status=Push.ERROR, error_code=None, error_symbol=symbol, error_message=reason, **unclaim)
            counts.error_messages.append(reason)
        for (attempts, code, symbol, message), ids in self.retried.items():
            counts.requeued += self._rows(ids).update(
                **attempt, next_attempt_at=self.now + retry_delay(code, attempts),
                error_code=code, error_symbol=symbol, error_message=message, **unclaim)
        for (until, symbol, reason), ids in self.held.items():
            self._rows(ids).update(next_attempt_at=until, error_code=None, error_symbol=symbol, error_message=reason,
                                   **unclaim)
        for (symbol, reason), ids in self.cancelled.items():
            self._rows(ids).update(status=Push.CANCELLED, error_code=None, error_symbol=symbol, error_message=reason,
                                   **unclaim)
        for next_attempt_at, ids in self.released.items():
            counts.requeued += self._rows(ids).update(next_attempt_at=next_attempt_at, **unclaim)
        waiting = [pk for groups in (self.retried, self.held, self.released) for ids in groups.values() for pk in ids]
        if waiting:
            _retire_replaced(waiting)
        return counts


REPLACED_REASON = ("A server report of the same order arrived while a flush was sending this browser report, which "
                   "failed: the server report's own push goes out instead.")


def _retire_replaced(ids: list[int]) -> int:
    """Browser pushes a server report outranked while a flush was sending them, and not sent: never retried."""
    return Push.objects.filter(id__any=ids, status=Push.QUEUED, kind=Push.CONVERSION,
                               source=Conversion.SOURCE_BROWSER).exclude(
        conversion__source=Conversion.SOURCE_BROWSER).update(
        status=Push.ERROR, error_code=None, error_symbol=ADSYNC_ERROR_PREFIX + "replaced",
        error_message=REPLACED_REASON, updated_at=timezone.now())
