"""HTTP plumbing for the ingest views: JSON errors, CORS for the snippet, bearer auth for the API."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.cache import patch_vary_headers
from django.views.decorators.debug import sensitive_variables

from adsync.models import Site
from adsync.sites import api_secrets
from tracking.payloads import storable
from tracking.site_cache import site_for_key

PREFLIGHT_MAX_AGE = 86400


def json_error(status: int, detail: str | list[str], **headers: str) -> JsonResponse:
    response = JsonResponse({"error": detail}, status=status)
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


def method_not_allowed(*allowed: str) -> JsonResponse:
    return json_error(405, f"method: use {' or '.join(allowed)}", Allow=", ".join(allowed))


# --- CORS (the snippet's calls from client pages) -----------------------------------------------

def allow_origin(response: HttpResponse, origin: str | None) -> HttpResponse:
    """Let the page at `origin` read the response; the caller has checked the origin is allowed."""
    if origin:
        response["Access-Control-Allow-Origin"] = origin
        response["Access-Control-Expose-Headers"] = "Retry-After"  # the snippet's retry queue waits that long
    patch_vary_headers(response, ["Origin"])
    return response


def allow_any_origin(response: HttpResponse) -> HttpResponse:
    """For answers that say only "not now" (429, 503): any page may read them and their Retry-After.

    They are given before the site, hence its allowed origins, is known (or without looking it up
    again), and carry nothing about any site."""
    response["Access-Control-Allow-Origin"] = "*"
    response["Access-Control-Expose-Headers"] = "Retry-After"
    return response


def too_many(seconds: int) -> JsonResponse:
    return allow_any_origin(json_error(429, "rate: too many reports, try again later", Retry_After=str(seconds)))


def origin_allowed_by_any_site(origin: str) -> bool:
    """A preflight carries no body, hence no site key: accept origins some site lists."""
    candidates = Site.objects.filter(allowed_origins__contains=origin.rstrip("/"))
    return any(site.allows_origin(origin) for site in candidates)


def preflight(request: HttpRequest) -> HttpResponse:
    origin = request.headers.get("Origin")
    if not origin:
        response = HttpResponse(status=204)
        response["Allow"] = "POST, OPTIONS"
        return response
    key = request.GET.get("site")
    site = site_for_key(key) if key and storable(key) else None
    allowed = site.allows_origin(origin) if site else (not key and origin_allowed_by_any_site(origin))
    if not allowed:
        return allow_origin(json_error(403, "origin: is not an allowed origin for this site"), None)
    response = allow_origin(HttpResponse(status=204), origin)
    response["Access-Control-Allow-Methods"] = "POST"
    response["Access-Control-Allow-Headers"] = "Content-Type"
    response["Access-Control-Max-Age"] = str(PREFLIGHT_MAX_AGE)
    return response


# --- Bearer auth (the server API) -----------------------------------------------------------------

@sensitive_variables("token")
def bearer_site(request: HttpRequest) -> Site | JsonResponse:
    """The site whose API secret is the bearer token, or the 401 to answer with."""
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return json_error(
            401, "authorization: send the site's API secret as 'Authorization: Bearer <secret>'",
            WWW_Authenticate='Bearer realm="adsync"',
        )
    site = api_secrets.site_for(token.strip())
    if site is None:
        return json_error(
            401, "authorization: unknown or revoked API secret",
            WWW_Authenticate='Bearer realm="adsync", error="invalid_token"',
        )
    return site
