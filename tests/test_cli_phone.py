"""`ryng_async._phone`: opt-in E.164 normalization with libphonenumber's rules."""

from __future__ import annotations

import sys

import pytest

from ryng_async import ConfigurationError, ValidationError
from ryng_async._phone import normalize_number, normalizer

pytest.importorskip("phonenumbers")


@pytest.mark.parametrize(
    "number",
    ["09876543210", "98765 43210", "+91-98765-43210", "+919876543210", "0091 98765 43210"],
)
def test_national_and_international_formats_become_e164(number: str) -> None:
    assert normalize_number(number, "IN") == "+919876543210"


def test_a_number_with_its_own_country_keeps_it() -> None:
    assert normalize_number("+1 650-253-0000", "IN") == "+16502530000"
    assert normalize_number("(650) 253-0000", "us") == "+16502530000"


@pytest.mark.parametrize(
    ("number", "why"),
    [
        ("12345", "it is too short"),
        ("abc", "it does not look like a phone number"),
        ("98765 43210 99999 12", "it is too long"),
        ("", "it does not look like a phone number"),
        (9876543210, "must be a phone number string"),
    ],
)
def test_invalid_numbers_name_why(number: object, why: str) -> None:
    normalize = normalizer("IN")
    with pytest.raises(ValidationError) as info:
        normalize(number)
    assert info.value.field == "number"
    assert why in info.value.reason


def test_unknown_region_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="'ZZ' is not a region"):
        normalizer("ZZ")


def test_missing_phonenumbers_says_which_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "phonenumbers", None)
    with pytest.raises(ConfigurationError, match=r"ryng-async\[phone\]"):
        normalizer("IN")
