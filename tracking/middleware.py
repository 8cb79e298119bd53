"""The snippet's hot path: POST /t/v1/collect is answered before the session and sign-in middleware.

Every page a visitor opens on a client site may report to us, so this endpoint takes most of
the traffic and needs none of what the rest of the stack does for staff: sessions, sign-in,
MFA, CSRF (the body carries no cookie and is checked against the site's allowed origins),
messages, frame options or URL resolution. Placed right after SecurityMiddleware (which keeps
its HTTPS redirect and headers), this middleware hands such requests straight to the view.
Every other method on the same URL (OPTIONS preflights, a stray GET) takes the normal route.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.urls import get_script_prefix, reverse

from tracking import views


class SnippetIngestMiddleware:
    def __init__(self, get_response) -> None:
        self.get_response = get_response
        self.collect_path: str | None = None  # reversed on first use: the URLconf may not be loaded yet

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method == "POST":
            if self.collect_path is None:  # as request.path_info has it: without the script prefix
                self.collect_path = "/" + reverse("tracking:collect").removeprefix(get_script_prefix())
            if request.path_info == self.collect_path:
                return views.collect(request)
        return self.get_response(request)
