"""`manage.py seed_demo`: the demo site, its emulator connection and a staff login.

Idempotent: run by every `python3 dev.py run`, it creates only what is missing and never undoes
what staff did in the admin. The admin's password is printed once, when the user is created (or
reset with --reset-admin); it is stored nowhere else.
"""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from adsync import jobs
from adsync.models import Connection, StaffNotificationPreference
from adsync.security.roles import ensure_roles
from emulator.demo_site import demo_connection, ensure_demo_site, ensure_demo_staff


class Command(BaseCommand):
    help = "Create the demo site connected to the built-in emulator, and a staff login (emulator mode only)."

    def add_arguments(self, parser):
        parser.add_argument("--reset-admin", action="store_true",
                            help="Give the demo admin a new password (printed once).")

    def handle(self, *args, reset_admin=False, **options):
        if settings.MICROSOFT_ADS_ENVIRONMENT != "emulator":
            raise CommandError("seed_demo only runs with MICROSOFT_ADS_ENVIRONMENT=emulator.")
        site = ensure_demo_site()
        login = ensure_demo_staff(reset=reset_admin)
        ensure_roles()  # the operators / viewers groups (docs/notifications.md)
        StaffNotificationPreference.objects.get_or_create(user=get_user_model().objects.get(username=login.username))
        connection = demo_connection(site)
        if connection is not None and connection.status == Connection.ACTIVE:
            # Goals fetched and the insights sync queued as soon as the worker starts (dev.py starts
            # it once the web server, which hosts the emulator, answers): the card is healthy at once.
            jobs.enqueue(jobs.connection_ready, connection.pk)
        base = settings.ADSYNC_PUBLIC_URL
        self.stdout.write(self.style.SUCCESS("adsync demo is ready:"))
        if login.password:
            self.stdout.write(f"  Admin:        {base}/admin/   user: {login.username}   password: {login.password}")
            self.stdout.write("                (shown this once; `python3 dev.py run --reset-admin` sets a new one)")
        else:
            self.stdout.write(f"  Admin:        {base}/admin/   user: {login.username}   (password as printed when "
                              f"it was created; `python3 dev.py run --reset-admin` sets a new one)")
        self.stdout.write(f"  Demo page:    {base}/demo/   (site key: {site.key})")
        self.stdout.write(f"  Ad click:     {base}/emulator/click/?next=/demo/   (a real-looking msclkid)")
        self.stdout.write(f"  Test click:   {base}/demo/?msclkid=test_msclkid_123   (Microsoft rejects it)")
        self.stdout.write(f"  Sync log:     {base}/admin/adsync/push/")
        self.stdout.write(f"  Emulator:     {base}/emulator/   (staff login above; edit goals and clicks there)")
