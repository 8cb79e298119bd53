"""Sites: the snippet tag to embed, allowed origins, the browser's limits, and the server API secrets.

A new API secret is shown once, on a page of its own that no cache keeps (never in a message,
whose cookie would carry it). Two secrets may be active at once, so the client's servers move to
the new one before the old one is revoked; each is revoked on its own page (adsync/sites/api_secrets.py).
Only staff who may change the site (superusers) issue or revoke secrets.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.views.decorators.cache import never_cache

from adsync.conf import conf
from adsync.models import ApiSecret, Site
from adsync.sites import api_secrets


@admin.register(Site)
class SiteAdmin(admin.ModelAdmin):
    list_display = ["name", "key", "default_currency", "active_api_secrets", "created_at"]
    search_fields = ["name", "key"]
    readonly_fields = ["key", "snippet_tag", "api_secrets_panel", "created_at"]
    fieldsets = [
        (None, {"fields": ["name", "key", "snippet_tag", "allowed_origins", "default_currency", "default_country",
                           "consent_required", "created_at"]}),
        ("What a browser may report", {"fields": ["browser_value_ceiling", "signed_browser_conversions"],
                                       "description": "The site key is public: anyone can send what the snippet "
                                                      "sends. See docs/security.md."}),
        ("Server API", {"fields": ["api_secrets_panel"]}),
    ]

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("api_secrets")

    @admin.display(description="Active API secrets")
    def active_api_secrets(self, site: Site) -> int:
        return sum(1 for secret in site.api_secrets.all() if secret.is_active)

    @admin.display(description="Snippet to embed on every landing page")
    def snippet_tag(self, site: Site) -> str:
        if not site.pk:
            return "Save the site first."
        consent = ' data-consent="required"' if site.consent_required else ""  # the snippet's consent mode
        return format_html(
            '<code>&lt;script async src="{}/t/v1/adsync.js" data-site="{}"{}&gt;&lt;/script&gt;</code>',
            conf.public_url, site.key, consent,
        )

    def get_fieldsets(self, request, obj=None):
        """Staff who may not change the site see its secrets without the Issue and Revoke links."""
        if self.has_change_permission(request, obj):
            return self.fieldsets
        return [(name, {**options, "fields": ["api_secrets_list" if f == "api_secrets_panel" else f
                                              for f in options["fields"]]}) for name, options in self.fieldsets]

    def get_readonly_fields(self, request, obj=None):
        return [*self.readonly_fields, "api_secrets_list"]

    @admin.display(description="API secrets")
    def api_secrets_panel(self, site: Site) -> str:
        return self._secrets(site, actions=True)

    @admin.display(description="API secrets")
    def api_secrets_list(self, site: Site) -> str:
        return self._secrets(site, actions=False)

    def _secrets(self, site: Site, *, actions: bool) -> str:
        if not site.pk:
            return "Save the site first."
        rows = format_html_join("", "<li>{}</li>", ((self._describe(site, secret, actions),)
                                                    for secret in site.api_secrets.all()))
        new = format_html(' <a class="button" href="{}">Issue a new secret</a>',
                          reverse("admin:adsync_site_api_secret_new", args=[site.pk])) if actions else ""
        return format_html("<ul>{}</ul>{}{}", rows or mark_safe("<li>none yet</li>"),
                           f"At most {ApiSecret.MAX_ACTIVE} active at once. Only a hash is stored: a secret is shown "
                           f"once, when issued.", new)

    @staticmethod
    def _describe(site: Site, secret: ApiSecret, actions: bool) -> str:
        used = f"last used {secret.last_used_at:%Y-%m-%d %H:%M} UTC" if secret.last_used_at else "never used"
        if not secret.is_active:
            return format_html("<code>{}…</code> issued {} UTC · revoked {} UTC", secret.hint,
                               f"{secret.created_at:%Y-%m-%d %H:%M}", f"{secret.revoked_at:%Y-%m-%d %H:%M}")
        revoke = format_html(' · <a href="{}">Revoke</a>', reverse("admin:adsync_site_api_secret_revoke",
                                                                   args=[site.pk, secret.pk])) if actions else ""
        return format_html("<code>{}…</code> issued {} UTC · {} · <strong>active</strong>{}", secret.hint,
                           f"{secret.created_at:%Y-%m-%d %H:%M}", used, revoke)

    def get_urls(self):
        def wrap(view):
            return self.admin_site.admin_view(never_cache(view))

        return [
            path("<int:pk>/api-secrets/new/", wrap(self.issue_secret), name="adsync_site_api_secret_new"),
            path("<int:pk>/api-secrets/<int:secret_pk>/revoke/", wrap(self.revoke_secret),
                 name="adsync_site_api_secret_revoke"),
        ] + super().get_urls()

    def _site(self, request: HttpRequest, pk: int) -> Site:
        site = get_object_or_404(Site, pk=pk)
        if not self.has_change_permission(request, site):
            raise PermissionDenied
        return site

    def _page(self, request: HttpRequest, site: Site, title: str, **context) -> TemplateResponse:
        return TemplateResponse(request, "admin/adsync/site/api_secret.html", {
            **self.admin_site.each_context(request), "opts": Site._meta, "site_obj": site, "title": title,
            "change_url": reverse("admin:adsync_site_change", args=[site.pk]), **context})

    def issue_secret(self, request: HttpRequest, pk: int) -> HttpResponse:
        """GET asks; POST issues and shows the secret in this response only."""
        site = self._site(request, pk)
        if request.method != "POST":
            return self._page(request, site, "Issue a new server API secret", step="confirm",
                              active=[s for s in site.api_secrets.all() if s.is_active])
        try:
            secret = api_secrets.issue(site)
        except api_secrets.TooManyActive:
            messages.error(request, f"{site.name} has {ApiSecret.MAX_ACTIVE} active secrets already: revoke the one "
                                    f"your servers no longer use, then issue a new one.")
            return redirect("admin:adsync_site_change", site.pk)
        return self._page(request, site, "Your new server API secret", step="shown", secret=secret)

    def revoke_secret(self, request: HttpRequest, pk: int, secret_pk: int) -> HttpResponse:
        site = self._site(request, pk)
        secret = get_object_or_404(ApiSecret, pk=secret_pk, site=site)
        if request.method != "POST":
            return self._page(request, site, "Revoke a server API secret", step="revoke", api_secret=secret)
        if api_secrets.revoke(secret):
            messages.success(request, f"Secret {secret.hint}… of {site.name} is revoked: calls with it are now "
                                      f"refused (401).")
        return redirect("admin:adsync_site_change", site.pk)
