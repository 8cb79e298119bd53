"""Forgetting a person in the admin: the audit list (who and when, never what), the "Forget a person"
page (operators only: keys, then a confirmation listing what will go) and the same from conversions."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters

from adsync.admin.read_only import ReadOnlyAdmin
from adsync.intake import forget
from adsync.intake.identity import SHA256_HEX, IdentifierError
from adsync.models import Erasure, Site
from adsync.security.roles import OPERATE_PERMISSION


class ForgetForm(forms.Form):
    """The keys an operator has. Email and phone are hashed at once and never stored or shown again."""

    email = forms.CharField(required=False, max_length=320)
    phone = forms.CharField(required=False, max_length=64,
                            help_text="E.164 (+14255551234), or national format of the site's country.")
    visitor_id = forms.CharField(label="Visitor id", required=False, max_length=64,
                                 help_text="The adsync_vid cookie's value.")
    order_id = forms.CharField(label="Order id", required=False, max_length=200)
    site = forms.ModelChoiceField(Site.objects.all(), required=False, empty_label="every site")

    def clean(self):
        data = super().clean()
        if not any(data.get(k) for k in ("email", "phone", "visitor_id", "order_id")):
            raise forms.ValidationError("Give at least one of email, phone, visitor id or order id.")
        try:
            self.person = forget.person(email=data.get("email", ""), phone=data.get("phone", ""),
                                        visitor_id=data.get("visitor_id", ""), order_id=data.get("order_id", ""),
                                        site=data.get("site"))
        except IdentifierError as error:
            raise forms.ValidationError(str(error)) from None
        return data


def _hidden(who: forget.Person) -> dict[str, list]:
    """The confirmation's hidden fields: hashes and ids only, so the raw email and phone never travel back."""
    return {"hashed_email": sorted(who.hashed_emails), "hashed_phone": sorted(who.hashed_phones),
            "visitor_id": sorted(who.visitor_ids), "order_id": sorted(who.order_ids),
            "conversion": sorted(who.conversion_ids), "site": [who.site.pk] if who.site else []}


def _person_from_confirmation(request: HttpRequest) -> forget.Person:
    post = request.POST
    site = Site.objects.filter(pk=post.get("site")).first() if post.get("site", "").isdigit() else None
    return forget.Person(
        hashed_emails={v for v in post.getlist("hashed_email") if SHA256_HEX.match(v)},
        hashed_phones={v for v in post.getlist("hashed_phone") if SHA256_HEX.match(v)},
        visitor_ids={v for v in post.getlist("visitor_id") if v}, order_ids={v for v in post.getlist("order_id") if v},
        conversion_ids={int(v) for v in post.getlist("conversion") if v.isdigit()}, site=site)


def confirm_or_erase(model_admin, request: HttpRequest, who: forget.Person, extra: dict | None = None) -> HttpResponse:
    """Step 2 (a page listing what will go) or, on its confirmation, step 3 (erase, audit, back to the list)."""
    footprint = forget.find(who)
    if request.POST.get("erase") == "yes":
        erasure = forget.erase(footprint, actor=request.user.get_username(), via=Erasure.VIA_ADMIN)
        counts = ", ".join(f"{n} {what}" for what, n in erasure.counts.items() if n) or "nothing"
        model_admin.message_user(request, f"Erased: {counts}. The audit line says who and when, not what.")
        return HttpResponseRedirect(reverse("admin:adsync_erasure_changelist"))
    return TemplateResponse(request, "admin/adsync/erasure/confirm.html", {
        **model_admin.admin_site.each_context(request), "title": "Forget a person: confirm",
        "footprint": footprint, "hidden": _hidden(who), "opts": Erasure._meta, **(extra or {}),
    })


@admin.register(Erasure)
class ErasureAdmin(ReadOnlyAdmin):
    list_display = ["erased_at", "actor", "via", "keys", "counts"]
    readonly_fields = ["erased_at", "actor", "via", "keys", "counts"]
    change_list_template = "admin/adsync/erasure/change_list.html"

    def get_urls(self):
        view = self.admin_site.admin_view(self.forget_view)
        return [path("forget/", view, name="adsync_forget")] + super().get_urls()

    @method_decorator(sensitive_post_parameters("email", "phone"))
    def forget_view(self, request: HttpRequest) -> HttpResponse:
        """Operators only: the keys (step 1), what will go (step 2), the erasure (step 3)."""
        if not request.user.has_perm(OPERATE_PERMISSION):
            raise PermissionDenied
        if request.method == "POST" and "confirm" in request.POST:
            return confirm_or_erase(self, request, _person_from_confirmation(request))
        form = ForgetForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            return confirm_or_erase(self, request, form.person)
        return TemplateResponse(request, "admin/adsync/erasure/forget.html", {
            **self.admin_site.each_context(request), "title": "Forget a person", "form": form, "opts": Erasure._meta})


def forget_selected_conversions(model_admin, request: HttpRequest, queryset) -> HttpResponse:
    """The Conversions list's action: the people behind the selected conversions, with the same confirmation."""
    if "confirm" in request.POST:
        return confirm_or_erase(model_admin, request, _person_from_confirmation(request))
    ids = list(queryset.values_list("pk", flat=True)[:500])
    return confirm_or_erase(model_admin, request, forget.Person(conversion_ids=set(ids)), {
        "action": request.POST.get("action", ""), "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        "selected": ids})
