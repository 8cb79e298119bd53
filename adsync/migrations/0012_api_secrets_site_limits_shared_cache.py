"""Server API secrets move to their own table (two may be active during a rotation), the browser's limits
per site (value ceiling, signed conversions), the encryption key state, and the shared cache's table."""

import django.db.models.deletion
import django.utils.timezone
from django.core.management import call_command
from django.db import migrations, models


def copy_api_secrets(apps, schema_editor):
    """Each site's one secret hash becomes its first ApiSecret: the clients' servers keep working."""
    Site = apps.get_model("adsync", "Site")
    ApiSecret = apps.get_model("adsync", "ApiSecret")
    db = schema_editor.connection.alias
    ApiSecret.objects.using(db).bulk_create(
        ApiSecret(site_id=site_id, secret_hash=secret_hash, hint="sk_")
        for site_id, secret_hash in Site.objects.using(db).exclude(api_secret_hash="").values_list(
            "id", "api_secret_hash"))


def copy_api_secrets_back(apps, schema_editor):
    """Back to one secret per site: the newest active one."""
    Site = apps.get_model("adsync", "Site")
    ApiSecret = apps.get_model("adsync", "ApiSecret")
    db = schema_editor.connection.alias
    for secret in ApiSecret.objects.using(db).filter(revoked_at=None).order_by("created_at", "id"):
        Site.objects.using(db).filter(pk=secret.site_id).update(api_secret_hash=secret.secret_hash)


def create_cache_table(apps, schema_editor):
    """The shared cache's table (CACHES in config/settings.py), so `migrate` is all a deployment runs.
    Nothing to do when the cache is Redis (REDIS_URL)."""
    call_command("createcachetable", database=schema_editor.connection.alias, verbosity=0)


class Migration(migrations.Migration):

    dependencies = [
        ("adsync", "0011_connection_last_upload_ok_at"),
    ]

    operations = [
        migrations.CreateModel(
            name="ApiSecret",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("site", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="api_secrets",
                                           to="adsync.site")),
                ("secret_hash", models.CharField(editable=False, max_length=64, unique=True)),
                ("hint", models.CharField(editable=False, help_text="The secret's first characters, to tell secrets "
                                          "apart; not enough to use it.", max_length=12)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("last_used_at", models.DateTimeField(blank=True, help_text="Updated at most every 5 minutes.",
                                                      null=True)),
                ("revoked_at", models.DateTimeField(blank=True, null=True)),
            ],
            options={"verbose_name": "server API secret", "ordering": ["-created_at", "-id"]},
        ),
        migrations.RunPython(copy_api_secrets, copy_api_secrets_back),
        migrations.RemoveField(model_name="site", name="api_secret_hash"),
        migrations.AddField(
            model_name="site",
            name="browser_value_ceiling",
            field=models.DecimalField(
                blank=True, decimal_places=3, max_digits=15, null=True, verbose_name="largest browser value",
                help_text="A conversion the browser reports with a higher value (in any currency) is held for staff "
                "to release or drop (sync log, adsync:value_held). Empty: no ceiling. Signed conversions are not "
                "held."),
        ),
        migrations.AddField(
            model_name="site",
            name="signed_browser_conversions",
            field=models.BooleanField(
                default=False, verbose_name="signed browser conversions only",
                help_text="Refuse browser conversions without a valid signature: your server signs "
                "orderId|value|currency with the API secret and the page passes it to trackConversion "
                "(docs/tracking.md, signed conversions)."),
        ),
        migrations.CreateModel(
            name="EncryptionKeyState",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("derived_key_retired_at", models.DateTimeField(blank=True, null=True)),
            ],
            options={"verbose_name": "encryption key state"},
        ),
        migrations.RunPython(create_cache_table, migrations.RunPython.noop),
    ]
