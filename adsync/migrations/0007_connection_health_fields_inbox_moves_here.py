"""Connection health as data (last failure's operation, kind and code), and the inbox (Hit) moves from
the tracking app to adsync, keeping its table `tracking_hit`: no data is copied."""

import re

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models

# The card used to read these from the message text; this runs once, over existing rows.
_PREFIXES = [("Token refresh failed", "token_refresh"), ("Insights sync failed", "insights"),
             ("Goal refresh failed", "goal_refresh")]
_NO_ACCESS = re.compile(r"(?:^|: )106\b")
_APP_REJECTED = re.compile(r"\b(invalid_client|unauthorized_client)\b")
_CODE = re.compile(r"(?:^|: )(\d{1,5})\b")


def backfill_health(apps, schema_editor):
    Connection = apps.get_model("adsync", "Connection")
    for connection in Connection.objects.using(schema_editor.connection.alias).exclude(last_error=""):
        text = connection.last_error
        connection.last_error_operation = next((op for prefix, op in _PREFIXES if text.startswith(prefix)), "upload")
        app_rejected = _APP_REJECTED.search(text)
        code = _CODE.search(text)
        connection.last_error_code = app_rejected.group(1) if app_rejected else code.group(1) if code else ""
        if connection.status == "token_expired":
            connection.last_error_kind = "reconnect"
        elif _NO_ACCESS.search(text):
            connection.last_error_kind = "no_access"
        elif connection.last_error_operation == "token_refresh":
            connection.last_error_kind = "review" if app_rejected else "transient"
        else:
            connection.last_error_kind = "review"
        connection.save(update_fields=["last_error_operation", "last_error_kind", "last_error_code"])


def move_content_type(apps, schema_editor, old="tracking", new="adsync"):
    """Keep the inbox's permissions (and admin log entries) attached: the content type follows the model."""
    ContentType = apps.get_model("contenttypes", "ContentType")
    types = ContentType.objects.using(schema_editor.connection.alias)
    if not types.filter(app_label=new, model="hit").exists():
        types.filter(app_label=old, model="hit").update(app_label=new)


def move_content_type_back(apps, schema_editor):
    move_content_type(apps, schema_editor, old="adsync", new="tracking")


class Migration(migrations.Migration):

    dependencies = [
        ("adsync", "0006_sync_log_and_ingest_indexes"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("tracking", "0002_hit_lane"),
    ]

    operations = [
        migrations.AddField(
            model_name="connection",
            name="last_error_code",
            field=models.CharField(blank=True, help_text="Microsoft's numeric code, or the OAuth error (e.g. invalid_grant).", max_length=40),
        ),
        migrations.AddField(
            model_name="connection",
            name="last_error_kind",
            field=models.CharField(blank=True, help_text="adsync's classification (adsync/microsoft/errors.py Kind).", max_length=20),
        ),
        migrations.AddField(
            model_name="connection",
            name="last_error_operation",
            field=models.CharField(blank=True, choices=[("upload", "Upload"), ("token_refresh", "Token refresh"), ("goal_refresh", "Goal list refresh"), ("insights", "Insights sync")], max_length=20),
        ),
        migrations.AlterField(
            model_name="connection",
            name="last_error",
            field=models.TextField(blank=True, help_text="Microsoft's message, verbatim.", verbose_name="last error"),
        ),
        migrations.RunPython(backfill_health, migrations.RunPython.noop),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="Hit",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("kind", models.CharField(choices=[("click", "click"), ("conversion", "conversion")], max_length=10)),
                        ("payload", models.JSONField(help_text="The validated report: hashes only, never a raw email or phone.")),
                        ("received_at", models.DateTimeField(default=django.utils.timezone.now, help_text="The click or conversion time: when the browser reported it.")),
                        ("error", models.TextField(blank=True, help_text="Why storing it failed; such a hit waits for 'Process again'.")),
                        ("lane", models.PositiveSmallIntegerField(db_default=0, help_text="Every hit of one visitor has the same lane; one drain at a time stores a lane, in order.")),
                        ("site", models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name="+", to="adsync.site")),
                    ],
                    options={
                        "verbose_name": "inbox hit",
                        "verbose_name_plural": "inbox (hits not yet stored)",
                        "db_table": "tracking_hit",
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(move_content_type, move_content_type_back),
    ]
