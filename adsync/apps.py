from django.apps import AppConfig


class AdsyncConfig(AppConfig):
    name = "adsync"
    verbose_name = "adsync: Microsoft Ads offline conversions"

    def ready(self) -> None:
        # Registrations only, no database access: the system checks, and the alert emails'
        # listener for cards flipping to Token expired.
        from adsync.notify import alerts  # noqa: F401
        from adsync.security import checks  # noqa: F401
