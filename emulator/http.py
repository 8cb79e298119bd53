"""The plumbing every emulated API endpoint shares: POST-only JSON, a TrackingId, fault rendering.

`api_endpoint(service)` wraps a view `view(request, call) -> dict`. The wrapper parses the JSON
body, answers with HTTP 200 and the dict, or renders a raised Fault in the service's shape,
and always sets the `TrackingId` response header (docs/microsoft-api.md#request-headers).
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from emulator.faults import Fault, deserialization_fault


def emulator_enabled() -> bool:
    """The emulator answers only in emulator mode, so a production deployment never exposes it."""
    return getattr(settings, "EMULATOR_ENABLED", settings.MICROSOFT_ADS_ENVIRONMENT == "emulator")


def require_enabled() -> None:
    if not emulator_enabled():
        raise Http404("The Microsoft Ads emulator is off (MICROSOFT_ADS_ENVIRONMENT is not 'emulator').")


@dataclass
class ApiCall:
    """What a view needs to know about the call it serves."""

    service: str          # "campaign", "customer" or "reporting"
    tracking_id: str
    body: dict


def json_response(payload: dict, status: int = 200, tracking_id: str = "", headers: dict | None = None):
    response = JsonResponse(payload, status=status, json_dumps_params={"separators": (",", ":")})
    if tracking_id:
        response["TrackingId"] = tracking_id
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def parse_body(request: HttpRequest, service: str) -> dict:
    if not request.body:
        return {}
    try:
        body = json.loads(request.body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise deserialization_fault(f"The body is not valid JSON: {exc}.", service) from None
    if not isinstance(body, dict):
        raise deserialization_fault("The body must be a JSON object.", service)
    return body


def api_endpoint(service: str) -> Callable:
    def decorate(view: Callable[[HttpRequest, ApiCall], dict]) -> Callable:
        @csrf_exempt
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            require_enabled()
            tracking_id = str(uuid.uuid4())
            if request.method != "POST":
                return json_response({"Message": "The requested resource does not support http method "
                                                 f"'{request.method}'."}, 405, tracking_id, {"Allow": "POST"})
            try:
                call = ApiCall(service, tracking_id, parse_body(request, service))
                return json_response(view(request, call, *args, **kwargs), 200, tracking_id)
            except Fault as fault:
                return json_response(fault.body(tracking_id), fault.status, tracking_id, fault.headers)
        return wrapper
    return decorate
