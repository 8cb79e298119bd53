"""A Microsoft Ads connection (the card), its event → Goal Name mappings and the account's cached goals.

Health is stored as data (the last failure's kind, code, operation and time) and turned into
the card's state by adsync/connections/health.py; nothing here parses message text.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from adsync.conf import conf
from adsync.models.sites import Site
from adsync.security.crypto import EncryptedTextField


class Connection(models.Model):
    """The Microsoft Ads card: one ad account connected for one site, with its health."""

    PLATFORM_MICROSOFT_ADS = "microsoft_ads"
    PLATFORMS = [(PLATFORM_MICROSOFT_ADS, "Microsoft Ads")]

    ACTIVE = "active"
    TOKEN_EXPIRED = "token_expired"
    DISCONNECTED = "disconnected"
    STATUSES = [(ACTIVE, "Active"), (TOKEN_EXPIRED, "Token expired"), (DISCONNECTED, "Disconnected")]

    # What adsync was doing when the connection's last failure happened.
    UPLOAD = "upload"
    TOKEN_REFRESH = "token_refresh"
    GOAL_REFRESH = "goal_refresh"
    INSIGHTS = "insights"
    CONNECT = "connect"  # the account picker's check of the signed-in user's role
    OPERATIONS = [(UPLOAD, "Upload"), (TOKEN_REFRESH, "Token refresh"), (GOAL_REFRESH, "Goal list refresh"),
                  (INSIGHTS, "Insights sync"), (CONNECT, "Account check at Connect")]

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="connections")
    platform = models.CharField(max_length=20, choices=PLATFORMS, default=PLATFORM_MICROSOFT_ADS)
    status = models.CharField(max_length=20, choices=STATUSES, default=DISCONNECTED, db_index=True)
    customer_id = models.CharField("Customer ID", max_length=20, blank=True)
    account_id = models.CharField("Account ID", max_length=20, blank=True)
    account_name = models.CharField(max_length=200, blank=True)
    account_number = models.CharField(max_length=20, blank=True)

    # Optional per-connection OAuth app; MICROSOFT_ADS_CLIENT_ID/SECRET otherwise.
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
    # Client-side rate limit (ADSYNC_REQUESTS_PER_MINUTE, adsync/connections/throttle.py): a one-minute window.
    rate_window_start = models.DateTimeField(null=True, blank=True, editable=False)
    rate_window_count = models.PositiveIntegerField(default=0, editable=False)
    goals_refreshed_at = models.DateTimeField(null=True, blank=True)

    # When an account was last connected or switched (Connect, Reconnect, the picker, the command): a
    # new connection's insights are "not synced yet", not stale, for its first 24 hours.
    connected_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_flush_at = models.DateTimeField(null=True, blank=True)
    # When Microsoft last took an upload call (HTTP 200, whatever it said of single rows): an upload
    # failure older than this no longer counts on the card (adsync/connections/health.py).
    last_upload_ok_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_insights_sync_at = models.DateTimeField(null=True, blank=True)
    # The last failure, as data (adsync/connections/health.py reads it; nothing parses the message):
    # what adsync was doing, Microsoft's classification and code, and Microsoft's words verbatim.
    last_error = models.TextField("last error", blank=True, help_text="Microsoft's message, verbatim.")
    last_error_at = models.DateTimeField(null=True, blank=True)
    last_error_operation = models.CharField(max_length=20, choices=OPERATIONS, blank=True)
    last_error_kind = models.CharField(max_length=20, blank=True,
                                       help_text="adsync's classification (adsync/microsoft/errors.py Kind).")
    last_error_code = models.CharField(max_length=40, blank=True,
                                       help_text="Microsoft's numeric code, or the OAuth error (e.g. invalid_grant).")
    # The latest diagnosis run, summarised (adsync/diagnosis/run.py writes it; models/diagnosis.py reads it):
    # the card's state and the digest read it without a query of their own.
    diagnosis_summary = models.JSONField(default=dict, blank=True, editable=False)
    # Debounce of alert emails (adsync/notify/alerts.py): at most one per connection per hour.
    last_alert_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["site__name", "id"]
        # The "operators" role (adsync/security/roles.py): run admin actions that change state or queue work.
        permissions = [("operate_connection", "Can run sync actions (Resync, Reconnect, Send test, Replay)")]

    def __str__(self) -> str:
        label = self.account_name or self.account_id or "not connected"
        return f"{self.site} · Microsoft Ads · {label}"

    @property
    def is_active(self) -> bool:
        return self.status == self.ACTIVE

    def oauth_client(self) -> tuple[str, str]:
        """(client id, client secret): the connection's own app if entered, else the settings'."""
        if self.client_id:
            return self.client_id, self.client_secret
        return conf.client_id, conf.client_secret


class GoalMapping(models.Model):
    """Event name → Microsoft Goal Name. Stored exactly as typed: never trimmed or re-cased.

    A changed Goal Name re-queues the rows the old name failed (adsync/push/transitions.py
    `rename_goal`), called by whoever changed it (the card's admin), never by save().
    """

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


class AccountGoal(models.Model):
    """A conversion goal of the connected account, cached from ConversionGoals/QueryByIds
    (docs/microsoft-api.md#conversion-goals).

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
