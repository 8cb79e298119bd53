from django.apps import AppConfig


class AdsyncConfig(AppConfig):
    name = "adsync"
    verbose_name = "adsync: Microsoft Ads offline conversions"

    def ready(self) -> None:
        from adsync import checks  # noqa: F401  (registers system checks)
