"""Hashing follows Microsoft's rules exactly; Microsoft's published examples are the vectors."""

import pytest

from adsync.intake.identity import IdentifierError, clean_msclkid, hash_email, hash_phone, normalize_email

# docs/microsoft-api.md#hashing: the docs' CAPI examples.
PHONE_VECTOR = "c59475d96e9f01d7d18d06cfad84dd02333207f02c0c2c5663ef2782cda0390e"
EMAIL_VECTOR = "ec81f3ac7b2b19675bab9d54cf416f9f18cff87c97da5cca82c0f0891bc40602"


@pytest.mark.parametrize("raw", ["john@contoso.com", "  John@Contoso.com ", "j.o.h.n+newsletter@contoso.com"])
def test_email_is_normalised_then_hashed_like_microsoft(raw):
    assert hash_email(raw) == EMAIL_VECTOR


@pytest.mark.parametrize("raw", ["+14255551234", "+1 (425) 555-1234", "425-555-1234", "(425) 5551234"])
def test_phone_is_hashed_as_e164_with_plus(raw):
    assert hash_phone(raw, "US") == PHONE_VECTOR


def test_phone_without_plus_uses_the_sites_country():
    assert hash_phone("020 7946 0018", "GB") == hash_phone("+442079460018", None)


def test_existing_sha256_digests_pass_through_lowercased():
    assert hash_email(EMAIL_VECTOR.upper()) == EMAIL_VECTOR
    assert hash_phone(PHONE_VECTOR, "US") == PHONE_VECTOR


def test_accents_and_spaces_are_removed_from_email():
    assert normalize_email("Jöhn Doe@Contoso.com") == "johndoe@contoso.com"


@pytest.mark.parametrize("raw", ["not-an-email", "john@", "@contoso.com", "john@contoso"])
def test_invalid_email_is_refused_without_echoing_it(raw):
    with pytest.raises(IdentifierError) as err:
        hash_email(raw)
    assert raw not in str(err.value)


def test_invalid_phone_is_refused():
    with pytest.raises(IdentifierError):
        hash_phone("12", "US")


def test_dashed_uuid_click_ids_fold_to_32_hex():
    assert clean_msclkid("DD4AFCCC-B1C9-4A4C-AD95-44DD7E5006AB") == "dd4afcccb1c94a4cad9544dd7e5006ab"
    assert clean_msclkid("test_msclkid_123") == "test_msclkid_123"
    with pytest.raises(IdentifierError):
        clean_msclkid("bad id with spaces")
