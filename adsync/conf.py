"""adsync's settings, typed and documented: the one place adsync code reads them.

config/settings.py reads each value from its environment variable (the README's configuration
table lists them with their defaults); code asks `conf`, never `django.conf.settings`, so a
setting has one name, one type and one explanation. Every property reads Django's settings at
call time, so `override_settings` and pytest-django's `settings` fixture work in tests.
"""

from __future__ import annotations

from django.conf import settings


class AdsyncSettings:
    """Attribute access to adsync's settings; see each property for its variable and default."""

    # --- The instance ------------------------------------------------------------------------

    @property
    def public_url(self) -> str:
        """ADSYNC_PUBLIC_URL (http://127.0.0.1:8000): snippet URL, OAuth redirect URI, email links."""
        return settings.ADSYNC_PUBLIC_URL

    @property
    def environment(self) -> str:
        """MICROSOFT_ADS_ENVIRONMENT (emulator): production, sandbox or emulator."""
        return settings.MICROSOFT_ADS_ENVIRONMENT

    @property
    def is_emulator(self) -> bool:
        return self.environment == "emulator"

    @property
    def secret_key(self) -> str:
        """Django's SECRET_KEY: only the dev-mode fallback of the encryption key derives from it."""
        return settings.SECRET_KEY

    @property
    def encryption_keys(self) -> list[str]:
        """ADSYNC_ENCRYPTION_KEY (empty: derived from SECRET_KEY, dev only): Fernet keys, newest first."""
        return list(settings.ADSYNC_ENCRYPTION_KEYS)

    @property
    def trusted_proxy_count(self) -> int:
        """ADSYNC_TRUSTED_PROXY_COUNT (0): proxies in front that append to X-Forwarded-For; 0 reads REMOTE_ADDR."""
        return settings.ADSYNC_TRUSTED_PROXY_COUNT

    @property
    def require_mfa(self) -> bool:
        """ADSYNC_REQUIRE_MFA (false): staff must set up an authenticator app before any admin page."""
        return settings.ADSYNC_REQUIRE_MFA

    @property
    def default_from_email(self) -> str:
        """DEFAULT_FROM_EMAIL (adsync@localhost): sender of digests and alerts."""
        return settings.DEFAULT_FROM_EMAIL

    # --- Microsoft Advertising ----------------------------------------------------------------

    @property
    def oauth_authorize_url(self) -> str:
        """MICROSOFT_ADS_OAUTH_AUTHORIZE_URL (per environment): the identity platform's authorize endpoint."""
        return settings.MICROSOFT_ADS_OAUTH_AUTHORIZE_URL

    @property
    def oauth_token_url(self) -> str:
        """MICROSOFT_ADS_OAUTH_TOKEN_URL (per environment): the token endpoint."""
        return settings.MICROSOFT_ADS_OAUTH_TOKEN_URL

    @property
    def oauth_scope(self) -> str:
        """MICROSOFT_ADS_OAUTH_SCOPE (per environment): space-separated scopes, offline_access included."""
        return settings.MICROSOFT_ADS_OAUTH_SCOPE

    @property
    def campaign_api_url(self) -> str:
        """MICROSOFT_ADS_CAMPAIGN_API_URL (per environment): Campaign Management REST base."""
        return settings.MICROSOFT_ADS_CAMPAIGN_API_URL

    @property
    def customer_api_url(self) -> str:
        """MICROSOFT_ADS_CUSTOMER_API_URL (per environment): Customer Management REST base."""
        return settings.MICROSOFT_ADS_CUSTOMER_API_URL

    @property
    def reporting_api_url(self) -> str:
        """MICROSOFT_ADS_REPORTING_API_URL (per environment): Reporting REST base."""
        return settings.MICROSOFT_ADS_REPORTING_API_URL

    @property
    def client_id(self) -> str:
        """MICROSOFT_ADS_CLIENT_ID (the emulator's demo app): the Azure app; a connection may override it."""
        return settings.MICROSOFT_ADS_CLIENT_ID

    @property
    def client_secret(self) -> str:
        """MICROSOFT_ADS_CLIENT_SECRET (the emulator's demo secret)."""
        return settings.MICROSOFT_ADS_CLIENT_SECRET

    @property
    def developer_token(self) -> str:
        """MICROSOFT_ADS_DEVELOPER_TOKEN (BBD37VB98, Microsoft's sandbox token)."""
        return settings.MICROSOFT_ADS_DEVELOPER_TOKEN

    @property
    def timeout(self) -> float:
        """MICROSOFT_ADS_TIMEOUT (30): seconds before a call to Microsoft counts as failed."""
        return float(settings.MICROSOFT_ADS_TIMEOUT)

    @property
    def batch_size(self) -> int:
        """MICROSOFT_ADS_BATCH_SIZE (1000): conversions per request, never more than Microsoft's 1,000."""
        return max(1, min(int(settings.MICROSOFT_ADS_BATCH_SIZE), 1000))

    # --- The push pipeline --------------------------------------------------------------------

    @property
    def flush_minutes(self) -> int:
        """ADSYNC_FLUSH_MINUTES (2): the flush schedule's interval."""
        return settings.ADSYNC_FLUSH_MINUTES

    @property
    def flush_lanes(self) -> int:
        """ADSYNC_FLUSH_LANES (2): concurrent ApplyOfflineConversions calls per account (PostgreSQL; ≤ 10)."""
        return settings.ADSYNC_FLUSH_LANES

    @property
    def claim_lease_seconds(self) -> int:
        """ADSYNC_CLAIM_LEASE_SECONDS (300): how long a worker holds a claimed batch before others may resend it."""
        return settings.ADSYNC_CLAIM_LEASE_SECONDS

    @property
    def max_attempts(self) -> int:
        """ADSYNC_MAX_ATTEMPTS (8): transient failures retry with backoff this many times, then `error`."""
        return settings.ADSYNC_MAX_ATTEMPTS

    @property
    def requests_per_minute(self) -> int:
        """ADSYNC_REQUESTS_PER_MINUTE (1000): client-side request limit per account (Microsoft publishes none)."""
        return settings.ADSYNC_REQUESTS_PER_MINUTE

    @property
    def click_hold_minutes(self) -> int:
        """ADSYNC_CLICK_HOLD_MINUTES (60; 0 with the emulator): conversions of a younger click are held."""
        return settings.ADSYNC_CLICK_HOLD_MINUTES

    @property
    def retention_days(self) -> int:
        """ADSYNC_RETENTION_DAYS (90): clicks, inbox hits, click ids and hashes older than this are purged daily."""
        return settings.ADSYNC_RETENTION_DAYS

    @property
    def token_refresh_minutes(self) -> int:
        """ADSYNC_TOKEN_REFRESH_MINUTES (10): the proactive token-refresh schedule's interval."""
        return settings.ADSYNC_TOKEN_REFRESH_MINUTES

    # --- Background jobs ------------------------------------------------------------------------

    @property
    def redis_url(self) -> str:
        """REDIS_URL (empty): Redis for django-q2's job queue and the shared cache (rate limits, login
        throttling); empty: both in the database."""
        return settings.REDIS_URL

    @property
    def task_broker(self) -> str:
        """"redis" when REDIS_URL is set, else "orm": where django-q2 keeps queued jobs (config/settings.py)."""
        return "redis" if self.redis_url else "orm"

    # --- Ingest and the inbox -----------------------------------------------------------------

    @property
    def max_body_bytes(self) -> int:
        """ADSYNC_MAX_BODY_BYTES (16384): the largest accepted ingest body."""
        return settings.ADSYNC_MAX_BODY_BYTES

    @property
    def client_hits_per_minute(self) -> int:
        """ADSYNC_CLIENT_HITS_PER_MINUTE (120): snippet hits one client address may send a minute, then 429."""
        return settings.ADSYNC_CLIENT_HITS_PER_MINUTE

    @property
    def site_hits_per_minute(self) -> int:
        """ADSYNC_SITE_HITS_PER_MINUTE (6000): snippet hits one site may take a minute, then 429."""
        return settings.ADSYNC_SITE_HITS_PER_MINUTE

    @property
    def inbox_cap(self) -> int:
        """ADSYNC_INBOX_CAP (100000): waiting inbox hits per site before the snippet endpoint answers 503."""
        return max(1, settings.ADSYNC_INBOX_CAP)

    @property
    def site_cache_seconds(self) -> int:
        """ADSYNC_SITE_CACHE_SECONDS (30): how long a web process trusts its copy of a site."""
        return settings.ADSYNC_SITE_CACHE_SECONDS

    @property
    def inbox_minutes(self) -> int:
        """ADSYNC_INBOX_MINUTES (1): how often the worker stores the snippet's accepted hits."""
        return settings.ADSYNC_INBOX_MINUTES

    @property
    def inbox_group_commit(self) -> bool:
        """ADSYNC_INBOX_GROUP_COMMIT (true): a web process's waiting hits share one INSERT and commit."""
        return settings.ADSYNC_INBOX_GROUP_COMMIT

    @property
    def inbox_drainers(self) -> int:
        """ADSYNC_INBOX_DRAINERS (1): drain tasks storing a backlog side by side (PostgreSQL)."""
        return settings.ADSYNC_INBOX_DRAINERS

    # --- Insights -----------------------------------------------------------------------------

    @property
    def insights_report_time_zone(self) -> str:
        """ADSYNC_INSIGHTS_REPORT_TIME_ZONE (London): Microsoft's ReportTimeZone; there is no plain UTC."""
        return settings.ADSYNC_INSIGHTS_REPORT_TIME_ZONE

    @property
    def insights_max_polls(self) -> int:
        """ADSYNC_INSIGHTS_MAX_POLLS (10): report polls before a Pending report is left for the next run."""
        return settings.ADSYNC_INSIGHTS_MAX_POLLS

    # --- Diagnosis ---------------------------------------------------------------------------

    @property
    def reconcile_gap_percent(self) -> int:
        """ADSYNC_RECONCILE_GAP_PERCENT (20): a goal whose Microsoft count differs from what adsync sent by this
        much (past the reporting lag) is a warning in the diagnosis and the digest."""
        return settings.ADSYNC_RECONCILE_GAP_PERCENT

    # --- Notifications ------------------------------------------------------------------------

    @property
    def digest_cron(self) -> str:
        """ADSYNC_DIGEST_CRON (0 7 * * *): when the daily sync digest goes out, UTC."""
        return settings.ADSYNC_DIGEST_CRON

    @property
    def digest_pending_share(self) -> int:
        """ADSYNC_DIGEST_PENDING_SHARE (30): the digest flags a pending_identity share from this percentage."""
        return settings.ADSYNC_DIGEST_PENDING_SHARE

    @property
    def alert_error_threshold(self) -> int:
        """ADSYNC_ALERT_ERROR_THRESHOLD (50): one flush with more error rows than this emails staff."""
        return settings.ADSYNC_ALERT_ERROR_THRESHOLD


conf = AdsyncSettings()
