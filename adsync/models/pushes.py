"""The sync log: one Push per conversion and connection (plus one per adjustment sent), and the JSON it becomes.

Every change of a push's status, attempts, next attempt and error fields is written by
adsync/push/transitions.py, always as filter(...).update(...) under a condition it checked.
"""

from __future__ import annotations

import hashlib
from datetime import timezone as dt_timezone

from django.db import models
from django.db.models import Q
from django.utils import timezone

from adsync.microsoft.campaign import RESTATE, RETRACT, offline_conversion_adjustment_json
from adsync.models.adjustments import Adjustment
from adsync.models.connections import Connection
from adsync.models.conversions import Conversion


class PushQuerySet(models.QuerySet):
    def due(self, now=None):
        """Queued rows no worker holds and whose retry time has come."""
        now = now or timezone.now()
        return self.filter(status=Push.QUEUED, next_attempt_at__lte=now).filter(
            Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)
        )

    def of_conversion(self, conversion):
        """A conversion's rows of every kind, through two indexes: push_once_per_connection holds its
        conversion rows, push_adjustments the others (an OR of the two, which PostgreSQL combines)."""
        return self.filter(Q(conversion=conversion, kind=Push.CONVERSION)
                           | (Q(conversion=conversion) & ~Q(kind=Push.CONVERSION)))

    def counted(self):
        """Conversion rows that count in match rates and shares: not adjustments, and not the rows adsync
        deliberately never sends (skipped_no_consent, cancelled), which are no failure of anyone's."""
        return self.filter(kind=Push.CONVERSION).exclude(status__in=Push.NOT_SENT_BY_DESIGN)


class Push(models.Model):
    """A sync-log row: one conversion sent (or held back) to one connection, or one adjustment of it.

    `kind` says which: a conversion (ApplyOfflineConversions) or a restate / retract of one already
    sent (ApplyOfflineConversionAdjustments), which names the original exactly as it was sent.
    """

    QUEUED = "queued"
    SENT = "sent"
    PENDING_IDENTITY = "pending_identity"
    ERROR = "error"
    # Final, never sent, and not failures: the visitor gave no ad storage consent; or the row was
    # called off before it went out (a retract before sending, an erasure, an adjustment with nothing to adjust).
    SKIPPED_NO_CONSENT = "skipped_no_consent"
    CANCELLED = "cancelled"
    STATUSES = [(QUEUED, "queued"), (SENT, "sent"), (PENDING_IDENTITY, "pending_identity"), (ERROR, "error"),
                (SKIPPED_NO_CONSENT, "skipped_no_consent"), (CANCELLED, "cancelled")]
    NOT_SENT_BY_DESIGN = (SKIPPED_NO_CONSENT, CANCELLED)

    CONVERSION = "conversion"
    RESTATE = Adjustment.RESTATE
    RETRACT = Adjustment.RETRACT
    KINDS = [(CONVERSION, "conversion"), (RESTATE, "adjustment: restate"), (RETRACT, "adjustment: retract")]

    # No separate FK indexes: push_due and push_log_filter lead with the connection;
    # push_once_per_source with the conversion for its conversion rows, push_adjustments for its
    # other rows (`of_conversion`). Every index a row is in is written on each status change.
    conversion = models.ForeignKey(Conversion, on_delete=models.CASCADE, related_name="pushes", db_index=False)
    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="pushes", db_index=False)
    goal_name = models.CharField("Goal Name", max_length=100)
    msclkid = models.CharField(max_length=100, blank=True)
    hashed_email = models.CharField(max_length=64, blank=True)
    hashed_phone = models.CharField(max_length=64, blank=True)
    value = models.DecimalField(max_digits=15, decimal_places=3, null=True, blank=True)
    currency = models.CharField(max_length=3, blank=True)
    conversion_time = models.DateTimeField(help_text="Sent to Microsoft as ConversionTime, UTC, identical on every retry.")
    kind = models.CharField(max_length=10, choices=KINDS, default=CONVERSION)
    adjustment = models.ForeignKey(Adjustment, on_delete=models.CASCADE, null=True, blank=True, related_name="pushes",
                                   db_index=False)
    adjustment_time = models.DateTimeField(null=True, blank=True, help_text="Sent as AdjustmentTime (adjustments only).")
    click_time = models.DateTimeField(null=True, blank=True, help_text="When the msclkid's click landed, if known.")
    # Whose report the values above come from. A server report replaces a browser report's push that was
    # not sent yet, and goes out as a push of its own beside one that was (docs/tracking.md#source-ranks).
    source = models.CharField(max_length=10, choices=Conversion.SOURCES, default=Conversion.SOURCE_BROWSER)

    status = models.CharField(max_length=20, choices=STATUSES, default=QUEUED)
    # Microsoft's answer, verbatim; for adsync's own pre-send checks error_symbol starts with "adsync:",
    # error_message is adsync's reason and error_code is empty (the row page labels the two apart).
    error_code = models.IntegerField("Microsoft's Code", null=True, blank=True, help_text="Microsoft's numeric Code")
    error_symbol = models.CharField("Microsoft's ErrorCode", max_length=100, blank=True,
                                    help_text="Microsoft's ErrorCode, or adsync:<check> for adsync's own checks")
    error_message = models.TextField("Microsoft's Message", blank=True, help_text="Microsoft's Message, verbatim")
    tracking_id = models.CharField("Microsoft's TrackingId", max_length=64, blank=True,
                                   help_text="Of the last request to Microsoft that carried this row; quote it to "
                                             "Microsoft support")
    attempts = models.PositiveIntegerField(default=0, help_text="Calls to Microsoft that carried this row")
    next_attempt_at = models.DateTimeField("next attempt at", default=timezone.now)
    claimed_until = models.DateTimeField(null=True, blank=True)
    claim_token = models.UUIDField(null=True, blank=True)
    # Our idempotency key: (connection, goal, msclkid or identity hash, conversion time). Null
    # while the row has no identity. Unique, so the same conversion never gets a second push.
    dedupe_key = models.CharField(max_length=64, null=True, blank=True, editable=False)
    sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    objects = PushQuerySet.as_manager()

    class Meta:
        verbose_name = "sync-log entry"
        verbose_name_plural = "sync-log entries"
        constraints = [
            # One conversion row per connection and source: a server report's beside a sent browser report's
            # (docs/tracking.md#source-ranks); an adjustment reaches each of them.
            models.UniqueConstraint(fields=["conversion", "connection", "source"], name="push_once_per_source",
                                    condition=Q(kind="conversion")),
            models.UniqueConstraint(fields=["adjustment", "connection", "source"], name="push_adjustment_once_per_source",
                                    condition=Q(adjustment__isnull=False)),
            models.UniqueConstraint(fields=["dedupe_key"], name="push_dedupe_key"),
        ]
        indexes = [
            # The flush's claim query: only queued rows are indexed, so it stays small.
            models.Index(
                fields=["connection", "next_attempt_at", "id"], name="push_due",
                condition=Q(status="queued"),
            ),
            models.Index(fields=["connection", "status", "-created_at"], name="push_log_filter"),
            models.Index(fields=["-created_at", "-id"], name="push_log_recent"),
            models.Index(fields=["msclkid"], name="push_msclkid"),
            # A conversion's adjustment rows (`of_conversion`): partial, so the flush's status writes on
            # conversion rows never touch it (a full index on conversion cost the flush a fifth).
            models.Index(fields=["conversion"], name="push_adjustments", condition=~Q(kind="conversion")),
            # The sync log's status filter, newest first (the admin orders by -id; docs/performance.md).
            models.Index(fields=["status", "-id"], name="push_log_status"),
        ]

    def __str__(self) -> str:
        kind = "" if self.kind == self.CONVERSION else f"{self.kind} · "
        return f"{kind}{self.goal_name} · {self.msclkid or 'no msclkid'} · {self.status}"

    @property
    def is_adjustment(self) -> bool:
        return self.kind != self.CONVERSION

    def compute_dedupe_key(self) -> str | None:
        identity = self.msclkid or self.hashed_email or self.hashed_phone
        if not identity:
            return None
        raw = "|".join([str(self.connection_id), self.goal_name, identity, format_conversion_time(self.conversion_time)])
        return hashlib.sha256(raw.encode()).hexdigest()

    @property
    def is_adsync_error(self) -> bool:
        """True when adsync held the row back itself (a pre-send check), not Microsoft."""
        return self.error_symbol.startswith(ADSYNC_ERROR_PREFIX)

    def as_offline_conversion(self) -> dict:
        return offline_conversion_json(self)

    def as_request_item(self) -> dict:
        return request_item_json(self)


ADSYNC_ERROR_PREFIX = "adsync:"
ADJUSTMENT_TYPES = {Push.RESTATE: RESTATE, Push.RETRACT: RETRACT}


def request_item_json(push) -> dict:
    """What the flush sends for a Push or a claimed row: an OfflineConversion, or an OfflineConversionAdjustment."""
    return offline_conversion_adjustment_json_for(push) if push.kind != Push.CONVERSION else offline_conversion_json(push)


def offline_conversion_adjustment_json_for(push) -> dict:
    """The OfflineConversionAdjustment (docs/microsoft-api.md#adjustments): the original's goal name, click id or
    hashes and ConversionTime exactly as first sent, the type and time, and for a Restate the new value."""
    restate = push.kind == Push.RESTATE
    return offline_conversion_adjustment_json(
        goal_name=push.goal_name, conversion_time=push.conversion_time, adjustment_type=ADJUSTMENT_TYPES[push.kind],
        adjustment_time=push.adjustment_time, value=push.value if restate else None,
        currency=push.currency if restate else "", msclkid=push.msclkid, hashed_email=push.hashed_email,
        hashed_phone=push.hashed_phone)


def offline_conversion_json(push) -> dict:
    """The OfflineConversion JSON object (docs/microsoft-api.md#request-body) for a Push or a claimed row."""
    item: dict = {
        "ConversionName": push.goal_name,
        "ConversionTime": format_conversion_time(push.conversion_time),
    }
    if push.value is not None:
        item["ConversionValue"] = float(push.value)
    if push.currency:
        item["ConversionCurrencyCode"] = push.currency
    if push.msclkid:
        item["MicrosoftClickId"] = push.msclkid
    if push.hashed_email:
        item["HashedEmailAddress"] = push.hashed_email
    if push.hashed_phone:
        item["HashedPhoneNumber"] = push.hashed_phone
    return item


def format_conversion_time(moment) -> str:
    """UTC, whole seconds, trailing Z: the same string on every retry so Microsoft de-duplicates."""
    return moment.astimezone(dt_timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
