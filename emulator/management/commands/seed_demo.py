"""`manage.py seed_demo`: the demo site, its emulator connection and a staff login (printed)."""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from adsync import jobs
from adsync.models import Connection, StaffNotificationPreference
from adsync.security.roles import ensure_roles
from emulator.demo_site import ensure_demo_site, ensure_demo_staff


class Command(BaseCommand):
    help = "Create the demo site connected to the built-in emulator, and a staff login (emulator mode only)."

    def handle(self, *args, **options):
        if settings.MICROSOFT_ADS_ENVIRONMENT != "emulator":
            raise CommandError("seed_demo only runs with MICROSOFT_ADS_ENVIRONMENT=emulator.")
        site = ensure_demo_site()
        login = ensure_demo_staff()
        ensure_roles()  # the operators / viewers groups (docs/notifications.md)
        StaffNotificationPreference.objects.get_or_create(user=get_user_model().objects.get(username=login.username))
        # The worker fetches the emulator's campaign numbers at start, so the card is not stale.
        jobs.enqueue_insights(list(site.connections.filter(status=Connection.ACTIVE).values_list("pk", flat=True)))
        base = settings.ADSYNC_PUBLIC_URL
        self.stdout.write(self.style.SUCCESS("adsync demo is ready:"))
        self.stdout.write(f"  Admin:        {base}/admin/   user: {login.username}   password: {login.password}")
        self.stdout.write(f"  Demo page:    {base}/demo/   (site key: {site.key})")
        self.stdout.write(f"  Ad click:     {base}/emulator/click/?next=/demo/   (a real-looking msclkid)")
        self.stdout.write(f"  Test click:   {base}/demo/?msclkid=test_msclkid_123   (Microsoft rejects it)")
        self.stdout.write(f"  Sync log:     {base}/admin/adsync/push/")
        self.stdout.write(f"  Emulator:     {base}/emulator/   (staff login above; edit goals and clicks there)")
