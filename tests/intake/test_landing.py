"""Landing URLs keep origin, path, msclkid and utm_* only (adsync/intake/landing.py): the rest may hold personal data."""

from __future__ import annotations

import pytest

from adsync.intake.landing import clean_landing_url


@pytest.mark.parametrize("sent, kept", [
    ("https://shop.example.com/p?email=a%40b.com&phone=123&msclkid=abc&utm_source=bing",
     "https://shop.example.com/p?msclkid=abc&utm_source=bing"),
    ("https://shop.example.com/?MSCLKID=abc&UTM_Campaign=Spring%20Sale&utm_term=", "https://shop.example.com/?MSCLKID=abc&UTM_Campaign=Spring+Sale&utm_term="),
    ("https://user:password@Shop.Example.com:8443/a/b#reset-token", "https://shop.example.com:8443/a/b"),
    ("http://[2001:db8::1]:8080/x?token=secret", "http://[2001:db8::1]:8080/x"),
    ("HTTPS://shop.example.com", "https://shop.example.com"),
    ("  https://shop.example.com/  ", "https://shop.example.com/"),
], ids=["pii-parameters", "case-and-encoding", "credentials-port-fragment", "ipv6", "scheme-case", "spaces"])
def test_a_landing_url_keeps_origin_path_msclkid_and_utm_only(sent, kept):
    assert clean_landing_url(sent) == kept


@pytest.mark.parametrize("sent", ["javascript:alert(1)", "data:text/html,hi", "/relative/path?x=1", "", "shop.example.com",
                                  "https://shop.example.com:99999/", "ftp://shop.example.com/file"])
def test_anything_but_an_http_url_is_not_kept(sent):
    assert clean_landing_url(sent) == ""
