"""The project's URLs plus two reference views for bench/ingest_bench.py.

- /bench/bare: reads the body and answers small JSON, no database. It passes through the same
  middleware as /t/v1/collect, so the difference between the two is what the ingest costs.
- /bench/roundtrip: the same plus one `SELECT 1`: the floor of any endpoint that writes to the
  database before it answers, which is what a durable 202 needs.
"""

from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from config.urls import urlpatterns as project_urlpatterns


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


urlpatterns = [path("bench/bare", bare), path("bench/roundtrip", roundtrip), *project_urlpatterns]
