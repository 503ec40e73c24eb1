"""Chinese resident identity card numbers (居民身份证号码, GB 11643).

The number is 18 characters: a 6-digit region code, the birth date as YYYYMMDD, a 3-digit
sequence (odd for men, even for women) and an ISO 7064 MOD 11-2 check character. A
mistyped number must be refused at the edge, with a reason a dispatcher can act on.
"""

import datetime as dt
from typing import Annotated

from pydantic import AfterValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

__all__ = [
    "RESIDENT_ID_OID",
    "ResidentIdCard",
    "birth_date_from_resident_id",
    "resident_id_check_char",
    "resident_id_checksum_ok",
    "resident_id_problem",
    "validate_resident_id",
]

RESIDENT_ID_OID = "2.16.156.10011.1.3"
"""Identifier system of the resident ID card in Chinese health information standards."""

_LENGTH = 18
_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK_CHARS = "10X98765432"
_DIGITS = frozenset("0123456789")


def resident_id_check_char(first17: str) -> str:
    """Return the ISO 7064 MOD 11-2 check character ("0".."9" or "X") for 17 digits."""
    if len(first17) != _LENGTH - 1 or not _DIGITS.issuperset(first17):
        raise ValueError("expected exactly 17 digits")
    total = sum(int(digit) * weight for digit, weight in zip(first17, _WEIGHTS, strict=True))
    return _CHECK_CHARS[total % 11]


def resident_id_checksum_ok(value: str) -> bool:
    """True when value is 17 digits plus the matching check character (x or X).

    Only the shape and the check character are tested, not the embedded birth date: use
    `resident_id_problem` for the full validation.
    """
    if len(value) != _LENGTH or not _DIGITS.issuperset(value[:17]):
        return False
    return value[17].upper() == resident_id_check_char(value[:17])


def _embedded_birth_date(value: str) -> dt.date | None:
    try:
        return dt.date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return None


def _problem(value: str) -> tuple[str, str, dict[str, object]] | None:
    """The first defect of value as (error type, message template, context), or None."""
    if len(value) != _LENGTH:
        return (
            "resident_id_length",
            "resident ID card number must have 18 characters, got {length}",
            {"length": len(value)},
        )
    for position, char in enumerate(value[:17], start=1):
        if char not in _DIGITS:
            return (
                "resident_id_digits",
                "characters 1-17 must be digits, character {position} is '{char}'",
                {"position": position, "char": char},
            )
    if _embedded_birth_date(value) is None:
        return (
            "resident_id_birth_date",
            "embedded birth date {birth} is not a real date",
            {"birth": value[6:14]},
        )
    expected = resident_id_check_char(value[:17])
    if value[17].upper() != expected:
        return (
            "resident_id_check_digit",
            "check digit is {actual}, expected {expected}",
            {"actual": value[17], "expected": expected},
        )
    return None


def resident_id_problem(value: str) -> str | None:
    """Why value is not a valid resident ID card number, or None when it is."""
    problem = _problem(value)
    if problem is None:
        return None
    _, template, context = problem
    return template.format(**context)


def validate_resident_id(value: str) -> str:
    """Return value normalised (a lower-case x check character becomes X), or raise.

    Raises a pydantic custom error whose type names the defect (resident_id_length,
    resident_id_digits, resident_id_birth_date, resident_id_check_digit).
    """
    problem = _problem(value)
    if problem is not None:
        error_type, template, context = problem
        raise PydanticCustomError(error_type, template, context)
    return value.upper()


def birth_date_from_resident_id(value: str) -> dt.date:
    """The birth date embedded in a valid resident ID card number."""
    birth = _embedded_birth_date(value) if len(value) == _LENGTH else None
    if birth is None:
        raise ValueError("not a resident ID card number with a valid birth date")
    return birth


ResidentIdCard = Annotated[
    str,
    AfterValidator(validate_resident_id),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^[0-9]{17}[0-9Xx]$",
            "description": "Chinese resident ID card number with ISO 7064 MOD 11-2 check "
            "character and a real embedded birth date",
        }
    ),
]
"""A validated, normalised resident ID card number (upper-case X)."""
