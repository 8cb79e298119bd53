"""The project's URLs plus /bench/bare: a view that reads the body and answers small JSON, no database.

It passes through the same middleware as /t/v1/collect, so the difference between the two is
what the ingest itself costs (validation, lookups, the transaction, the inserts).
"""

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


urlpatterns = [path("bench/bare", bare), *project_urlpatterns]
