"""Settings for bench/ingest_bench.py only: the project's settings plus a bench-only URLconf.

Production never loads this module. It adds one URL, the bare view the ingest endpoint is
compared with, and turns DEBUG off (DEBUG keeps every SQL query in memory, which skews a
benchmark).
"""

from config.settings import *  # noqa: F401,F403

ROOT_URLCONF = "bench.ingest_urls"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
LOGGING = {"version": 1, "disable_existing_loggers": False, "root": {"level": "WARNING"}}
