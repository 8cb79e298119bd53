"""The sync log's "Restate value" and "Retract" actions: operators only, a page that says what will happen,
then the same adjustment the server API makes."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from adsync.models import Adjustment, Push
from adsync.security.roles import OPERATORS, VIEWERS, ensure_roles

pytestmark = pytest.mark.django_db


def staff(role: str):
    ensure_roles()
    user = get_user_model().objects.create_user(username=role, email=f"{role}@example.com", is_staff=True)
    user.groups.add(Group.objects.get(name=role))
    return user


@pytest.fixture
def operator():
    return staff(OPERATORS)


@pytest.fixture
def viewer():
    return staff(VIEWERS)


@pytest.fixture
def sent_row(site, connection, make_conversion) -> Push:
    conversion = make_conversion(site, order_id="A-1001", value=Decimal("49.90"))
    Push.objects.filter(conversion=conversion).update(status=Push.SENT)
    return conversion.pushes.get()


def act(client, action: str, rows: list[Push], **form):
    return client.post("/admin/adsync/push/", {"action": action, ACTION_CHECKBOX_NAME: [r.pk for r in rows],
                                               "index": 0, **form})


def test_a_viewer_sees_neither_action_and_a_forged_retract_changes_nothing(client, viewer, sent_row):
    client.force_login(viewer)

    page = client.get("/admin/adsync/push/").content.decode()
    act(client, "retract", [sent_row], apply="yes")

    assert 'value="restate_value"' not in page and 'value="retract"' not in page
    assert not Adjustment.objects.exists()


def test_restate_shows_what_will_happen_before_changing_anything(client, operator, site, sent_row, make_conversion):
    unsent = make_conversion(site, order_id="A-1002").pushes.get()
    client.force_login(operator)

    page = act(client, "restate_value", [sent_row, unsent])

    text = page.content.decode()
    assert page.status_code == 200
    assert "sent → a Restate is queued for Microsoft" in text
    assert "queued, not sent yet → takes the new value (nothing goes to Microsoft)" in text
    assert 'name="value"' in text and 'name="time"' in text
    assert not Adjustment.objects.exists()


def test_an_operators_restate_of_a_sent_row_queues_an_adjustment_with_their_name(client, operator, sent_row):
    client.force_login(operator)

    act(client, "restate_value", [sent_row], apply="yes", value="25.50", currency="eur", time="")

    adjustment = Adjustment.objects.get()
    assert (adjustment.kind, adjustment.value, adjustment.currency) == (Adjustment.RESTATE, Decimal("25.500"), "EUR")
    assert (adjustment.source, adjustment.requested_by) == (Adjustment.SOURCE_ADMIN, "operators")
    restate = Push.objects.get(kind=Push.RESTATE)
    assert (restate.status, restate.value, restate.connection_id) == (Push.QUEUED, Decimal("25.500"),
                                                                      sent_row.connection_id)


def test_a_restate_without_a_value_shows_the_form_again_and_changes_nothing(client, operator, sent_row):
    client.force_login(operator)

    page = act(client, "restate_value", [sent_row], apply="yes", value="")

    assert "This field is required." in page.content.decode()
    assert not Adjustment.objects.exists()


def test_an_operators_retract_of_an_unsent_row_cancels_it(client, operator, site, connection, make_conversion):
    row = make_conversion(site, order_id="A-1003").pushes.get()
    client.force_login(operator)

    page = act(client, "retract", [row])
    act(client, "retract", [row], apply="yes", time="")

    assert "queued, not sent yet → cancelled, never sent (nothing goes to Microsoft)" in page.content.decode()
    row.refresh_from_db()
    assert (row.status, row.error_symbol) == (Push.CANCELLED, "adsync:retracted")
    assert not Push.objects.filter(kind=Push.RETRACT).exists()
