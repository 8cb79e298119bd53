"""Error reports (error e-mails, error trackers, DEBUG pages) that never carry a visitor's data or a secret.

Django's own filter hides the variables named by `sensitive_variables` and the values of the POST
parameters named by `sensitive_post_parameters`. The public endpoints read JSON, not a form, and a
body sent as a form (any client may choose its Content-Type) becomes POST parameters whose *names*
are the raw JSON, email included, which Django would still print. For a request marked with
`sensitive_post_parameters()` (every public view, tracking/views.py) this filter shows neither
names nor values. Settings: DEFAULT_EXCEPTION_REPORTER_FILTER (config/settings.py).
"""

from __future__ import annotations

from django.views.debug import SafeExceptionReporterFilter

HIDDEN_BODY = {"(body)": SafeExceptionReporterFilter.cleansed_substitute}


class BodyHidingFilter(SafeExceptionReporterFilter):
    def get_post_parameters(self, request):
        if request is not None and getattr(request, "sensitive_post_parameters", None) == "__ALL__":
            return HIDDEN_BODY
        return super().get_post_parameters(request)
