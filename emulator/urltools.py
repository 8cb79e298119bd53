"""URL helpers shared by the consent redirect and the simulated ad click."""

from __future__ import annotations

from urllib.parse import urlencode


def add_query(url: str, params: dict) -> str:
    """Append parameters the way Microsoft auto-tags: keep the query, `&` if one exists, before any #fragment
    (docs/microsoft-api.md#msclkid)."""
    base, hash_sign, fragment = url.partition("#")
    if base.endswith(("?", "&")):
        separator = ""
    else:
        separator = "&" if "?" in base else "?"
    return f"{base}{separator}{urlencode(params)}{hash_sign}{fragment}"
