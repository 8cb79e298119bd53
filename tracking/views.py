"""Thin views: the snippet, the browser ingest and the server API.

Validation lives in tracking/payloads.py; the snippet's reports go to the inbox (tracking/accept.py),
within the bounds of tracking/limits.py; the server API's are stored at once (adsync/intake/record.py).
Request bodies are never logged, nor shown in error reports (sensitive_variables,
sensitive_post_parameters, adsync/security/error_reports.py): they hold raw email addresses and
phone numbers until payloads.py hashes them, and the API's Authorization header holds the secret.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import replace
from pathlib import Path

from django.db import OperationalError, transaction
from django.db import connection as db_connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables
from django.views.decorators.http import require_safe

from adsync.conf import conf
from adsync.intake import record
from adsync.intake.adjustments import AdjustmentRefused, adjust
from adsync.intake.reports import ConversionPayload
from adsync.models import Adjustment, Conversion, Push, Site, format_conversion_time
from adsync.sites import api_secrets
from tracking import accept, http, limits, payloads
from tracking.group_commit import CommitTimeout
from tracking.payloads import PayloadError
from tracking.site_cache import site_for_key

log = logging.getLogger(__name__)
SNIPPET_PATH = Path(__file__).resolve().parent / "static" / "tracking" / "adsync.js"
SNIPPET_MAX_AGE = 3600
BUSY_RETRY_SECONDS = 60  # the commit did not finish in 30 s: the database is struggling
DATABASE_RETRY_SECONDS = 10  # the database did not answer: usually a restart or a failover, soon over
INBOX_FULL_RETRY_SECONDS = 60  # the worker drains the inbox every minute


@functools.cache
def snippet_source() -> bytes:
    """Read once per process: the file only changes with a deploy, which restarts the process."""
    return SNIPPET_PATH.read_bytes()


@require_safe
def snippet(request: HttpRequest) -> HttpResponse:
    response = HttpResponse(snippet_source(), content_type="application/javascript")
    response["Cache-Control"] = f"public, max-age={SNIPPET_MAX_AGE}"
    response["Access-Control-Allow-Origin"] = "*"
    # Client pages that set Cross-Origin-Embedder-Policy can still load it.
    response["Cross-Origin-Resource-Policy"] = "cross-origin"
    return response


@csrf_exempt
@sensitive_post_parameters()
@sensitive_variables("data")
def collect(request: HttpRequest) -> HttpResponse:
    """POST /t/v1/collect: a click or a conversion reported by the snippet."""
    if request.method == "OPTIONS":
        return http.preflight(request)
    if request.method != "POST":
        return http.method_not_allowed("POST", "OPTIONS")
    origin = request.headers.get("Origin")
    if wait := limits.client_over_limit(request):
        return http.too_many(wait)
    site: Site | None = None
    try:
        data = payloads.read_json(request)
        site = site_for_key(payloads.site_key(data))
        if site is None:
            raise PayloadError("site", "unknown site key", status=404)
        if origin is None:  # every browser sends one with the snippet's call; anything else is not the snippet
            raise PayloadError("origin", "the Origin header is required: servers report through /api/v1/conversions",
                               status=403)
        if not site.allows_origin(origin):
            raise PayloadError("origin", f"{origin[:200]} is not an allowed origin for this site", status=403)
        event = payloads.parse_collect(data, site)
        if isinstance(event, ConversionPayload):
            event = signed(site, event, payloads.signature(data))
    except PayloadError as error:
        # Only an allowed origin may read the error; any other gets an opaque CORS failure.
        readable = site is not None and site.allows_origin(origin)
        return http.allow_origin(http.json_error(error.status, error.detail), origin if readable else None)
    except OperationalError as error:  # the site's lookup: database down, or every pooled connection busy
        return busy(origin, error)
    if wait := limits.site_over_limit(site):
        return http.allow_origin(http.too_many(wait), origin)
    # Stored by the worker (adsync/intake/inbox.py): the answer says the report was accepted, not what became of it.
    try:
        if limits.inbox_full(site):
            log.warning("site %s: the inbox holds %s hits not yet stored; refusing more", site.pk, conf.inbox_cap)
            return http.allow_origin(http.json_error(503, "inbox: full, try again later", Retry_After=str(
                INBOX_FULL_RETRY_SECONDS)), origin)
        kind = accept.accept(site, event)
    except accept.SiteGone:
        return http.allow_origin(http.json_error(404, "site: unknown site key"), None)
    except (OperationalError, CommitTimeout) as error:  # database down, or stuck
        return busy(origin, error)
    limits.accepted(site)
    return http.allow_origin(JsonResponse({"ok": True, "accepted": kind}, status=202), origin)


def signed(site: Site, report: ConversionPayload, signature: str) -> ConversionPayload:
    """The report, marked signed when its signature is valid; a site taking signed conversions only refuses the rest."""
    if not signature and not site.signed_browser_conversions:
        return report
    if site.signed_browser_conversions and report.order_id is None:
        raise PayloadError("orderId", "is required: this site accepts signed browser conversions only")
    if api_secrets.valid_signature(site, signature, report.order_id, report.value, report.currency):
        return replace(report, signed=True)
    if site.signed_browser_conversions:
        problem = "does not match this order" if signature else "is required: this site accepts signed conversions only"
        raise PayloadError("signature", problem, status=403)
    return report  # a wrong signature on a site that does not ask for one: an unsigned report, as if absent


def busy(origin: str | None, error: Exception) -> HttpResponse:
    """The report was not stored: say so, and when the browser may try again (never a bare 500)."""
    log.warning("snippet report refused, not stored: %s: %s", type(error).__name__, error)
    retry = BUSY_RETRY_SECONDS if isinstance(error, CommitTimeout) else DATABASE_RETRY_SECONDS
    return http.allow_any_origin(http.json_error(503, "service: busy, try again later", Retry_After=str(retry)))


@csrf_exempt
@sensitive_post_parameters()
@sensitive_variables("items")
def api_conversions(request: HttpRequest) -> HttpResponse:
    """POST /api/v1/conversions: one conversion, or {"conversions": [...]} (≤100, all-or-nothing)."""
    if request.method != "POST":
        return http.method_not_allowed("POST")
    try:
        site = http.bearer_site(request)
    except OperationalError as error:
        return api_busy(error)
    if isinstance(site, HttpResponse):
        return site
    try:
        items, is_batch = payloads.parse_api(payloads.read_json(request), site, timezone.now())
    except PayloadError as error:
        return http.json_error(error.status, error.detail)
    try:
        results = store_once_more_on_a_dropped_connection(site, items)
    except record.ConversionRefused as refused:  # Microsoft would refuse them: say so now, store nothing
        return http.json_error(400, [f"conversions[{i}].{field}: {problem}" for i, field, problem in refused.problems]
                               if is_batch else str(refused))
    except OperationalError as error:
        return api_busy(error)
    out = [{**conversion_json(r.conversion), "created": r.created, "replacedBrowserReport": r.replaced,
            "pushes": [push_json(p) for p in r.pushes]} for r in results]
    status = 201 if any(r.created for r in results) else 200
    return JsonResponse({"conversions": out} if is_batch else out[0], status=status)


def store_once_more_on_a_dropped_connection(site: Site, items: list[ConversionPayload]) -> list[record.Recorded]:
    """record_conversions, tried a second time on a fresh connection if the database dropped the first.

    Only a failure before the commit is retried (nothing was stored); the batch is one transaction,
    so the retry stores it whole. A dropped connection is one Django had to replace while leaving
    the transaction; any other error (a lock timeout, say) is not retried. A failure at the commit
    itself (stored or not, no one can say) is answered 503: repeating the call with the same order
    ids is safe (docs/tracking.md).
    """
    for attempt in (1, 2):
        db_connection.ensure_connection()
        used, reached_commit = db_connection.connection, False
        try:
            with transaction.atomic():
                results = record.record_conversions(site, items, source=Conversion.SOURCE_SERVER, strict=True)
                reached_commit = True
            return results
        except OperationalError:
            if attempt == 2 or reached_commit or db_connection.connection is used:
                raise
            log.warning("the database dropped the connection before the commit: storing the API call once more")
    raise AssertionError("unreachable")


def api_busy(error: Exception) -> HttpResponse:
    log.warning("API call refused, not stored: %s: %s", type(error).__name__, error)
    return http.json_error(503, "service: the database is unavailable, try again later",
                           Retry_After=str(DATABASE_RETRY_SECONDS))


@csrf_exempt
@sensitive_post_parameters()
def api_conversion_detail(request: HttpRequest, order_id: str) -> HttpResponse:
    """GET /api/v1/conversions/<order id>?event=purchase: what became of a conversion (PATCH, DELETE: adjust it)."""
    if request.method not in ("GET", "HEAD", "PATCH", "DELETE"):
        return http.method_not_allowed("GET", "PATCH", "DELETE")
    try:
        if request.method in ("PATCH", "DELETE"):
            return api_adjust_conversion(request, order_id)
        return conversion_detail(request, order_id)
    except OperationalError as error:
        return api_busy(error)


def conversion_detail(request: HttpRequest, order_id: str) -> HttpResponse:
    site = http.bearer_site(request)
    if isinstance(site, HttpResponse):
        return site
    conversion = conversion_for_order(request, site, order_id)
    if isinstance(conversion, HttpResponse):
        return conversion
    return JsonResponse(conversion_detail_json(conversion))


def conversion_for_order(request: HttpRequest, site: Site, order_id: str) -> Conversion | HttpResponse:
    """The site's conversion with this order id (and `?event=`), or the 404 / 400 to answer with."""
    event = request.GET.get("event")
    matches = Conversion.objects.filter(site=site, order_id=order_id).order_by("event_name")
    if event:
        matches = matches.filter(event_name=event)
    # Text no row can hold (a NUL, from %00) would fail the query on PostgreSQL: it matches nothing.
    found = list(matches[:2]) if payloads.storable(order_id + (event or "")) else []
    if not found:
        return http.json_error(404, "orderId: no conversion with this order id" + (" and event" if event else ""))
    if len(found) > 1:
        return http.json_error(400, "event: required, this order id belongs to several events")
    return found[0]


def conversion_detail_json(conversion: Conversion) -> dict:
    pushes = [push_json(p, detail=True) for p in conversion.pushes.order_by("id")]
    adjustments = [adjustment_json(a) for a in conversion.adjustments.order_by("adjusted_at", "id")]
    return {**conversion_json(conversion), "pushes": pushes, "adjustments": adjustments}


def conversion_json(conversion: Conversion) -> dict:
    """A conversion for API answers: no hashes, only whether there were any."""
    return {
        "id": conversion.pk,
        "event": conversion.event_name,
        "orderId": conversion.order_id,
        "value": float(conversion.value) if conversion.value is not None else None,
        "currency": conversion.currency or None,
        "time": format_conversion_time(conversion.occurred_at),
        "msclkid": conversion.msclkid or None,
        "clickTime": format_conversion_time(conversion.click_time) if conversion.click_time else None,
        "hashedEmail": bool(conversion.hashed_email),
        "hashedPhone": bool(conversion.hashed_phone),
        "source": conversion.source,
        "consent": conversion.consent or None,
        "retractedAt": format_conversion_time(conversion.retracted_at) if conversion.retracted_at else None,
    }


def push_json(push: Push, detail: bool = False) -> dict:
    item = {"connection": push.connection_id, "goalName": push.goal_name, "status": push.status}
    if detail:
        item["kind"] = push.kind
        if push.is_adjustment:
            item["adjustmentTime"] = format_conversion_time(push.adjustment_time)
        item.update({
            "attempts": push.attempts,
            "sentAt": format_conversion_time(push.sent_at) if push.sent_at else None,
            "errorCode": push.error_code,
            "errorSymbol": push.error_symbol or None,
            # Microsoft's message, verbatim (house style).
            "errorMessage": push.error_message or None,
        })
    return item


# --- Adjustments: PATCH (restate) and DELETE (retract) /api/v1/conversions/<order id> -------------------

def api_adjust_conversion(request: HttpRequest, order_id: str) -> HttpResponse:
    """PATCH: a new value (and currency); DELETE: a refund or cancellation. Both at `time` (default now)."""
    site = http.bearer_site(request)
    if isinstance(site, HttpResponse):
        return site
    now = timezone.now()
    kind = Adjustment.RESTATE if request.method == "PATCH" else Adjustment.RETRACT
    try:
        data = payloads.read_optional_json(request)
        if kind == Adjustment.RETRACT and "time" in request.GET and "time" not in data:
            data = {"time": request.GET["time"]}
        asked = (payloads.parse_restate if kind == Adjustment.RESTATE else payloads.parse_retract)(data, now)
    except PayloadError as error:
        return http.json_error(error.status, error.detail)
    conversion = conversion_for_order(request, site, order_id)
    if isinstance(conversion, HttpResponse):
        return conversion
    try:
        done = adjust(conversion, kind, at=asked.time, value=asked.value, currency=asked.currency, now=now)
    except AdjustmentRefused as refused:
        return http.json_error(refused.status, str(refused))
    conversion.refresh_from_db()
    answer = {**conversion_detail_json(conversion), "adjustment": {**adjustment_json(done.adjustment),
                                                                    "created": done.created}}
    return JsonResponse(answer)


def adjustment_json(adjustment: Adjustment) -> dict:
    return {
        "type": adjustment.kind,
        "time": format_conversion_time(adjustment.adjusted_at),
        "value": float(adjustment.value) if adjustment.value is not None else None,
        "currency": adjustment.currency or None,
        "source": adjustment.source,
    }
