"""The project's URLs plus two reference views for bench/ingest_bench.py.

- /bench/bare: reads the body and answers small JSON, no database. It passes through the same
  middleware as /t/v1/collect, so the difference between the two is what the ingest costs.
- /bench/roundtrip: the same plus one `SELECT 1` in the request.
- /bench/writer: this process's group-commit writer's counts (hits, commits).
- /bench/validate: /t/v1/collect without writing the hit; ValidateOnlyMiddleware gives it the
  same short path past the staff middleware (tracking/middleware.py), so the difference between
  it and collect is the durable write.
"""

import os

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from config.urls import urlpatterns as project_urlpatterns
from tracking import http, payloads
from tracking.accept import group_writer
from tracking.site_cache import site_for_key


@csrf_exempt
def bare(request: HttpRequest) -> JsonResponse:
    """Django's floor: routing, middleware, reading the body, a JSON answer."""
    response = JsonResponse({"ok": True, "size": len(request.body)})
    response["Access-Control-Allow-Origin"] = request.headers.get("Origin", "*")
    return response


@csrf_exempt
def roundtrip(request: HttpRequest) -> JsonResponse:
    """The bare view plus one database round trip."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return bare(request)


def validate(request: HttpRequest) -> HttpResponse:
    """tracking.views.collect for a valid conversion, up to (not including) accept.accept."""
    origin = request.headers.get("Origin")
    data = payloads.read_json(request)
    site = site_for_key(payloads.site_key(data))
    if site is None or not site.allows_origin(origin) or not payloads.parse_collect(data, site):
        return http.json_error(400, "the bench sends valid conversions only")
    return http.allow_origin(JsonResponse({"ok": True, "accepted": "conversion"}, status=202), origin)


def writer_stats(request: HttpRequest) -> JsonResponse:
    """GET: this process's group-commit writer so far: hits written and commits (tracking/group_commit.py)."""
    return JsonResponse({"pid": os.getpid(), "rows": group_writer.rows, "batches": group_writer.batches})


class ValidateOnlyMiddleware:
    """Listed right after tracking's SnippetIngestMiddleware in bench/ingest_settings.py."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method == "POST" and request.path_info == "/bench/validate":
            return validate(request)
        return self.get_response(request)


urlpatterns = [path("bench/bare", bare), path("bench/roundtrip", roundtrip), path("bench/writer", writer_stats),
               *project_urlpatterns]
