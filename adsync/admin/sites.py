"""Sites: the snippet tag to embed, allowed origins, and the server API secret (shown once)."""

from django.contrib import admin, messages
from django.utils.html import format_html

from adsync.conf import conf
from adsync.models import Site


@admin.register(Site)
class SiteAdmin(admin.ModelAdmin):
    list_display = ["name", "key", "default_currency", "has_api_secret", "created_at"]
    search_fields = ["name", "key"]
    readonly_fields = ["key", "snippet_tag", "has_api_secret", "created_at"]
    fields = ["name", "key", "snippet_tag", "allowed_origins", "default_currency", "default_country",
              "consent_required", "has_api_secret", "created_at"]
    actions = ["generate_api_secret"]

    @admin.display(boolean=True, description="Server API secret set")
    def has_api_secret(self, site: Site) -> bool:
        return bool(site.api_secret_hash)

    @admin.display(description="Snippet to embed on every landing page")
    def snippet_tag(self, site: Site) -> str:
        if not site.pk:
            return "Save the site first."
        consent = ' data-consent="required"' if site.consent_required else ""  # the snippet's consent mode
        return format_html(
            '<code>&lt;script async src="{}/t/v1/adsync.js" data-site="{}"{}&gt;&lt;/script&gt;</code>',
            conf.public_url, site.key, consent,
        )

    @admin.action(description="Generate a new server API secret (shown once)", permissions=["change"])
    def generate_api_secret(self, request, queryset):
        for site in queryset:
            secret = site.rotate_api_secret()
            self.message_user(
                request,
                f"New server API secret for {site.name} (copy it now, it is not stored and will not be shown again): "
                f"{secret}",
                messages.WARNING,
            )
