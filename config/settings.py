"""adsync settings: everything that varies between machines comes from the environment.

The defaults serve a newcomer (SQLite, the django-q2 ORM broker, the built-in Microsoft Ads
emulator); production sets DATABASE_URL, SECRET_KEY, ADSYNC_ENCRYPTION_KEY and
MICROSOFT_ADS_ENVIRONMENT=production. The README's configuration table lists every variable.
"""

import warnings
from pathlib import Path

import dj_database_url

from adsync.security.startup import DEV_SECRET_KEY, insecure_start_problem
from config.env import env, env_bool, env_int, env_list, proxy_ssl_header

BASE_DIR = Path(__file__).resolve().parent.parent

# emulator (the default: the built-in Microsoft Ads emulator and demo shop), sandbox or production.
MICROSOFT_ADS_ENVIRONMENT = env("MICROSOFT_ADS_ENVIRONMENT", "emulator")
EMULATOR_MODE = MICROSOFT_ADS_ENVIRONMENT == "emulator"

SECRET_KEY = env("SECRET_KEY", DEV_SECRET_KEY)
DEBUG = env_bool("DEBUG", EMULATOR_MODE)  # on only for the emulator on a developer's machine
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")

# The public base URL of this adsync instance: used for the snippet URL shown to staff, the
# OAuth redirect URI, links in emails and, in emulator mode, the emulator's own URLs.
ADSYNC_PUBLIC_URL = env("ADSYNC_PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_q",
    "allauth",
    "allauth.account",
    "allauth.mfa",
    "allauth.socialaccount",
    "adsync",
    "tracking",
]
if EMULATOR_MODE:
    # The built-in Microsoft Ads emulator and the demo shop exist only in emulator mode: not
    # installed, not routed otherwise (config/urls.py).
    INSTALLED_APPS.append("emulator")

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # The admin's CSS and JS, collected into STATIC_ROOT by `collectstatic`, served by the web process
    # itself (DEBUG=false serves no static files otherwise).
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "tracking.middleware.SnippetIngestMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "adsync.security.signin.RequireStaffMFAMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        # Health checks: a connection the database dropped (a restart, a failover) is replaced before
        # a request uses it, whether kept by the process (CONN_MAX_AGE) or by the pool below.
        env("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"), conn_max_age=60, conn_health_checks=True
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web server, the worker and the emulator share one SQLite file in the dev default:
    # wait for the write lock instead of failing, and take it at BEGIN (no upgrade deadlocks).
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # The test database is a file too, not Django's shared in-memory one: there a second connection
    # (the inbox's group-commit writer, the shared cache's table) gets "table is locked" at once
    # instead of waiting for the lock, which the file the service runs on never does.
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / ".test-db.sqlite3")}
elif DATABASE_POOL_SIZE := env_int("DATABASE_POOL_SIZE", 0):
    # gunicorn.conf.py sets this for the web processes: under gevent every request is a greenlet
    # with its own Django connection, so without a pool a burst of requests that read the database
    # (a flood of made-up site keys, say) could open as many connections as there are clients.
    # Requests past the pool's size wait for a free connection (up to 10 s, then an error).
    DATABASES["default"]["CONN_MAX_AGE"] = 0  # the pool keeps the connections instead
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1, "max_size": DATABASE_POOL_SIZE, "timeout": 10}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# Where `manage.py collectstatic` puts the admin's CSS and JS for WhiteNoise to serve (production).
STATIC_ROOT = Path(env("STATIC_ROOT", str(BASE_DIR / "staticfiles")))
# Before the first collectstatic (development, tests) WhiteNoise warns that STATIC_ROOT is missing on every
# start; runserver serves the files itself then.
warnings.filterwarnings("ignore", message="No directory at", module="whitenoise.base")

# --- Staff sign-in (django-allauth; docs/notifications.md) ----------------------------------
# Email (or username) + password, TOTP multi-factor, no public sign-up; the admin's login page
# redirects here. The tracking endpoints are public and never pass through any of this.
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/admin/"
ACCOUNT_LOGOUT_REDIRECT_URL = "/accounts/login/"
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
ACCOUNT_ADAPTER = "adsync.security.signin.StaffAccountAdapter"
SOCIALACCOUNT_ADAPTER = "adsync.security.signin.StaffSocialAccountAdapter"
ACCOUNT_LOGIN_METHODS = {"email", "username"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "username*", "password1*", "password2*"]  # sign-up itself is closed
ACCOUNT_EMAIL_VERIFICATION = "none"  # staff accounts are created by a superuser, not by sign-up
MFA_SUPPORTED_TYPES = ["totp", "recovery_codes"]
MFA_TOTP_ISSUER = "adsync"
# On: staff without an authenticator app must set one up before any admin page. Off by default
# so the README's demo login works at once; turn it on in production.
ADSYNC_REQUIRE_MFA = env_bool("ADSYNC_REQUIRE_MFA", False)
# Optional "Sign in with Microsoft" for staff (an Entra ID app registration, redirect URI
# <ADSYNC_PUBLIC_URL>/accounts/microsoft/login/callback/). Staff link it to their account first.
ADSYNC_STAFF_MICROSOFT_CLIENT_ID = env("ADSYNC_STAFF_MICROSOFT_CLIENT_ID", "")
ADSYNC_STAFF_MICROSOFT_CLIENT_SECRET = env("ADSYNC_STAFF_MICROSOFT_CLIENT_SECRET", "")
ADSYNC_STAFF_MICROSOFT_TENANT = env("ADSYNC_STAFF_MICROSOFT_TENANT", "organizations")
SOCIALACCOUNT_PROVIDERS: dict = {}
if ADSYNC_STAFF_MICROSOFT_CLIENT_ID:
    if not ADSYNC_STAFF_MICROSOFT_CLIENT_SECRET:
        raise ValueError("ADSYNC_STAFF_MICROSOFT_CLIENT_SECRET must be set with ADSYNC_STAFF_MICROSOFT_CLIENT_ID")
    INSTALLED_APPS.append("allauth.socialaccount.providers.microsoft")
    SOCIALACCOUNT_PROVIDERS["microsoft"] = {"APPS": [{
        "client_id": ADSYNC_STAFF_MICROSOFT_CLIENT_ID,
        "secret": ADSYNC_STAFF_MICROSOFT_CLIENT_SECRET,
        "settings": {"tenant": ADSYNC_STAFF_MICROSOFT_TENANT},
    }]}

EMAIL_BACKEND = env("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", "adsync@localhost")
# SMTP, used when EMAIL_BACKEND=django.core.mail.backends.smtp.EmailBackend.
EMAIL_HOST = env("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 587)
EMAIL_HOST_USER = env("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", True)
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10)  # alerts are sent from the worker: never hang it

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "adsync": {"handlers": ["console"], "level": env("ADSYNC_LOG_LEVEL", "INFO")},
        # Both log token request and response bodies at DEBUG: never let them.
        "requests_oauthlib": {"level": "WARNING"},
        "oauthlib": {"level": "WARNING"},
    },
}

# --- django-q2: schedules and workers ---------------------------------------------------
# The queue of background jobs. With REDIS_URL (redis://host:6379/0) it is Redis: no polling of
# PostgreSQL by every worker, the choice once there are several worker hosts. Without it, the
# ORM broker: no extra server, and delivery receipts (a job whose worker died is delivered again
# after `retry` seconds), which Redis lacks. Nothing adsync must keep lives only in the queue
# (docs/reliability.md#the-task-broker): hits and sync-log rows are in the database, and the
# schedules re-run the flush and the drain. One worker on SQLite avoids lock fights.
REDIS_URL = env("REDIS_URL", "")
Q_CLUSTER = {
    "name": "adsync",
    **({"redis": REDIS_URL} if REDIS_URL else {"orm": "default"}),
    "workers": env_int("ADSYNC_Q_WORKERS", 1),
    "timeout": 600,
    "retry": 720,
    "max_attempts": 1,
    "ack_failures": True,
    "catch_up": False,
    "poll": 2,
    "time_zone": "UTC",
    "label": "Task queue",
}

# --- Secrets at rest ------------------------------------------------------------------------
# Comma-separated Fernet keys, newest first (MultiFernet): add a new key in front to rotate.
# Empty means "derive one from SECRET_KEY", allowed only in emulator mode with DEBUG on (below).
ADSYNC_ENCRYPTION_KEYS = env_list("ADSYNC_ENCRYPTION_KEY", "")

# --- Security (docs/security.md) --------------------------------------------------------------
# Production refuses to start on the repository's defaults: one line names the variable to set.
_problem = insecure_start_problem(emulator=EMULATOR_MODE, debug=DEBUG, secret_key=SECRET_KEY,
                                  encryption_keys=ADSYNC_ENCRYPTION_KEYS)
if _problem:
    raise SystemExit(f"adsync will not start: {_problem}")
# HTTPS: docs/security.md lists the production environment under which `check --deploy` is clean.
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)
# Behind a proxy that ends TLS: the header it sets on HTTPS requests, e.g. "X-Forwarded-Proto: https".
SECURE_PROXY_SSL_HEADER = proxy_ssl_header("SECURE_PROXY_SSL_HEADER")
# Proxies in front of adsync that append to X-Forwarded-For: the client address (rate limits, login
# throttling) is the entry that many places from the right. 0: the connecting address (REMOTE_ADDR).
ADSYNC_TRUSTED_PROXY_COUNT = env_int("ADSYNC_TRUSTED_PROXY_COUNT", 0)
ALLAUTH_TRUSTED_PROXY_COUNT = ADSYNC_TRUSTED_PROXY_COUNT
# Error reports (error e-mails, error trackers) never show the public endpoints' bodies.
DEFAULT_EXCEPTION_REPORTER_FILTER = "adsync.security.error_reports.BodyHidingFilter"

# --- The shared cache: login throttling and the snippet's rate limits --------------------------
# Every web process must see the same counts, so never a per-process cache: Redis when REDIS_URL is
# set, else a table in the database (created by `migrate`, adsync/migrations).
# (REDIS_URL is read above, with the job queue.)
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL,
                          "KEY_PREFIX": "adsync"}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "adsync_cache",
                          "OPTIONS": {"MAX_ENTRIES": 100_000}}}

# --- Microsoft Advertising ------------------------------------------------------------------
_EMULATOR = f"{ADSYNC_PUBLIC_URL}/emulator"
_MICROSOFT_HOSTS = {
    # Reference: docs/microsoft-api.md#hosts-and-environments and #oauth-endpoints.
    "production": {
        "OAUTH_AUTHORIZE_URL": "https://login.microsoftonline.com/common/oauth2/v2.0/authorize",
        "OAUTH_TOKEN_URL": "https://login.microsoftonline.com/common/oauth2/v2.0/token",
        "OAUTH_SCOPE": "https://ads.microsoft.com/msads.manage offline_access",
        "CAMPAIGN_API_URL": "https://campaign.api.bingads.microsoft.com",
        "CUSTOMER_API_URL": "https://clientcenter.api.bingads.microsoft.com",
        "REPORTING_API_URL": "https://reporting.api.bingads.microsoft.com",
    },
    "sandbox": {
        "OAUTH_AUTHORIZE_URL": "https://login.microsoftonline.com/common/oauth2/v2.0/authorize",
        "OAUTH_TOKEN_URL": "https://login.microsoftonline.com/common/oauth2/v2.0/token",
        "OAUTH_SCOPE": "https://si.ads.microsoft.com/msads.manage offline_access",
        "CAMPAIGN_API_URL": "https://campaign.api.sandbox.bingads.microsoft.com",
        "CUSTOMER_API_URL": "https://clientcenter.api.sandbox.bingads.microsoft.com",
        "REPORTING_API_URL": "https://reporting.api.sandbox.bingads.microsoft.com",
    },
    "emulator": {
        "OAUTH_AUTHORIZE_URL": f"{_EMULATOR}/oauth2/v2.0/authorize",
        "OAUTH_TOKEN_URL": f"{_EMULATOR}/oauth2/v2.0/token",
        "OAUTH_SCOPE": "https://ads.microsoft.com/msads.manage offline_access",
        "CAMPAIGN_API_URL": f"{_EMULATOR}/campaign",
        "CUSTOMER_API_URL": f"{_EMULATOR}/clientcenter",
        "REPORTING_API_URL": f"{_EMULATOR}/reporting",
    },
}
if MICROSOFT_ADS_ENVIRONMENT not in _MICROSOFT_HOSTS:
    raise ValueError(
        "MICROSOFT_ADS_ENVIRONMENT must be one of production, sandbox, emulator; "
        f"got {MICROSOFT_ADS_ENVIRONMENT!r}"
    )
for _name, _default in _MICROSOFT_HOSTS[MICROSOFT_ADS_ENVIRONMENT].items():
    globals()[f"MICROSOFT_ADS_{_name}"] = env(f"MICROSOFT_ADS_{_name}", _default).rstrip("/")

MICROSOFT_ADS_CLIENT_ID = env("MICROSOFT_ADS_CLIENT_ID", "adsync-emulator-client")
MICROSOFT_ADS_CLIENT_SECRET = env("MICROSOFT_ADS_CLIENT_SECRET", "adsync-emulator-secret")
# BBD37VB98 is Microsoft's universal sandbox developer token; the emulator accepts it too.
MICROSOFT_ADS_DEVELOPER_TOKEN = env("MICROSOFT_ADS_DEVELOPER_TOKEN", "BBD37VB98")
MICROSOFT_ADS_TIMEOUT = float(env("MICROSOFT_ADS_TIMEOUT", "30"))
MICROSOFT_ADS_BATCH_SIZE = env_int("MICROSOFT_ADS_BATCH_SIZE", 1000)

# --- Push pipeline ------------------------------------------------------------------------------
# How long a claimed batch is reserved for the worker that claimed it. A worker that dies
# mid-batch leaves its rows queued; they are reclaimed after this lease and re-sent with the
# identical ConversionTime, which Microsoft de-duplicates.
ADSYNC_CLAIM_LEASE_SECONDS = env_int("ADSYNC_CLAIM_LEASE_SECONDS", 300)
# How long a web process trusts its copy of a site (allowed origins, currency, country) for the snippet's hits.
ADSYNC_SITE_CACHE_SECONDS = env_int("ADSYNC_SITE_CACHE_SECONDS", 30)
# Concurrent ApplyOfflineConversions calls per connection during a flush (PostgreSQL only; max 10).
ADSYNC_FLUSH_LANES = env_int("ADSYNC_FLUSH_LANES", 2)
ADSYNC_FLUSH_MINUTES = env_int("ADSYNC_FLUSH_MINUTES", 2)
# How often the worker stores the snippet's accepted hits (adsync/intake/inbox.py); every flush does it first too.
ADSYNC_INBOX_MINUTES = env_int("ADSYNC_INBOX_MINUTES", 1)
# The snippet's hits waiting in one web process share one INSERT and one commit (tracking/group_commit.py).
ADSYNC_INBOX_GROUP_COMMIT = env_bool("ADSYNC_INBOX_GROUP_COMMIT", True)
# Drain tasks storing a backlog at once (PostgreSQL; needs as many django-q workers, ADSYNC_Q_WORKERS).
ADSYNC_INBOX_DRAINERS = env_int("ADSYNC_INBOX_DRAINERS", 1)
# Proactive token refresh (adsync.connections.lifecycle): tokens expiring within 15 minutes while pushes wait,
# and every connection not refreshed for 7 days. See docs/connections.md.
ADSYNC_TOKEN_REFRESH_MINUTES = env_int("ADSYNC_TOKEN_REFRESH_MINUTES", 10)
ADSYNC_RETENTION_DAYS = env_int("ADSYNC_RETENTION_DAYS", 90)
ADSYNC_MAX_BODY_BYTES = env_int("ADSYNC_MAX_BODY_BYTES", 16 * 1024)
# What browsers may send (tracking/limits.py, docs/security.md): hits per minute from one client address
# and to one site, counted across every web process (the shared cache); past them 429 + Retry-After.
ADSYNC_CLIENT_HITS_PER_MINUTE = env_int("ADSYNC_CLIENT_HITS_PER_MINUTE", 120)
ADSYNC_SITE_HITS_PER_MINUTE = env_int("ADSYNC_SITE_HITS_PER_MINUTE", 6000)
# A site whose inbox holds this many hits not yet stored gets 503 + Retry-After until the worker catches up.
ADSYNC_INBOX_CAP = env_int("ADSYNC_INBOX_CAP", 100_000)
# Transient failures (network, 5xx, 0, 5612, 5614, 5615) retry with exponential backoff and
# jitter; after this many attempts the row becomes `error` with Microsoft's last message.
ADSYNC_MAX_ATTEMPTS = env_int("ADSYNC_MAX_ATTEMPTS", 8)
# Client-side request limit per account (Microsoft publishes none; vendors quote 1,000/min).
ADSYNC_REQUESTS_PER_MINUTE = env_int("ADSYNC_REQUESTS_PER_MINUTE", 1000)
# Microsoft asks to wait an hour after the click before uploading; conversions whose click is
# younger are held. The emulator has no processing lag, so its default is 0 (see README).
ADSYNC_CLICK_HOLD_MINUTES = env_int(
    "ADSYNC_CLICK_HOLD_MINUTES", 0 if MICROSOFT_ADS_ENVIRONMENT == "emulator" else 60
)

# --- Insights (campaign performance reports, docs/insights.md) ------------------------------
# Microsoft has no plain "UTC" report time zone (docs/microsoft-api.md#report-time-zone). GMT (London) is UTC for five
# months and UTC+1 during British Summer Time: the closest match to our UTC day boundaries.
ADSYNC_INSIGHTS_REPORT_TIME_ZONE = env(
    "ADSYNC_INSIGHTS_REPORT_TIME_ZONE", "GreenwichMeanTimeDublinEdinburghLisbonLondon"
)
# Poll bound: the first poll at once, then waits of 5, 10, 20, 40, then 60 s; 10 polls wait about
# 7 minutes in all, inside the django-q2 task timeout (600 s). A report still Pending then is
# left for the next run.
ADSYNC_INSIGHTS_MAX_POLLS = env_int("ADSYNC_INSIGHTS_MAX_POLLS", 10)

# --- Diagnosis and reconciliation (docs/diagnosis.md) ----------------------------------------
# Reconciliation warns when, over the days past Microsoft's reporting lag, the conversions a goal
# counts differ from those adsync sent and Microsoft accepted by at least this percentage.
ADSYNC_RECONCILE_GAP_PERCENT = env_int("ADSYNC_RECONCILE_GAP_PERCENT", 20)
if not 1 <= ADSYNC_RECONCILE_GAP_PERCENT <= 100:
    raise ValueError(f"ADSYNC_RECONCILE_GAP_PERCENT must be between 1 and 100, got {ADSYNC_RECONCILE_GAP_PERCENT}")

# --- Staff notifications: sync digest and alerts (docs/notifications.md) -------------------
# The daily digest's cron line, in UTC (django-q2 schedule adsync:digest; run setup_schedules
# after changing it).
ADSYNC_DIGEST_CRON = env("ADSYNC_DIGEST_CRON", "0 7 * * *")
from croniter import croniter as _croniter  # noqa: E402  (validated at start-up, not at 07:00)

if not _croniter.is_valid(ADSYNC_DIGEST_CRON):
    raise ValueError(f"ADSYNC_DIGEST_CRON must be a cron line such as '0 7 * * *', got {ADSYNC_DIGEST_CRON!r}")
# The digest warns about a connection whose pending_identity share reaches this percentage.
ADSYNC_DIGEST_PENDING_SHARE = env_int("ADSYNC_DIGEST_PENDING_SHARE", 30)
# An alert email goes out when one flush produces more error rows than this.
ADSYNC_ALERT_ERROR_THRESHOLD = env_int("ADSYNC_ALERT_ERROR_THRESHOLD", 50)
