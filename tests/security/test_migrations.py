"""A database from before issue #15 migrates, data and all: its API secret keeps working, pushes learn whose
report they carry, and the landing URLs stored with their whole query string are cut down."""

from __future__ import annotations

import pytest
from django.db import connection as db_connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from adsync.models import Click, Push, hash_api_secret
from adsync.sites import api_secrets

BEFORE = [("adsync", "0007_connection_health_fields_inbox_moves_here")]
SECRET = "sk_" + "s" * 43


@pytest.mark.django_db(transaction=True)
def test_a_database_from_before_keeps_its_api_secret_and_learns_whose_report_each_push_carries():
    executor = MigrationExecutor(db_connection)
    executor.migrate(BEFORE)
    old = executor.loader.project_state(BEFORE).apps
    now = timezone.now()
    site = old.get_model("adsync", "Site").objects.create(name="Old shop", key="pk_old",
                                                          api_secret_hash=hash_api_secret(SECRET))
    connection = old.get_model("adsync", "Connection").objects.create(site=site, status="active")
    pushes = {}
    for n, source in enumerate(["browser", "server", "admin"]):
        conversion = old.get_model("adsync", "Conversion").objects.create(
            site=site, event_name="purchase", order_id=f"O-{n}", occurred_at=now, source=source)
        pushes[source] = old.get_model("adsync", "Push").objects.create(
            conversion=conversion, connection=connection, goal_name="Purchase", conversion_time=now).pk
    click = old.get_model("adsync", "Click").objects.create(
        site=site, visitor_id="v1", msclkid="a" * 32,
        landing_url=f"https://shop.example.com/sale?email=a%40b.com&msclkid={'a' * 32}&utm_source=bing#x")

    executor = MigrationExecutor(db_connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

    assert api_secrets.site_for(SECRET).pk == site.pk  # the client's servers keep working
    assert {source: Push.objects.get(pk=pk).source for source, pk in pushes.items()} == {
        "browser": "browser", "server": "server", "admin": "admin"}
    assert Click.objects.get(pk=click.pk).landing_url == (
        f"https://shop.example.com/sale?msclkid={'a' * 32}&utm_source=bing")
