"""What of a landing URL is kept: origin, path, msclkid and utm_* parameters; nothing else.

A landing URL's query string may carry anything the client's pages put there (an email, a phone
number, a session or reset token), and the Click keeps it for staff to read. It is cut down on the
server, whatever the snippet sent (docs/security.md#landing-urls).
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MAX_LENGTH = 2000


def is_kept_parameter(name: str) -> bool:
    lowered = name.lower()
    return lowered == "msclkid" or lowered.startswith("utm_")


def clean_landing_url(url: str) -> str:
    """scheme://host[:port]/path?msclkid=…&utm_…=…, without credentials, other parameters or fragment; "" if not http(s)."""
    try:
        parts = urlsplit(url.strip())
        host, port = parts.hostname, parts.port
    except ValueError:  # an unparsable port or host
        return ""
    if parts.scheme.lower() not in ("http", "https") or not host:
        return ""
    origin = f"[{host}]" if ":" in host else host
    if port is not None:
        origin += f":{port}"
    kept = [(name, value) for name, value in parse_qsl(parts.query, keep_blank_values=True) if is_kept_parameter(name)]
    return urlunsplit((parts.scheme.lower(), origin, parts.path, urlencode(kept), ""))[:MAX_LENGTH]
