"""adsync's data: sites, clicks, conversions, Microsoft Ads connections and the sync log.

A conversion becomes one Push (a sync-log row) per connection of its site that maps its
event. Pushes are claimed, sent and resolved by adsync/tasks.py; their outcome is always
written with filter(...).update(...), so a row's status only ever moves forward under a
condition the writer checked.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from datetime import timezone as dt_timezone

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from adsync.crypto import EncryptedTextField


def new_site_key() -> str:
    return "pk_" + secrets.token_hex(8)


def hash_api_secret(secret: str) -> str:
    """Server API secrets are random 32-byte tokens, so a plain SHA-256 is a safe lookup hash."""
    return hashlib.sha256(secret.encode()).hexdigest()


class Site(models.Model):
    """A client website that embeds the snippet and may call the server API."""

    name = models.CharField(max_length=200)
    key = models.CharField(
        "public site key", max_length=40, unique=True, default=new_site_key,
        help_text="Public: embedded in the snippet tag on the client's pages.",
    )
    api_secret_hash = models.CharField(max_length=64, blank=True, editable=False, db_index=True)
    allowed_origins = models.TextField(
        blank=True,
        help_text="One origin per line, e.g. https://shop.example.com. The snippet's calls "
        "from other origins are refused.",
    )
    default_currency = models.CharField(max_length=3, default="USD")
    default_country = models.CharField(
        max_length=2, default="US", help_text="ISO country used to read phone numbers written without +country code."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def origin_list(self) -> list[str]:
        return [line.strip().rstrip("/") for line in self.allowed_origins.splitlines() if line.strip()]

    def allows_origin(self, origin: str | None) -> bool:
        return bool(origin) and origin.rstrip("/") in self.origin_list()

    def rotate_api_secret(self) -> str:
        """Issue a new server API secret; only its hash is kept, so show the return value once."""
        secret = "sk_" + secrets.token_urlsafe(32)
        self.api_secret_hash = hash_api_secret(secret)
        self.save(update_fields=["api_secret_hash"])
        return secret

    @classmethod
    def for_api_secret(cls, secret: str) -> Site | None:
        if not secret:
            return None
        return cls.objects.filter(api_secret_hash=hash_api_secret(secret)).first()


class Click(models.Model):
    """A landing with msclkid, reported by the snippet: ties a first-party visitor to a click."""

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="clicks")
    visitor_id = models.CharField(max_length=64, db_index=True)
    msclkid = models.CharField(max_length=100)
    clicked_at = models.DateTimeField(default=timezone.now)
    landing_url = models.URLField(max_length=2000, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["site", "msclkid"], name="click_unique_per_site"),
        ]
        indexes = [
            models.Index(fields=["site", "visitor_id", "-clicked_at"], name="click_visitor_latest"),
            models.Index(fields=["clicked_at"], name="click_retention"),
        ]

    def __str__(self) -> str:
        return self.msclkid

    @classmethod
    def latest_for_visitor(cls, site: Site, visitor_id: str, before) -> Click | None:
        if not visitor_id:
            return None
        window_start = before - timedelta(days=settings.ADSYNC_RETENTION_DAYS)
        return (
            cls.objects.filter(site=site, visitor_id=visitor_id, clicked_at__lte=before, clicked_at__gte=window_start)
            .order_by("-clicked_at")
            .first()
        )


class Conversion(models.Model):
    """One business event (a purchase, a lead...). A repeated (site, event, order id) is the same conversion."""

    SOURCE_BROWSER = "browser"
    SOURCE_SERVER = "server"
    SOURCE_ADMIN = "admin"
    SOURCES = [(SOURCE_BROWSER, "Browser snippet"), (SOURCE_SERVER, "Server API"), (SOURCE_ADMIN, "Admin test")]

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="conversions")
    event_name = models.CharField(max_length=100)
    order_id = models.CharField(max_length=200, null=True, blank=True)
    value = models.DecimalField(max_digits=15, decimal_places=3, null=True, blank=True,
                                validators=[MinValueValidator(0)])
    currency = models.CharField(max_length=3, blank=True)
    occurred_at = models.DateTimeField("conversion time (UTC)", default=timezone.now)
    visitor_id = models.CharField(max_length=64, blank=True)
    msclkid = models.CharField(max_length=100, blank=True)
    click_time = models.DateTimeField(null=True, blank=True)
    hashed_email = models.CharField(max_length=64, blank=True)
    hashed_phone = models.CharField(max_length=64, blank=True)
    source = models.CharField(max_length=10, choices=SOURCES, default=SOURCE_BROWSER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["site", "event_name", "order_id"], name="conversion_unique_order",
                condition=Q(order_id__isnull=False),
            ),
        ]
        indexes = [
            models.Index(fields=["site", "-occurred_at"], name="conversion_site_time"),
            # The sync log's search by order id (adsync.large_tables).
            models.Index(fields=["order_id"], name="conversion_order_id"),
            # adsync.matching.attach_click on every ingest with an msclkid: only the few conversions
            # still waiting for a click are indexed, so a busy site does not scan its recent history.
            models.Index(fields=["site", "visitor_id"], name="conversion_pending_visitor", condition=Q(msclkid="")),
            models.Index(fields=["site", "hashed_email"], name="conversion_pending_email", condition=Q(msclkid="")),
            models.Index(fields=["site", "hashed_phone"], name="conversion_pending_phone", condition=Q(msclkid="")),
        ]

    def __str__(self) -> str:
        return f"{self.event_name} {self.order_id or ''}".strip()

    @property
    def has_hashed_pii(self) -> bool:
        return bool(self.hashed_email or self.hashed_phone)


class Connection(models.Model):
    """The Microsoft Ads card: one ad account connected for one site, with its health."""

    PLATFORM_MICROSOFT_ADS = "microsoft_ads"
    PLATFORMS = [(PLATFORM_MICROSOFT_ADS, "Microsoft Ads")]

    ACTIVE = "active"
    TOKEN_EXPIRED = "token_expired"
    DISCONNECTED = "disconnected"
    STATUSES = [(ACTIVE, "Active"), (TOKEN_EXPIRED, "Token expired"), (DISCONNECTED, "Disconnected")]

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="connections")
    platform = models.CharField(max_length=20, choices=PLATFORMS, default=PLATFORM_MICROSOFT_ADS)
    status = models.CharField(max_length=20, choices=STATUSES, default=DISCONNECTED, db_index=True)
    customer_id = models.CharField("Customer ID", max_length=20, blank=True)
    account_id = models.CharField("Account ID", max_length=20, blank=True)
    account_name = models.CharField(max_length=200, blank=True)
    account_number = models.CharField(max_length=20, blank=True)

    # Optional per-connection OAuth app; settings.MICROSOFT_ADS_CLIENT_ID/SECRET otherwise.
    client_id = models.CharField(max_length=100, blank=True)
    client_secret = EncryptedTextField(blank=True)
    access_token = EncryptedTextField(blank=True)
    refresh_token = EncryptedTextField(blank=True)
    token_expires_at = models.DateTimeField(null=True, blank=True)
    refreshed_at = models.DateTimeField(null=True, blank=True)
    # A lease, not a transaction: the refresh HTTP call happens while it is held, and no
    # database transaction may stay open across an HTTP call (SQLite would lock the emulator out).
    refresh_lock_until = models.DateTimeField(null=True, blank=True, editable=False)

    enhanced_conversions = models.BooleanField(
        default=False,
        help_text="Send conversions that have a hashed email or phone but no msclkid (enhanced conversions "
        "must be turned on for the goal in Microsoft Ads).",
    )
    throttled_until = models.DateTimeField(null=True, blank=True)
    # Client-side rate limit (settings.ADSYNC_REQUESTS_PER_MINUTE): a fixed one-minute window.
    rate_window_start = models.DateTimeField(null=True, blank=True, editable=False)
    rate_window_count = models.PositiveIntegerField(default=0, editable=False)
    goals_refreshed_at = models.DateTimeField(null=True, blank=True)

    last_flush_at = models.DateTimeField(null=True, blank=True)
    last_insights_sync_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    # Debounce of alert emails (adsync.alerts): at most one per connection per hour.
    last_alert_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["site__name", "id"]
        # The "operators" role (adsync.roles): run admin actions that change state or queue work.
        permissions = [("operate_connection", "Can run sync actions (Resync, Reconnect, Send test, Replay)")]

    def __str__(self) -> str:
        label = self.account_name or self.account_id or "not connected"
        return f"{self.site} · Microsoft Ads · {label}"

    @property
    def is_active(self) -> bool:
        return self.status == self.ACTIVE

    @property
    def is_stale(self) -> bool:
        """Active but the insights sync has not succeeded in the last 24 hours."""
        if self.status != self.ACTIVE:
            return False
        if self.last_insights_sync_at is None:
            return True
        return timezone.now() - self.last_insights_sync_at > timedelta(hours=24)

    def record_error(self, message: str) -> None:
        now = timezone.now()
        Connection.objects.filter(pk=self.pk).update(last_error=message, last_error_at=now)
        self.last_error, self.last_error_at = message, now

    def oauth_client(self) -> tuple[str, str]:
        """(client id, client secret): the connection's own app if entered, else the settings'."""
        if self.client_id:
            return self.client_id, self.client_secret
        return settings.MICROSOFT_ADS_CLIENT_ID, settings.MICROSOFT_ADS_CLIENT_SECRET

    def mark_token_expired(self, reason: str) -> None:
        """Card → Token expired; only the call that flips it sends the staff alert (adsync.alerts)."""
        now = timezone.now()
        rows = Connection.objects.filter(pk=self.pk)
        flipped = rows.exclude(status=Connection.TOKEN_EXPIRED).update(
            status=Connection.TOKEN_EXPIRED, last_error=reason, last_error_at=now
        )
        if not flipped:
            rows.update(last_error=reason, last_error_at=now)
        self.status, self.last_error, self.last_error_at = Connection.TOKEN_EXPIRED, reason, now
        if flipped:
            from adsync import alerts

            alerts.token_expired(self)  # after commit; never raises


class GoalMapping(models.Model):
    """Event name → Microsoft Goal Name. Stored exactly as typed: never trimmed or re-cased."""

    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="goal_mappings")
    event_name = models.CharField(max_length=100)
    goal_name = models.CharField(
        "Goal Name", max_length=100,
        help_text="Exactly as in Microsoft Ads → Tools → Conversion goals (case-sensitive; copy-paste it).",
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["connection", "event_name"], name="mapping_unique_event"),
        ]
        ordering = ["event_name"]

    def __str__(self) -> str:
        return f"{self.event_name} → {self.goal_name}"

    @classmethod
    def from_db(cls, db, field_names, values):
        instance = super().from_db(db, field_names, values)
        instance._saved_goal_name = instance.__dict__.get("goal_name")
        return instance

    def save(self, *args, **kwargs) -> None:
        """A changed Goal Name re-queues that mapping's goal-not-found rows (adsync.goals)."""
        changed = self.pk is not None and getattr(self, "_saved_goal_name", None) not in (None, self.goal_name)
        super().save(*args, **kwargs)
        self._saved_goal_name = self.goal_name
        if changed:
            from adsync.goals import requeue_after_mapping_change

            requeue_after_mapping_change(self)


class AccountGoal(models.Model):
    """A conversion goal of the connected account, cached from ConversionGoals/QueryByIds (§4).

    Microsoft returns no creation time, so `first_seen_at` stands in for it (the 2-hour wait
    of 5615). A goal missing from the latest fetch keeps its row with `missing_since` set.
    """

    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="account_goals")
    goal_id = models.CharField(max_length=20)
    name = models.CharField(max_length=100)
    goal_type = models.CharField(max_length=40, default="OfflineConversion")
    status = models.CharField(max_length=20, default="Active")
    conversion_window_minutes = models.PositiveIntegerField(null=True, blank=True)
    enhanced_conversions = models.BooleanField(default=False)
    first_seen_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)
    missing_since = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["connection", "goal_id"], name="goal_unique_per_connection")]
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_offline(self) -> bool:
        return self.goal_type in ("OfflineConversion", "OfflineConversionGoal")


class PushQuerySet(models.QuerySet):
    def due(self, now=None):
        """Queued rows no worker holds and whose retry time has come."""
        now = now or timezone.now()
        return self.filter(status=Push.QUEUED, next_attempt_at__lte=now).filter(
            Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)
        )


class Push(models.Model):
    """A sync-log row: one conversion sent (or held back) to one connection."""

    QUEUED = "queued"
    SENT = "sent"
    PENDING_IDENTITY = "pending_identity"
    ERROR = "error"
    STATUSES = [(QUEUED, "queued"), (SENT, "sent"), (PENDING_IDENTITY, "pending_identity"), (ERROR, "error")]

    # No separate FK indexes: push_once_per_connection leads with conversion, push_due and
    # push_log_filter with connection. Every index is written on each status change.
    conversion = models.ForeignKey(Conversion, on_delete=models.CASCADE, related_name="pushes", db_index=False)
    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="pushes", db_index=False)
    goal_name = models.CharField("Goal Name", max_length=100)
    msclkid = models.CharField(max_length=100, blank=True)
    hashed_email = models.CharField(max_length=64, blank=True)
    hashed_phone = models.CharField(max_length=64, blank=True)
    value = models.DecimalField(max_digits=15, decimal_places=3, null=True, blank=True)
    currency = models.CharField(max_length=3, blank=True)
    conversion_time = models.DateTimeField(help_text="Sent to Microsoft as ConversionTime, UTC, identical on every retry.")
    click_time = models.DateTimeField(null=True, blank=True, help_text="When the msclkid's click landed, if known.")

    status = models.CharField(max_length=20, choices=STATUSES, default=QUEUED)
    error_code = models.IntegerField(null=True, blank=True, help_text="Microsoft's numeric Code")
    error_symbol = models.CharField(max_length=100, blank=True, help_text="Microsoft's ErrorCode")
    error_message = models.TextField(blank=True, help_text="Microsoft's Message, verbatim")
    tracking_id = models.CharField(max_length=64, blank=True, help_text="Microsoft's TrackingId for the request")
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
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
        verbose_name_plural = "sync log"
        constraints = [
            models.UniqueConstraint(fields=["conversion", "connection"], name="push_once_per_connection"),
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
            # The sync log's status filter, newest first (the admin orders by -id; docs/performance.md).
            models.Index(fields=["status", "-id"], name="push_log_status"),
        ]

    def __str__(self) -> str:
        return f"{self.goal_name} · {self.msclkid or 'no msclkid'} · {self.status}"

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

    @classmethod
    def initial_status(cls, conversion: Conversion, connection: Connection) -> str:
        if conversion.msclkid:
            return cls.QUEUED
        if connection.enhanced_conversions and conversion.has_hashed_pii:
            return cls.QUEUED
        return cls.PENDING_IDENTITY

    @classmethod
    def create_for(cls, conversion: Conversion) -> list[Push]:
        """One push per connection of the conversion's site that maps its event.

        Connections that are not active still get queued rows: they wait, and go out on the
        first flush after Reconnect.
        """
        # Only what a push needs: this runs on every ingest hit, and loading the whole connection
        # would decrypt its OAuth tokens in the public endpoint for nothing.
        mappings = GoalMapping.objects.filter(
            connection__site_id=conversion.site_id, event_name=conversion.event_name
        ).select_related("connection").only("goal_name", "connection", "connection__enhanced_conversions")
        pushes = [
            cls(
                conversion=conversion,
                connection=mapping.connection,
                goal_name=mapping.goal_name,
                msclkid=conversion.msclkid,
                hashed_email=conversion.hashed_email,
                hashed_phone=conversion.hashed_phone,
                value=conversion.value,
                currency=conversion.currency,
                conversion_time=conversion.occurred_at,
                click_time=conversion.click_time,
                status=cls.initial_status(conversion, mapping.connection),
            )
            for mapping in mappings
        ]
        for push in pushes:
            push.dedupe_key = push.compute_dedupe_key()
        return cls.objects.bulk_create(pushes, ignore_conflicts=True)

    def as_offline_conversion(self) -> dict:
        return offline_conversion_json(self)


ADSYNC_ERROR_PREFIX = "adsync:"


def offline_conversion_json(push) -> dict:
    """The OfflineConversion JSON object (reference §1.3) for a Push or a claimed row."""
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


class CampaignInsight(models.Model):
    """One campaign's numbers for one day, from Microsoft's campaign performance report (§5).

    Written only by adsync.insights, as an upsert on (connection, date, campaign_id): a re-sync
    replaces the numbers of the days it fetched and never duplicates a row.
    """

    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="insights")
    date = models.DateField(help_text="The report day (TimePeriod) in the report time zone, see docs/insights.md.")
    campaign_id = models.CharField("Campaign ID", max_length=20)
    campaign_name = models.CharField(max_length=256, blank=True)
    impressions = models.PositiveBigIntegerField(default=0)
    clicks = models.PositiveBigIntegerField(default=0)
    spend = models.DecimalField(max_digits=16, decimal_places=2, default=0)
    conversions = models.DecimalField(max_digits=14, decimal_places=2, default=0)
    revenue = models.DecimalField(max_digits=16, decimal_places=2, default=0)
    currency = models.CharField(max_length=3, blank=True, help_text="The account currency (CurrencyCode)")
    synced_at = models.DateTimeField(default=timezone.now, help_text="When adsync last wrote these numbers")

    class Meta:
        verbose_name = "campaign insight"
        ordering = ["-date", "campaign_name"]
        constraints = [
            models.UniqueConstraint(fields=["connection", "date", "campaign_id"], name="insight_unique_day"),
        ]
        indexes = [models.Index(fields=["-date"], name="insight_recent")]

    def __str__(self) -> str:
        return f"{self.date} · {self.campaign_name or self.campaign_id}"


class StaffNotificationPreference(models.Model):
    """A staff member's opt-in to the daily sync digest and the immediate alerts (adsync.digest, adsync.alerts)."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                                related_name="adsync_notifications")
    digest = models.BooleanField("daily sync digest", default=True)
    alerts = models.BooleanField("immediate alerts", default=True,
                                 help_text="Token expired, or a flush with more errors than the threshold.")

    class Meta:
        verbose_name = "staff notification preference"

    def __str__(self) -> str:
        return f"{self.user} notifications"

    @classmethod
    def addresses(cls, kind: str) -> list[str]:
        """Email addresses of active staff who opted in to `kind` ("digest" or "alerts")."""
        rows = cls.objects.filter(**{kind: True}, user__is_active=True, user__is_staff=True).exclude(user__email="")
        return sorted(set(rows.values_list("user__email", flat=True)))
