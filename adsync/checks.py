"""System checks: refuse to look healthy when production settings are unsafe."""

from django.conf import settings
from django.core.checks import Tags, Warning, register


@register(Tags.security, deploy=True)
def encryption_key_configured(app_configs, **kwargs):
    if settings.ADSYNC_ENCRYPTION_KEYS:
        return []
    return [Warning(
        "ADSYNC_ENCRYPTION_KEY is not set: tokens are encrypted with a key derived from SECRET_KEY.",
        hint="Generate one with: python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'",
        id="adsync.W001",
    )]


@register(deploy=True)
def real_microsoft_endpoints(app_configs, **kwargs):
    if settings.MICROSOFT_ADS_ENVIRONMENT != "emulator":
        return []
    return [Warning(
        "MICROSOFT_ADS_ENVIRONMENT is 'emulator': conversions go to the built-in emulator, not Microsoft.",
        hint="Set MICROSOFT_ADS_ENVIRONMENT=production (or sandbox) and the Microsoft credentials.",
        id="adsync.W002",
    )]
