"""The emulator's own state: a pretend Microsoft Advertising tenant, editable in the admin.

Nothing here is adsync data. Staff edit goals, clicks and the failure switches in the admin
to make the emulator answer the way Microsoft would in a given situation; the rules that read
these rows live in emulator/rules.py, not in the models or the views.
"""

from __future__ import annotations

import secrets
import string
from datetime import timedelta

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import F
from django.utils import timezone

DIGITS = RegexValidator(r"^[0-9]{1,18}$", "Digits only (Microsoft ids are 64-bit integers sent as strings).")
MSCLKID = RegexValidator(r"^[0-9a-f]{32}$", "32 lower-case hex characters, as Microsoft auto-tags landing URLs.")

ROLE_SUPER_ADMIN = 41
ROLE_VIEWER = 100
ROLE_STANDARD = 203
ROLES = [(ROLE_SUPER_ADMIN, "41 Super Admin"), (ROLE_STANDARD, "203 Standard User"), (ROLE_VIEWER, "100 Viewer")]


def new_numeric_id() -> str:
    return str(secrets.randbelow(900_000_000) + 100_000_000)


def new_account_number() -> str:
    """The 8-character account number shown in Microsoft's UI (never used by the API)."""
    return "F" + "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(7))


def new_msclkid() -> str:
    return secrets.token_hex(16)


# adsync's OAuth callback: the redirect URI registered for the settings' app and, by default, for
# every OAuth app row. Built the way adsync builds it (ADSYNC_PUBLIC_URL + this fixed path).
ADSYNC_CALLBACK_PATH = "/adsync/oauth/microsoft/callback/"


def adsync_callback_uri() -> str:
    return settings.ADSYNC_PUBLIC_URL.rstrip("/") + ADSYNC_CALLBACK_PATH


class EmulatorUser(models.Model):
    """A Microsoft Advertising user who can sign in on the consent page."""

    user_id = models.CharField("User Id", max_length=18, unique=True, default=new_numeric_id, validators=[DIGITS])
    user_name = models.CharField(max_length=100, unique=True)
    first_name = models.CharField(max_length=100, blank=True)
    last_name = models.CharField(max_length=100, blank=True)
    email = models.EmailField()
    role_id = models.PositiveIntegerField(
        "RoleId", choices=ROLES, default=ROLE_SUPER_ADMIN,
        help_text="Viewers (100) may read but get 106 UserIsNotAuthorized on ApplyOfflineConversions.",
    )

    class Meta:
        ordering = ["user_name"]
        verbose_name = "user"

    def __str__(self) -> str:
        return f"{self.user_name} ({self.get_role_id_display()})"

    @property
    def can_write(self) -> bool:
        return self.role_id != ROLE_VIEWER


class EmulatorAccount(models.Model):
    """An ad account (AdvertiserAccount) under a manager account (ParentCustomerId)."""

    LIFE_CYCLE = ["Active", "Draft", "Inactive", "Pause", "Pending", "Suspended"]

    account_id = models.CharField("Id", max_length=18, unique=True, default=new_numeric_id, validators=[DIGITS])
    parent_customer_id = models.CharField("ParentCustomerId", max_length=18, default=new_numeric_id,
                                          validators=[DIGITS])
    name = models.CharField(max_length=100)
    number = models.CharField(max_length=8, default=new_account_number)
    currency_code = models.CharField(max_length=3, default="USD")
    life_cycle_status = models.CharField("AccountLifeCycleStatus", max_length=20, default="Active",
                                         choices=[(s, s) for s in LIFE_CYCLE])
    users = models.ManyToManyField(EmulatorUser, related_name="accounts", blank=True)
    msclkid_auto_tagging_enabled = models.BooleanField(
        "MSCLKIDAutoTaggingEnabled", default=True,
        help_text="The account property GetAccountProperties reports. On by default, like a new Microsoft "
                  "account; switch it off to see adsync's auto-tagging warning. AddConversionGoals turns it "
                  "back on, as Microsoft does whenever a goal is added.")

    class Meta:
        ordering = ["name"]
        verbose_name = "account"

    def __str__(self) -> str:
        return f"{self.name} ({self.account_id})"


class EmulatorGoal(models.Model):
    """A conversion goal. Only OfflineConversion goals accept ApplyOfflineConversions."""

    ACTIVE, PAUSED = "Active", "Paused"
    OFFLINE = "OfflineConversion"
    REVENUE_TYPES = ["FixedValue", "VariableValue", "NoValue"]
    TYPES = ["OfflineConversion", "Url", "Event", "Duration", "PagesViewedPerVisit", "AppInstall",
             "InStoreTransaction"]

    account = models.ForeignKey(EmulatorAccount, on_delete=models.CASCADE, related_name="goals")
    goal_id = models.CharField("Id", max_length=18, unique=True, default=new_numeric_id, validators=[DIGITS])
    name = models.CharField(max_length=100, help_text="Matched exactly (case and spaces) against ConversionName.")
    status = models.CharField(max_length=10, default=ACTIVE, choices=[(ACTIVE, ACTIVE), (PAUSED, PAUSED)])
    type = models.CharField(max_length=30, default=OFFLINE, choices=[(t, t) for t in TYPES])
    conversion_window_in_minutes = models.PositiveIntegerField(
        default=43200, validators=[MinValueValidator(1), MaxValueValidator(129600)])
    count_type = models.CharField(max_length=10, default="All", choices=[("All", "All"), ("Unique", "Unique")])
    revenue_type = models.CharField(
        "Revenue.Type", max_length=15, blank=True, choices=[(t, t) for t in REVENUE_TYPES],
        help_text="Empty: NoValue without a revenue value, VariableValue with one.")
    revenue_value = models.DecimalField(max_digits=15, decimal_places=3, null=True, blank=True)
    revenue_currency_code = models.CharField(
        "Revenue.CurrencyCode", max_length=3, blank=True, help_text="Empty: the account's currency.")
    is_enhanced_conversions_enabled = models.BooleanField(
        "IsEnhancedConversionsEnabled", default=False,
        help_text="Hashed email/phone without an msclkid is accepted only when this is on.")
    created_at = models.DateTimeField(
        default=timezone.now, help_text="With the 'minimum goal age' switch on, uploads within 2 h get 5615.")

    class Meta:
        ordering = ["account", "name"]
        verbose_name = "goal"
        constraints = [models.UniqueConstraint(fields=["account", "name"], name="emulator_goal_name_unique")]

    def __str__(self) -> str:
        return f"{self.name} ({self.type}, {self.status})"

    @property
    def window(self) -> timedelta:
        return timedelta(minutes=self.conversion_window_in_minutes)

    @property
    def effective_revenue_type(self) -> str:
        return self.revenue_type or ("NoValue" if self.revenue_value is None else "VariableValue")


class EmulatorCampaign(models.Model):
    """A campaign, only so the performance report has rows to show."""

    account = models.ForeignKey(EmulatorAccount, on_delete=models.CASCADE, related_name="campaigns")
    campaign_id = models.CharField("Id", max_length=18, unique=True, default=new_numeric_id, validators=[DIGITS])
    name = models.CharField(max_length=128)
    status = models.CharField(max_length=10, default="Active", choices=[("Active", "Active"), ("Paused", "Paused")])

    class Meta:
        ordering = ["account", "name"]
        verbose_name = "campaign"

    def __str__(self) -> str:
        return self.name


class EmulatorClick(models.Model):
    """The click registry: an msclkid is valid for ApplyOfflineConversions only if it is here."""

    msclkid = models.CharField(max_length=32, unique=True, default=new_msclkid, validators=[MSCLKID])
    account = models.ForeignKey(EmulatorAccount, on_delete=models.CASCADE, related_name="clicks")
    clicked_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-clicked_at"]
        verbose_name = "click"

    def __str__(self) -> str:
        return self.msclkid


class EmulatorApp(models.Model):
    """An extra OAuth app (client id + secret), for connections that bring their own app.

    settings.MICROSOFT_ADS_CLIENT_ID/SECRET is always accepted without a row here.
    """

    client_id = models.CharField(max_length=100, unique=True)
    client_secret = models.CharField(max_length=200)
    name = models.CharField(max_length=100, blank=True)
    redirect_uris = models.TextField(
        "Redirect URIs", default=adsync_callback_uri,
        help_text="One per line, matched exactly (case, trailing slash, query). The authorize endpoint "
                  "refuses any other redirect_uri with AADSTS50011 and never redirects to it.")

    class Meta:
        verbose_name = "OAuth app"

    def __str__(self) -> str:
        return self.name or self.client_id

    def registered_redirect_uris(self) -> list[str]:
        return [line.strip() for line in self.redirect_uris.splitlines() if line.strip()]


class EmulatorToken(models.Model):
    """An authorization code, access token or refresh token issued by the emulator's token endpoint.

    Values are kept in clear text: they are only valid against this emulator, and the demo seed
    needs to hand an existing refresh token back.
    """

    ACCESS, REFRESH, CODE = "access", "refresh", "code"
    KINDS = [(ACCESS, "access token"), (REFRESH, "refresh token"), (CODE, "authorization code")]

    value = models.CharField(max_length=200, unique=True)
    kind = models.CharField(max_length=10, choices=KINDS)
    user = models.ForeignKey(EmulatorUser, on_delete=models.CASCADE, related_name="tokens")
    client_id = models.CharField(max_length=100)
    scope = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    revoked = models.BooleanField(default=False)
    used_at = models.DateTimeField(null=True, blank=True, help_text="When a code or refresh token was spent.")
    redirect_uri = models.CharField(max_length=500, blank=True)
    code_challenge = models.CharField(max_length=200, blank=True)
    code_challenge_method = models.CharField(max_length=10, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "token"
        indexes = [models.Index(fields=["user", "kind", "-created_at"], name="emulator_token_user_kind")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.value[:12]}…"

    @property
    def is_expired(self) -> bool:
        return self.expires_at <= timezone.now()


class EmulatorConversion(models.Model):
    """Every offline conversion the emulator accepted; repeats are kept but flagged duplicate."""

    account = models.ForeignKey(EmulatorAccount, on_delete=models.CASCADE, related_name="conversions")
    goal = models.ForeignKey(EmulatorGoal, on_delete=models.SET_NULL, null=True, blank=True)
    goal_name = models.CharField(max_length=100)
    msclkid = models.CharField(max_length=100, blank=True)
    conversion_time = models.DateTimeField()
    value = models.FloatField(null=True, blank=True)
    currency = models.CharField(max_length=3, blank=True)
    hashed_email = models.CharField(max_length=64, blank=True)
    hashed_phone = models.CharField(max_length=64, blank=True)
    tracking_id = models.CharField(max_length=36)
    received_at = models.DateTimeField(default=timezone.now)
    duplicate = models.BooleanField(default=False, help_text="Same goal, click (or hashes) and time as an earlier one: "
                                                             "accepted silently, not counted.")
    retracted = models.BooleanField(default=False, help_text="Retracted by an adjustment: no longer in reports.")
    restated_value = models.FloatField(null=True, blank=True, help_text="The value of the latest Restate, if any.")
    restated_currency = models.CharField(max_length=3, blank=True)
    restated_at = models.DateTimeField(
        null=True, blank=True, help_text="AdjustmentTime of the Restate in force: a later one replaces it, an "
                                         "earlier one arriving afterwards does not.")

    class Meta:
        ordering = ["-received_at", "-id"]
        verbose_name = "received conversion"
        indexes = [models.Index(fields=["account", "conversion_time"], name="emulator_conv_dedup")]

    def __str__(self) -> str:
        return f"{self.goal_name} · {self.msclkid or 'hashed identity'}"

    def dedup_key(self) -> tuple:
        return dedup_key(self.goal_name, self.msclkid, self.hashed_email, self.hashed_phone, self.conversion_time)

    @property
    def reported_value(self) -> float | None:
        """What reports count as this conversion's revenue: the restated value, else the value sent."""
        return self.restated_value if self.restated_at is not None else self.value


def dedup_key(goal_name: str, msclkid: str, hashed_email: str, hashed_phone: str, conversion_time) -> tuple:
    """Microsoft's duplicate rule (docs/microsoft-api.md#deduplication): same goal, same click (or identity) and same
    conversion time."""
    identity = (msclkid,) if msclkid else ("", hashed_email, hashed_phone)
    return (goal_name, *identity, conversion_time)


class EmulatorAdjustment(models.Model):
    """Every ApplyOfflineConversionAdjustments item the emulator accepted, against the conversion it adjusts."""

    RESTATE, RETRACT = "Restate", "Retract"
    TYPES = [(RESTATE, RESTATE), (RETRACT, RETRACT)]

    account = models.ForeignKey(EmulatorAccount, on_delete=models.CASCADE, related_name="adjustments")
    conversion = models.ForeignKey(EmulatorConversion, on_delete=models.CASCADE, related_name="adjustments")
    adjustment_type = models.CharField(max_length=10, choices=TYPES)
    adjustment_time = models.DateTimeField()
    value = models.FloatField(null=True, blank=True)
    currency = models.CharField(max_length=3, blank=True)
    tracking_id = models.CharField(max_length=36)
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-received_at", "-id"]
        verbose_name = "received adjustment"

    def __str__(self) -> str:
        return f"{self.adjustment_type} · {self.conversion}"


class EmulatorReportRequest(models.Model):
    """A submitted report: the request as received and how many times it was polled."""

    request_id = models.CharField(max_length=40, primary_key=True)
    user = models.ForeignKey(EmulatorUser, on_delete=models.CASCADE)
    body = models.JSONField()
    polls = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "report request"

    def __str__(self) -> str:
        return self.request_id


class EmulatorBehaviour(models.Model):
    """The failure-injection switches (a single row). Counters count down as failures are served."""

    FAIL_NONE, FAIL_500, FAIL_TIMEOUT, FAIL_THROTTLE = "none", "http_500", "timeout", "throttle"
    APPLY_FAILURES = [
        (FAIL_NONE, "none"),
        (FAIL_500, "HTTP 500 (InternalError 0)"),
        (FAIL_TIMEOUT, "time out (sleep, then answer normally)"),
        (FAIL_THROTTLE, "throttle (HTTP 429, CallRateExceeded 117)"),
    ]

    apply_failure = models.CharField(max_length=10, choices=APPLY_FAILURES, default=FAIL_NONE)
    apply_failure_count = models.PositiveIntegerField(
        default=0, help_text="How many of the next ApplyOfflineConversions calls fail this way.")
    timeout_seconds = models.FloatField(
        default=35.0, help_text="How long a 'time out' call sleeps; longer than MICROSOFT_ADS_TIMEOUT (30 s).")
    retry_after_seconds = models.PositiveIntegerField(
        null=True, blank=True, help_text="Retry-After header on throttled answers (empty: no header).")
    token_failure_count = models.PositiveIntegerField(
        default=0, help_text="How many of the next token-endpoint calls answer HTTP 503.")
    refresh_tokens_revoked = models.BooleanField(
        default=False, help_text="While on, every refresh_token grant fails with invalid_grant (consent removed).")
    strict_refresh_rotation = models.BooleanField(
        default=True, help_text="A refresh token works once; reusing a spent one gives invalid_grant. Real "
                                "Entra ID keeps old ones valid; strict mode catches clients that lose the rotated one.")
    enforce_goal_minimum_age = models.BooleanField(
        default=False, help_text="Reject conversions for goals created less than 2 hours ago (5615).")
    report_pending_polls = models.PositiveIntegerField(
        default=1, help_text="How many polls of each report answer Pending before Success.")
    report_failure = models.BooleanField(default=False, help_text="Report polls answer Status Error.")
    report_concurrency_failure_count = models.PositiveIntegerField(
        default=0, help_text="How many of the next report submits fail with 207 ConcurrentRequestOverLimit.")

    class Meta:
        verbose_name = "behaviour switches"
        verbose_name_plural = "behaviour switches"

    def __str__(self) -> str:
        return "Behaviour switches"

    @classmethod
    def load(cls) -> EmulatorBehaviour:
        behaviour, _ = cls.objects.get_or_create(pk=1)
        return behaviour

    @classmethod
    def take(cls, counter: str) -> bool:
        """Spend one unit of a countdown switch; True if this call must fail. Safe under concurrency."""
        cls.load()
        return bool(cls.objects.filter(pk=1, **{f"{counter}__gt": 0}).update(**{counter: F(counter) - 1}))
