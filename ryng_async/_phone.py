"""Opt-in normalization of phone numbers to E.164 with Google's libphonenumber rules.

ETL files hold numbers the way people type them (``09876543210``, ``98765 43210``,
``+91-98765-43210``). Given the region the national numbers belong to, `normalizer`
turns each into E.164 (``+919876543210``) with the ``phonenumbers`` package (the ``phone``
extra: ``pip install "ryng-async[phone]"``), imported only when asked for. A number
libphonenumber calls invalid raises `ValidationError` naming why, so a bulk load reports
it as an invalid lead. Without a region nothing here runs and the E.164 rule stays as is.

Parsing costs about 50 us a number (libphonenumber is pure Python here): some 20,000
numbers a second on one core, far more than the rest of a load spends on a lead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._exceptions import ConfigurationError, ValidationError, preview

__all__ = ["normalize_number", "normalizer"]

# phonenumbers.ValidationResult values, as words for the reason of an invalid lead.
_POSSIBLE_REASONS = {
    1: "its country code is not valid",
    2: "it is too short",
    3: "it is too long",
    4: "it can only be dialled locally",
    5: "its length is not valid for the region",
}
# phonenumbers.NumberParseException.error_type values.
_PARSE_REASONS = {
    0: "its country code is missing or not valid",
    1: "it does not look like a phone number",
    2: "it is too short after the international prefix",
    3: "it is too short",
    4: "it is too long",
}


def _import_phonenumbers() -> Any:
    try:
        import phonenumbers
    except ImportError as exc:
        raise ConfigurationError(
            "normalizing numbers with a default region needs the phonenumbers package: "
            'pip install "ryng-async[phone]"'
        ) from exc
    return phonenumbers


def normalizer(default_region: str) -> Callable[[object], str]:
    """Return a function turning a number into E.164, for numbers of ``default_region``.

    National formats are read as numbers of ``default_region``; numbers starting with
    ``+`` (or an international prefix such as ``00``) keep their own country.

    Args:
        default_region: an ISO 3166-1 alpha-2 region code libphonenumber knows (``"IN"``).

    Returns:
        A function taking a number and returning it in E.164 form; it raises
        `ValidationError` (field ``"number"``) for a value that is not a string or that
        libphonenumber does not call a valid number, naming why.

    Raises:
        ConfigurationError: ``phonenumbers`` is not installed, or the region is unknown.
    """
    phonenumbers = _import_phonenumbers()
    if not isinstance(default_region, str):
        raise ConfigurationError(
            f"default_region must be a region code string, got {preview(default_region)}"
        )
    region = default_region.strip().upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ConfigurationError(
            f"default_region {default_region!r} is not a region libphonenumber knows "
            "(use an ISO 3166-1 alpha-2 code such as 'IN' or 'US')"
        )
    parse = phonenumbers.parse
    is_valid = phonenumbers.is_valid_number
    possible = phonenumbers.is_possible_number_with_reason
    format_number = phonenumbers.format_number
    e164 = phonenumbers.PhoneNumberFormat.E164
    parse_error = phonenumbers.NumberParseException

    def normalize(number: object) -> str:
        if not isinstance(number, str):
            raise ValidationError(
                f"must be a phone number string, got {preview(number)}", field="number"
            )
        try:
            parsed = parse(number, region)
        except parse_error as exc:
            why = _PARSE_REASONS.get(exc.error_type, str(exc))
            raise ValidationError(
                f"not a phone number libphonenumber can read ({why}), got {preview(number)}",
                field="number",
            ) from None
        if not is_valid(parsed):
            why = _POSSIBLE_REASONS.get(possible(parsed), "no number of its region looks so")
            raise ValidationError(
                f"not a valid number for its region per libphonenumber ({why}), "
                f"got {preview(number)} (default region {region})",
                field="number",
            )
        result: str = format_number(parsed, e164)
        return result

    return normalize


def normalize_number(number: object, default_region: str) -> str:
    """Return ``number`` in E.164 form, reading national formats as ``default_region``'s.

    For many numbers, build one `normalizer` and call it for each.

    Raises:
        ValidationError: the number is not valid per libphonenumber (field ``"number"``).
        ConfigurationError: ``phonenumbers`` is not installed, or the region is unknown.
    """
    return normalizer(default_region)(number)
