"""Staff sign-in in front of the admin: django-allauth (password, TOTP, optional Microsoft).

- No public sign-up: staff accounts are created by a superuser (admin or `createsuperuser`).
- The admin's own login page hands over to allauth's, so there is one sign-in page with MFA.
- With ADSYNC_REQUIRE_MFA on, staff without an authenticator app are sent to set one up
  before any admin page opens. The tracking endpoints (/t/, /api/) never pass through any of
  this: only paths under the admin are checked, and staff pages elsewhere (the emulator's status
  page) use `staff_page`, which applies the same two rules.
"""

from __future__ import annotations

import functools
from urllib.parse import urlencode

from allauth.account.adapter import DefaultAccountAdapter
from allauth.mfa.models import Authenticator
from allauth.mfa.utils import is_mfa_enabled
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth import REDIRECT_FIELD_NAME
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme

from adsync.conf import conf


class StaffAccountAdapter(DefaultAccountAdapter):
    """adsync has staff only: nobody signs themselves up."""

    def is_open_for_signup(self, request: HttpRequest) -> bool:
        return False


class StaffSocialAccountAdapter(DefaultSocialAccountAdapter):
    """"Sign in with Microsoft" logs in staff who linked their Microsoft account; it never creates one."""

    def is_open_for_signup(self, request: HttpRequest, sociallogin) -> bool:
        return False


def _safe_next(request: HttpRequest) -> str:
    target = request.GET.get(REDIRECT_FIELD_NAME, "")
    if target and url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure()):
        return target
    return reverse("admin:index")


def admin_login(request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
    """Replaces admin.site.login: staff sign in through allauth (password, MFA, Microsoft).

    A signed-in user without staff access gets a 403 page instead of a redirect, otherwise
    allauth (which sends signed-in users to `next`) and the admin would bounce them forever.
    """
    next_url = _safe_next(request)
    user = request.user
    if user.is_authenticated and user.is_active and user.is_staff:
        return redirect(next_url)
    if user.is_authenticated:
        return TemplateResponse(request, "adsync/not_staff.html", {"signed_in_as": user.get_username()},
                                status=403)
    return redirect(f"{reverse('account_login')}?{urlencode({REDIRECT_FIELD_NAME: next_url})}")


def needs_mfa_enrolment(user) -> bool:
    """True for active staff who have no authenticator app while ADSYNC_REQUIRE_MFA is on."""
    if not conf.require_mfa:
        return False
    if not (user.is_authenticated and user.is_active and user.is_staff):
        return False
    return not is_mfa_enabled(user, [Authenticator.Type.TOTP])


def mfa_setup(request: HttpRequest) -> HttpResponse:
    """To allauth's authenticator setup, then back to where the staff member was going."""
    query = urlencode({REDIRECT_FIELD_NAME: request.get_full_path()})
    return redirect(f"{reverse('mfa_activate_totp')}?{query}")


def staff_page(view):
    """A staff page outside the admin, under the admin's rules: signed in through allauth (with its MFA step
    for staff who have an authenticator), and with ADSYNC_REQUIRE_MFA, an authenticator set up first."""
    protected = staff_member_required(view)

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if needs_mfa_enrolment(request.user):
            return mfa_setup(request)
        return protected(request, *args, **kwargs)
    return wrapper


class RequireStaffMFAMiddleware:
    """Sends staff without TOTP to allauth's setup page before any admin page (ADSYNC_REQUIRE_MFA).

    Must come after AuthenticationMiddleware. Only paths under the admin are checked, so
    sign-in, MFA setup, sign-out and the public tracking endpoints are never blocked.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if self._blocks(request):
            return mfa_setup(request)
        return self.get_response(request)

    @staticmethod
    def _blocks(request: HttpRequest) -> bool:
        # Setting first: the busy tracking endpoints pay nothing when MFA is not required.
        if not conf.require_mfa or not request.path.startswith(reverse("admin:index")):
            return False
        return request.path != reverse("admin:logout") and needs_mfa_enrolment(request.user)
