"""The inbox (Hit) now belongs to adsync (adsync/migrations/0007): only the state moves, the table stays."""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ("tracking", "0002_hit_lane"),
        ("adsync", "0007_connection_health_fields_inbox_moves_here"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="Hit")],
            database_operations=[],
        ),
    ]
