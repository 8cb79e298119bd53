"""The emulator's human-facing pages: the status page, the simulated ad click, report downloads.

The status page shows what the emulator received (visitor data, even if made up): staff only, under
the admin's sign-in and MFA rules. The simulated ad click is public by design: it stands for a
click on an ad, which anyone can make, and it only ever lands on this instance (no open redirect).
"""

from __future__ import annotations

from django.core.signing import BadSignature, TimestampSigner
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.utils.http import url_has_allowed_host_and_scheme

from adsync.security.signin import staff_page
from emulator import reports
from emulator.demo import ACCOUNT_ID as DEMO_ACCOUNT_ID
from emulator.demo import ensure_demo_data
from emulator.http import require_enabled
from emulator.models import (
    EmulatorAccount,
    EmulatorBehaviour,
    EmulatorClick,
    EmulatorConversion,
    EmulatorReportRequest,
)
from emulator.urltools import add_query
from emulator.views import REPORT_SIGNER_SALT

DEFAULT_LANDING = "/demo/"


def click(request: HttpRequest) -> HttpResponse:
    """Simulate an ad click: register a fresh msclkid and land on `next` with it appended, as auto-tagging does."""
    require_enabled()
    account = _click_account(request.GET.get("account", ""))
    new_click = EmulatorClick.objects.create(account=account)
    return HttpResponseRedirect(add_query(_landing(request), {"msclkid": new_click.msclkid}))


def _click_account(account_id: str) -> EmulatorAccount:
    """The named account, else the demo account (created on first use, so the demo link always works)."""
    if account_id:
        return get_object_or_404(EmulatorAccount, account_id=account_id)
    demo = EmulatorAccount.objects.filter(account_id=DEMO_ACCOUNT_ID).first()
    return demo or EmulatorAccount.objects.get(account_id=ensure_demo_data().account_id)


def _landing(request: HttpRequest) -> str:
    """Only same-site landing pages: the click link must not become an open redirect."""
    target = request.GET.get("next") or DEFAULT_LANDING
    if url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        return target
    return DEFAULT_LANDING


def _enabled_staff_page(view):
    """404 outside emulator mode first, then the admin's sign-in and MFA rules (adsync.security.signin.staff_page)."""
    protected = staff_page(view)

    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        require_enabled()
        return protected(request, *args, **kwargs)
    return wrapper


@_enabled_staff_page
def status(request: HttpRequest) -> HttpResponse:
    """Staff only: received conversions are visitor data even in the emulator."""
    context = {
        "accounts": EmulatorAccount.objects.prefetch_related("users", "goals"),
        "clicks": EmulatorClick.objects.select_related("account")[:50],
        "conversions": EmulatorConversion.objects.select_related("account")[:50],
        "behaviour": EmulatorBehaviour.load(),
    }
    return render(request, "emulator/status.html", context)


def report_download(request: HttpRequest, request_id: str) -> HttpResponse:
    """The ReportDownloadUrl: no headers needed, valid for 5 minutes after the poll that issued it."""
    require_enabled()
    try:
        signed_id = TimestampSigner(salt=REPORT_SIGNER_SALT).unsign(
            request.GET.get("sig", ""), max_age=reports.DOWNLOAD_LIFETIME_SECONDS)
    except BadSignature:
        return HttpResponse("AuthenticationFailed: the download URL is invalid or has expired; poll again.",
                            status=403, content_type="text/plain")
    if signed_id != request_id:
        raise Http404("Unknown report.")
    report = get_object_or_404(EmulatorReportRequest, pk=request_id)
    response = HttpResponse(reports.report_zip(report), content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="{request_id}.zip"'
    return response
