"""Staff emails: each one is a subject/text/HTML template trio under templates/emails/.

Sent through Django's email backend (console in development, SMTP when EMAIL_HOST is set),
one message per recipient so no one sees the others' addresses.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.core.mail import EmailMultiAlternatives, get_connection
from django.template.loader import render_to_string

from adsync.conf import conf


def render(name: str, context: dict) -> tuple[str, str, str]:
    """(subject, text, html) of templates/emails/<name>_{subject.txt,.txt,.html}."""
    subject = render_to_string(f"emails/{name}_subject.txt", context)
    subject = " ".join(subject.split())  # a header must be one line
    text = render_to_string(f"emails/{name}.txt", context)
    html = render_to_string(f"emails/{name}.html", context)
    return subject, text, html


def send(name: str, recipients: Iterable[str], context: dict) -> int:
    """Render once and send a text+HTML message to each recipient; returns how many went out."""
    subject, text, html = render(name, context)
    messages = []
    for address in recipients:
        message = EmailMultiAlternatives(subject, text, conf.default_from_email, [address])
        message.attach_alternative(html, "text/html")
        messages.append(message)
    if not messages:
        return 0
    return get_connection().send_messages(messages) or 0
