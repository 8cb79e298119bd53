"""Settings for bench/ingest_bench.py only: the project's settings plus a bench-only URLconf.

Production never loads this module. It adds the reference views the ingest endpoint is compared with
(bench/ingest_urls.py), and turns DEBUG off (DEBUG keeps every SQL query in memory, which skews a
benchmark).
"""

from config.settings import *  # noqa: F403

ROOT_URLCONF = "bench.ingest_urls"
MIDDLEWARE = [*MIDDLEWARE]  # noqa: F405
MIDDLEWARE.insert(MIDDLEWARE.index("tracking.middleware.SnippetIngestMiddleware") + 1,
                  "bench.ingest_urls.ValidateOnlyMiddleware")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
LOGGING = {"version": 1, "disable_existing_loggers": False, "root": {"level": "WARNING"}}
# wrk sends every hit from 127.0.0.1 to one site: the rate limits (tracking/limits.py) would answer 429.
ADSYNC_CLIENT_HITS_PER_MINUTE = ADSYNC_SITE_HITS_PER_MINUTE = ADSYNC_INBOX_CAP = 10**9
