"""Who reaches the admin and what they may do there: allauth sign-in (password, TOTP), closed
sign-up, ADSYNC_REQUIRE_MFA, the operators / viewers roles on admin actions, and the public
tracking endpoints that none of this may touch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from allauth.mfa.models import Authenticator
from allauth.mfa.totp.internal.auth import TOTP, format_hotp_value, generate_totp_secret, hotp_value
from django.contrib import admin
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import RequestFactory
from django.utils import timezone

from adsync.models import GoalMapping, Push, Site
from adsync.security.roles import OPERATORS, READ_ONLY_ACTIONS, VIEWERS, ensure_roles

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-battery-staple"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def make_user(db):
    def make(email: str, *, staff: bool = True, role: str | None = None, **flags):
        user = get_user_model().objects.create_user(username=email.split("@")[0], email=email, password=PASSWORD,
                                                    is_staff=staff, **flags)
        if role:
            ensure_roles()
            user.groups.add(Group.objects.get(name=role))
        return user
    return make


@pytest.fixture
def viewer(make_user):
    return make_user("viewer@example.com", role=VIEWERS)


@pytest.fixture
def operator(make_user):
    return make_user("operator@example.com", role=OPERATORS)


def current_code(secret: str) -> str:
    counter = int(timezone.now().timestamp()) // 30
    return format_hotp_value(hotp_value(secret, counter))


def sign_in(client, login: str, next_url: str = "/admin/"):
    return client.post(f"/accounts/login/?next={next_url}", {"login": login, "password": PASSWORD})


# --- Sign-in ------------------------------------------------------------------------------

def test_the_admin_sends_visitors_to_the_allauth_sign_in_page(client):
    first = client.get("/admin/")
    assert first.status_code == 302 and first["Location"] == "/admin/login/?next=/admin/"

    second = client.get(first["Location"])
    assert second.status_code == 302 and second["Location"] == "/accounts/login/?next=%2Fadmin%2F"
    assert client.get(second["Location"]).status_code == 200


def test_staff_sign_in_with_email_and_password_and_reach_the_admin(client, make_user):
    make_user("ops@example.com")

    response = sign_in(client, "ops@example.com")

    assert response.status_code == 302 and response["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200


def test_a_wrong_password_does_not_sign_in(client, make_user):
    make_user("ops@example.com")

    response = client.post("/accounts/login/", {"login": "ops@example.com", "password": "nope"})

    assert response.status_code == 200
    assert client.get("/admin/").status_code == 302


def test_nobody_can_sign_up(client):
    page = client.get("/accounts/signup/")
    client.post("/accounts/signup/", {"email": "new@example.com", "username": "new", "password1": PASSWORD,
                                      "password2": PASSWORD})

    assert "Sign Up Closed" in page.content.decode()
    assert not get_user_model().objects.filter(email="new@example.com").exists()
    assert "/accounts/signup/" not in client.get("/accounts/login/").content.decode()


def test_a_signed_in_user_without_staff_access_gets_a_403_page_not_a_redirect_loop(client, make_user):
    client.force_login(make_user("client@example.com", staff=False))

    response = client.get("/admin/login/?next=/admin/")

    assert response.status_code == 403
    assert "not a staff account" in response.content.decode()


def test_sign_in_with_microsoft_is_not_offered_unless_configured(client):
    assert "microsoft" not in client.get("/accounts/login/").content.decode().lower()


def _settings_in_a_fresh_process(**env) -> str:
    script = ("import django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'config.settings'); "
              "from django.conf import settings; "
              "print('allauth.socialaccount.providers.microsoft' in settings.INSTALLED_APPS, "
              "settings.SOCIALACCOUNT_PROVIDERS.get('microsoft', {}).get('APPS', [{}])[0].get('settings'))")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ADSYNC_STAFF_MICROSOFT")}
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env={**clean, **env}, capture_output=True,
                            text=True, timeout=60, check=True)
    return result.stdout.strip()


def test_sign_in_with_microsoft_is_enabled_by_its_two_settings():
    assert _settings_in_a_fresh_process() == "False None"
    assert _settings_in_a_fresh_process(ADSYNC_STAFF_MICROSOFT_CLIENT_ID="app-id",
                                        ADSYNC_STAFF_MICROSOFT_CLIENT_SECRET="app-secret",
                                        ADSYNC_STAFF_MICROSOFT_TENANT="contoso.onmicrosoft.com") \
        == "True {'tenant': 'contoso.onmicrosoft.com'}"


# --- Multi-factor -------------------------------------------------------------------------

def test_staff_with_an_authenticator_app_must_enter_a_code_at_sign_in(client, make_user):
    user = make_user("ops@example.com")
    secret = generate_totp_secret()
    TOTP.activate(user, secret)

    first = sign_in(client, "ops@example.com")
    assert first["Location"] == "/accounts/2fa/authenticate/"
    assert client.get("/admin/").status_code == 302  # not signed in yet

    second = client.post("/accounts/2fa/authenticate/", {"code": current_code(secret)})
    assert second["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200


def test_with_mfa_required_staff_without_an_authenticator_are_sent_to_set_one_up(client, settings, make_user):
    settings.ADSYNC_REQUIRE_MFA = True
    client.force_login(make_user("ops@example.com"))

    for path in ("/admin/", "/admin/adsync/push/", "/admin/adsync/dashboard/"):
        response = client.get(path)
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/2fa/totp/activate/?next=")


def test_with_mfa_required_staff_can_set_up_totp_and_then_reach_the_admin(client, settings, make_user):
    settings.ADSYNC_REQUIRE_MFA = True
    make_user("ops@example.com")
    sign_in(client, "ops@example.com")
    assert client.get("/admin/")["Location"].startswith("/accounts/2fa/totp/activate/")

    reauth = client.get("/accounts/2fa/totp/activate/")  # allauth asks for the password again first
    assert reauth["Location"].startswith("/accounts/reauthenticate/")
    client.post(reauth["Location"], {"password": PASSWORD})
    assert client.get("/accounts/2fa/totp/activate/").status_code == 200
    secret = client.session["mfa.totp.secret"]
    client.post("/accounts/2fa/totp/activate/", {"code": current_code(secret)})

    assert Authenticator.objects.filter(type=Authenticator.Type.TOTP).exists()
    assert client.get("/admin/").status_code == 200


def test_with_mfa_required_staff_with_totp_reach_the_admin(client, settings, make_user):
    settings.ADSYNC_REQUIRE_MFA = True
    user = make_user("ops@example.com")
    TOTP.activate(user, generate_totp_secret())
    client.force_login(user)

    assert client.get("/admin/").status_code == 200


def test_with_mfa_not_required_staff_without_totp_reach_the_admin(client, settings, make_user):
    settings.ADSYNC_REQUIRE_MFA = False
    client.force_login(make_user("ops@example.com"))

    assert client.get("/admin/").status_code == 200


def test_tracking_endpoints_stay_public_whatever_the_sign_in_rules(client, settings, make_user):
    settings.ADSYNC_REQUIRE_MFA = True
    Site.objects.create(name="Demo", key="demo", allowed_origins="http://testserver")
    for path in ("/t/v1/adsync.js", "/demo/"):
        assert client.get(path).status_code == 200, path
    client.force_login(make_user("ops@example.com"))  # staff without TOTP: still not redirected here
    assert client.get("/t/v1/adsync.js").status_code == 200


# --- The emulator's pages: the admin's rules ---------------------------------------------------

def test_the_emulator_status_page_needs_a_staff_sign_in(client, make_user):
    anonymous = client.get("/emulator/")
    client.force_login(make_user("visitor@example.com", staff=False))
    not_staff = client.get("/emulator/")

    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/admin/login/?next=/emulator/")
    assert not_staff.status_code == 302 and not_staff["Location"].startswith("/admin/login/")


def test_with_mfa_required_staff_without_an_authenticator_set_one_up_before_the_emulator_page(client, settings,
                                                                                             make_user):
    settings.ADSYNC_REQUIRE_MFA = True
    user = make_user("ops@example.com")
    client.force_login(user)

    sent = client.get("/emulator/")
    TOTP.activate(user, generate_totp_secret())
    allowed = client.get("/emulator/")

    assert sent.status_code == 302 and sent["Location"] == "/accounts/2fa/totp/activate/?next=%2Femulator%2F"
    assert allowed.status_code == 200


def test_the_emulators_simulated_ad_click_is_public_by_design_and_lands_only_on_this_instance(client):
    landing = client.get("/emulator/click/?next=/demo/")
    elsewhere = client.get("/emulator/click/?next=https://evil.example/")

    assert landing.status_code == 302 and landing["Location"].startswith("/demo/?msclkid=")
    assert elsewhere["Location"].startswith("/demo/?msclkid=")  # never an open redirect


# --- Roles --------------------------------------------------------------------------------

def test_setup_roles_is_idempotent_and_viewers_only_get_view_permissions(capsys):
    from django.core.management import call_command

    call_command("setup_roles")
    call_command("setup_roles")

    viewers, operators = Group.objects.get(name=VIEWERS), Group.objects.get(name=OPERATORS)
    assert Group.objects.filter(name__in=[VIEWERS, OPERATORS]).count() == 2
    assert {p.codename.split("_")[0] for p in viewers.permissions.all()} == {"view"}
    assert {"view_push", "view_connection", "view_schedule"} <= {p.codename for p in viewers.permissions.all()}
    assert {"operate_connection", "change_connection", "change_goalmapping"} <= {
        p.codename for p in operators.permissions.all()}
    assert not operators.permissions.filter(codename__in=["change_site", "delete_push", "change_user"]).exists()


def test_a_viewer_can_open_the_card_the_sync_log_and_the_dashboard(client, viewer, site, connection,
                                                                    make_conversion):
    make_conversion(site)
    client.force_login(viewer)

    for path in ("/admin/", f"/admin/adsync/connection/{connection.pk}/change/", "/admin/adsync/push/",
                 "/admin/adsync/dashboard/"):
        assert client.get(path).status_code == 200, path


def test_staff_without_a_role_cannot_open_the_dashboard(client, make_user):
    client.force_login(make_user("new@example.com"))

    assert client.get("/admin/adsync/dashboard/").status_code == 403


def viewer_actions(user, model) -> set[str]:
    request = RequestFactory().get("/admin/")
    request.user = user
    return set(admin.site._registry[model].get_actions(request))


def test_every_action_a_viewer_sees_is_read_only(viewer):
    adsync_models = [m for m in admin.site._registry if m._meta.app_label == "adsync"]

    seen = set().union(*(viewer_actions(viewer, m) for m in adsync_models))

    assert seen <= READ_ONLY_ACTIONS


def test_operators_see_the_sync_actions(operator):
    from adsync.models import Connection

    assert {"replay_errors", "validate_dry_run"} <= viewer_actions(operator, Push)
    assert {"send_test_conversion", "refresh_goal_list", "resync_now", "reconnect"} <= viewer_actions(
        operator, Connection)


def error_push(site, make_conversion) -> Push:
    make_conversion(site)
    Push.objects.update(status=Push.ERROR, error_code=5606, error_message="The conversion name do not match.")
    return Push.objects.get()


def replay_post(client, push: Push):
    return client.post("/admin/adsync/push/", {"action": "replay_errors", ACTION_CHECKBOX_NAME: [push.pk],
                                               "index": 0})


def test_a_viewer_does_not_see_replay_and_a_forged_replay_changes_nothing(client, viewer, site, connection,
                                                                           make_conversion):
    push = error_push(site, make_conversion)
    client.force_login(viewer)

    page = client.get("/admin/adsync/push/").content.decode()
    replay_post(client, push)

    assert 'value="replay_errors"' not in page
    push.refresh_from_db()
    assert push.status == Push.ERROR


def test_an_operator_can_replay_an_error_row(client, operator, site, connection, make_conversion):
    push = error_push(site, make_conversion)
    client.force_login(operator)

    assert 'value="replay_errors"' in client.get("/admin/adsync/push/").content.decode()
    replay_post(client, push)

    push.refresh_from_db()
    assert push.status == Push.QUEUED


def test_a_forged_send_test_post_from_a_viewer_creates_no_conversion(client, viewer, connection):
    mapping = GoalMapping.objects.get(connection=connection)
    client.force_login(viewer)

    client.post("/admin/adsync/connection/", {"action": "send_test_conversion",
                                              ACTION_CHECKBOX_NAME: [connection.pk], "mapping": mapping.pk})

    assert not Push.objects.exists()


def test_a_viewer_cannot_edit_goal_mappings_but_an_operator_can(client, viewer, operator, connection):
    url = f"/admin/adsync/connection/{connection.pk}/change/"
    client.force_login(viewer)
    assert 'name="goal_mappings-0-goal_name"' not in client.get(url).content.decode()
    assert client.post(url, {}).status_code == 403

    client.force_login(operator)
    assert 'name="goal_mappings-0-goal_name"' in client.get(url).content.decode()


def test_only_a_superuser_sees_where_to_issue_a_site_api_secret(client, operator, admin_client, site):
    client.force_login(operator)
    url = f"/admin/adsync/site/{site.pk}/change/"

    assert "Issue a new secret" not in client.get(url).content.decode()
    assert "Issue a new secret" in admin_client.get(url).content.decode()
