"""Forgetting a person: `manage.py forget_visitor`, the admin's "Forget a person" and retention of inbox hits.

The proof that matters: after an erasure no table of the database holds the person's click id, visitor id,
order id or hashes, while another person's data is untouched and the counts still add up.
"""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.db import connection as db_connection
from django.utils import timezone

from adsync.intake.adjustments import adjust
from adsync.intake.identity import hash_email, hash_phone
from adsync.models import Adjustment, Click, Conversion, Erasure, Hit, Push
from adsync.push import maintenance
from adsync.security.roles import OPERATORS, VIEWERS, ensure_roles
from adsync.sites import api_secrets

pytestmark = pytest.mark.django_db

EMAIL, PHONE = "Jane.Doe+shop@Example.com", "(425) 555-0100"
VISITOR, MSCLKID = "vid-jane-7e344db9f8ad", "f894f652ea334e739002f7167ab8f8e3"
OTHER_VISITOR, OTHER_MSCLKID, OTHER_EMAIL = "vid-john-0c6e1a7a9d8b", "0c6e1a7a9d8b4f3e8a2b5c4d3e2f1a0b", "john@example.org"


@pytest.fixture
def secret(site) -> str:
    return api_secrets.issue(site)


def api(client, secret: str, **body):
    response = client.post("/api/v1/conversions", json.dumps({"event": "purchase", **body}),
                           content_type="application/json", headers={"Authorization": f"Bearer {secret}"})
    assert response.status_code == 201, response.content
    return Conversion.objects.get(pk=response.json()["id"])


@pytest.fixture
def jane(client, site, connection, secret):
    """One person's whole trail: a click, three orders (sent, queued, waiting for a click), an adjustment,
    a failed and a waiting inbox hit. Returns the values that must vanish."""
    Click.objects.create(site=site, visitor_id=VISITOR, msclkid=MSCLKID, landing_url=f"https://shop/?msclkid={MSCLKID}",
                         clicked_at=timezone.now() - timedelta(hours=5))
    sent = api(client, secret, orderId="JANE-1", value=40, visitorId=VISITOR, email=EMAIL, phone=PHONE,
               time=(timezone.now() - timedelta(hours=4)).isoformat())
    Push.objects.filter(conversion=sent).update(status=Push.SENT, sent_at=timezone.now())
    adjust(sent, Adjustment.RESTATE, value=Decimal("30"))
    api(client, secret, orderId="JANE-2", visitorId=VISITOR)  # attributed to her click: queued
    api(client, secret, orderId="JANE-3", email=EMAIL)  # no click: pending_identity
    hashed = {"hashed_email": hash_email(EMAIL), "hashed_phone": ""}
    Hit.objects.create(site=site, kind=Hit.CONVERSION, error="ValueError: boom", payload={
        "event": "purchase", "order_id": "JANE-4", "value": None, "currency": "USD", "occurred_at": None,
        "msclkid": "", "visitor_id": VISITOR, **hashed})
    Hit.objects.create(site=site, kind=Hit.CLICK, payload={"visitor_id": VISITOR, "msclkid": MSCLKID, "url": ""})
    return [MSCLKID, VISITOR, hash_email(EMAIL), hash_phone(PHONE, "US"), "JANE-1", "JANE-2", "JANE-3", "JANE-4"]


@pytest.fixture
def john(client, site, connection, secret):
    """Someone else, who must keep everything."""
    Click.objects.create(site=site, visitor_id=OTHER_VISITOR, msclkid=OTHER_MSCLKID)
    api(client, secret, orderId="JOHN-1", visitorId=OTHER_VISITOR, email=OTHER_EMAIL)
    return [OTHER_MSCLKID, OTHER_VISITOR, hash_email(OTHER_EMAIL), "JOHN-1"]


def tables_holding(values: list[str]) -> dict[str, set[str]]:
    """Every table of the database, every column read as text: which of `values` appear where."""
    found: dict[str, set[str]] = {}
    with db_connection.cursor() as cursor:
        for table in db_connection.introspection.table_names(cursor):
            cursor.execute(f"SELECT * FROM {db_connection.ops.quote_name(table)}")
            for row in cursor.fetchall():
                text = " ".join(str(cell) for cell in row)
                for value in values:
                    if value in text:
                        found.setdefault(value, set()).add(table)
    return found


def forget(**keys) -> str:
    out = StringIO()
    call_command("forget_visitor", stdout=out, **keys)
    return out.getvalue()


# --- The command ---------------------------------------------------------------------------------------------

def test_forgetting_by_email_leaves_no_identifier_of_the_person_anywhere_in_the_database(jane, john):
    assert set(tables_holding(jane)) == set(jane)  # the scan sees them before

    forget(email=EMAIL, yes=True, actor="dpo@shop.example")

    assert tables_holding(jane) == {}
    assert set(tables_holding(john)) == set(john)


def test_the_anonymous_audit_line_keeps_goal_time_value_and_status(jane):
    before = list(Conversion.objects.order_by("id").values_list("event_name", "occurred_at", "value"))

    forget(email=EMAIL, yes=True)

    assert list(Conversion.objects.order_by("id").values_list("event_name", "occurred_at", "value")) == before
    assert all(c.erased_at and c.order_id is None for c in Conversion.objects.all())
    statuses = sorted(Push.objects.values_list("kind", "status", "error_symbol"))
    assert statuses == [("conversion", "cancelled", "adsync:erased"), ("conversion", "cancelled", "adsync:erased"),
                        ("conversion", "sent", ""), ("restate", "cancelled", "adsync:erased")]
    assert not Click.objects.exists() and not Hit.objects.exists()


def test_the_audit_event_says_who_and_when_never_what(jane):
    forget(email=EMAIL, yes=True, actor="dpo@shop.example")

    erasure = Erasure.objects.get()
    assert (erasure.actor, erasure.via, erasure.keys) == ("dpo@shop.example", Erasure.VIA_COMMAND, "email")
    assert erasure.counts == {"clicks": 1, "inbox hits": 2, "conversions": 3, "sync-log rows": 4,
                              "cancelled before sending": 3}
    assert abs(erasure.erased_at - timezone.now()) < timedelta(minutes=1)


def test_by_order_id_the_click_behind_the_order_and_the_visitors_other_orders_go_too(jane, john):
    forget(order_id="JANE-2", yes=True)

    assert tables_holding(jane) == {}
    assert set(tables_holding(john)) == set(john)


@pytest.mark.parametrize("keys", [{"phone": "+1 425-555-0100"}, {"visitor_id": VISITOR}])
def test_a_phone_in_any_format_or_the_visitor_id_finds_the_same_person(jane, keys):
    forget(**keys, yes=True)

    assert tables_holding(jane) == {}


def test_without_yes_the_command_only_lists_what_would_go(jane):
    printed = forget(email=EMAIL)

    assert "Click " in printed and "deleted" in printed and "Conversion purchase JANE-1" in printed
    assert "run again with --yes" in printed
    assert EMAIL not in printed and hash_email(EMAIL) not in printed
    assert Click.objects.exists() and not Erasure.objects.exists()


def test_an_unknown_person_is_nothing_to_erase_and_no_audit_line(site):
    assert "nothing to erase" in forget(email="nobody@example.com", yes=True)
    assert not Erasure.objects.exists()


def test_the_command_needs_a_key():
    from django.core.management import CommandError

    with pytest.raises(CommandError, match="at least one"):
        forget(yes=True)


def test_an_erased_order_can_no_longer_be_found_through_the_api(client, secret, jane):
    forget(email=EMAIL, yes=True)

    response = client.get("/api/v1/conversions/JANE-1", headers={"Authorization": f"Bearer {secret}"})

    assert response.status_code == 404


# --- The admin -------------------------------------------------------------------------------------------------

def staff(role: str):
    ensure_roles()
    user = get_user_model().objects.create_user(username=role, email=f"{role}@example.com", is_staff=True)
    user.groups.add(Group.objects.get(name=role))
    return user


def test_a_viewer_sees_the_audit_list_but_cannot_forget_anyone(client, jane):
    client.force_login(staff(VIEWERS))

    assert client.get("/admin/adsync/erasure/").status_code == 200
    assert client.get("/admin/adsync/erasure/forget/").status_code == 403
    assert client.post("/admin/adsync/erasure/forget/", {"email": EMAIL}).status_code == 403
    assert Click.objects.exists()


def test_an_operator_sees_what_will_go_then_erases_it(client, jane):
    client.force_login(staff(OPERATORS))

    page = client.post("/admin/adsync/erasure/forget/", {"email": EMAIL}).content.decode()
    assert "Conversion purchase JANE-1" in page and "Inbox hit" in page and 'value="yes">Erase' in page
    assert EMAIL.lower() not in page.lower() and Click.objects.exists()  # nothing changed yet, email not echoed

    hidden = {"confirm": "yes", "erase": "yes", "hashed_email": hash_email(EMAIL)}
    done = client.post("/admin/adsync/erasure/forget/", hidden)

    assert done.status_code == 302 and done["Location"] == "/admin/adsync/erasure/"
    assert tables_holding(jane) == {}
    assert (Erasure.objects.get().actor, Erasure.objects.get().via) == ("operators", Erasure.VIA_ADMIN)


def test_an_unreadable_phone_is_refused_on_the_form(client, jane):
    client.force_login(staff(OPERATORS))

    page = client.post("/admin/adsync/erasure/forget/", {"phone": "not a phone"}).content.decode()

    assert "phone is not a valid phone number" in page and not Erasure.objects.exists()


def test_forgetting_from_the_conversions_list_confirms_first(client, jane):
    from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME

    client.force_login(staff(OPERATORS))
    picked = Conversion.objects.get(order_id="JANE-3")
    form = {"action": "forget_people", ACTION_CHECKBOX_NAME: [picked.pk]}

    page = client.post("/admin/adsync/conversion/", form).content.decode()
    assert "Conversion purchase JANE-1" in page and Click.objects.exists()
    client.post("/admin/adsync/conversion/", {**form, "confirm": "yes", "erase": "yes", "conversion": picked.pk})

    assert tables_holding(jane) == {}


# --- Retention --------------------------------------------------------------------------------------------------

def test_retention_purges_old_inbox_hits_failed_or_waiting_and_keeps_recent_ones(site, settings):
    settings.ADSYNC_RETENTION_DAYS = 90
    old = timezone.now() - timedelta(days=91)
    payload = {"visitor_id": VISITOR, "msclkid": MSCLKID, "url": ""}
    Hit.objects.create(site=site, kind=Hit.CLICK, payload=payload, received_at=old, error="boom")
    Hit.objects.create(site=site, kind=Hit.CLICK, payload=payload, received_at=old)
    recent = Hit.objects.create(site=site, kind=Hit.CLICK, payload=payload, error="boom")

    purged = maintenance.purge_identifiers()

    assert purged["hits"] == 2
    assert list(Hit.objects.values_list("pk", flat=True)) == [recent.pk]
