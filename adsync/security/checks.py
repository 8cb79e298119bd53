"""System checks: refuse to look healthy when production settings are unsafe."""

from django.core.checks import Tags, Warning, register

from adsync.conf import conf


@register(Tags.security, deploy=True)
def encryption_key_configured(app_configs, **kwargs):
    if conf.encryption_keys:
        return []
    return [Warning(
        "ADSYNC_ENCRYPTION_KEY is not set: tokens are encrypted with a key derived from SECRET_KEY.",
        hint="Generate one with: python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'",
        id="adsync.W001",
    )]


@register(deploy=True)
def real_microsoft_endpoints(app_configs, **kwargs):
    if not conf.is_emulator:
        return []
    return [Warning(
        "MICROSOFT_ADS_ENVIRONMENT is 'emulator': conversions go to the built-in emulator, not Microsoft.",
        hint="Set MICROSOFT_ADS_ENVIRONMENT=production (or sandbox) and the Microsoft credentials.",
        id="adsync.W002",
    )]


@register(Tags.security, deploy=True)
def staff_mfa_required(app_configs, **kwargs):
    if conf.require_mfa:
        return []
    return [Warning(
        "ADSYNC_REQUIRE_MFA is off: staff can reach the admin with a password alone.",
        hint="Set ADSYNC_REQUIRE_MFA=true; staff then add an authenticator app at /accounts/2fa/ (docs/notifications.md).",
        id="adsync.W010",
    )]
