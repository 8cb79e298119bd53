"""Source ranks (a push carries whose report it sends), the snippet's idempotency keys on conversions, and
landing URLs cut down to origin, path, msclkid and utm_* (the query strings stored before may hold PII)."""

from django.db import migrations, models
from django.db.models import OuterRef, Q, Subquery

from adsync.intake.landing import clean_landing_url

BATCH = 1000


def push_source_from_conversion(apps, schema_editor):
    Push = apps.get_model("adsync", "Push")
    Conversion = apps.get_model("adsync", "Conversion")
    db = schema_editor.connection.alias
    source = Subquery(Conversion.objects.using(db).filter(pk=OuterRef("conversion_id")).values("source")[:1])
    Push.objects.using(db).exclude(conversion__source="browser").update(source=source)


def clean_landing_urls(apps, schema_editor):
    Click = apps.get_model("adsync", "Click")
    db = schema_editor.connection.alias
    rows = Click.objects.using(db).filter(Q(landing_url__contains="?") | Q(landing_url__contains="#")
                                         | Q(landing_url__contains="@")).only("id", "landing_url")
    batch = []
    for click in rows.iterator(chunk_size=BATCH):
        click.landing_url = clean_landing_url(click.landing_url)
        batch.append(click)
        if len(batch) == BATCH:
            Click.objects.using(db).bulk_update(batch, ["landing_url"])
            batch = []
    Click.objects.using(db).bulk_update(batch, ["landing_url"])


class Migration(migrations.Migration):

    dependencies = [
        ("adsync", "0012_api_secrets_site_limits_shared_cache"),
    ]

    operations = [
        migrations.AddField(
            model_name="conversion",
            name="idempotency_key",
            field=models.CharField(blank=True, editable=False, max_length=64),
        ),
        migrations.AddConstraint(
            model_name="conversion",
            constraint=models.UniqueConstraint(condition=~Q(idempotency_key=""), fields=("site", "idempotency_key"),
                                               name="conversion_unique_call"),
        ),
        migrations.AddField(
            model_name="push",
            name="source",
            field=models.CharField(choices=[("browser", "Browser snippet"), ("server", "Server API"),
                                            ("admin", "Admin test")], default="browser", max_length=10),
        ),
        migrations.RunPython(push_source_from_conversion, migrations.RunPython.noop),
        migrations.RemoveConstraint(model_name="push", name="push_once_per_connection"),
        migrations.RemoveConstraint(model_name="push", name="push_adjustment_once"),
        migrations.AddConstraint(
            model_name="push",
            constraint=models.UniqueConstraint(condition=Q(kind="conversion"), fields=("conversion", "connection", "source"),
                                               name="push_once_per_source"),
        ),
        migrations.AddConstraint(
            model_name="push",
            constraint=models.UniqueConstraint(condition=Q(adjustment__isnull=False),
                                               fields=("adjustment", "connection", "source"),
                                               name="push_adjustment_once_per_source"),
        ),
        migrations.RunPython(clean_landing_urls, migrations.RunPython.noop),
    ]
