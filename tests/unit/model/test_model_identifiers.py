"""Resident ID card validation: check character, shape and embedded birth date."""

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from hub.model import (
    ResidentIdCard,
    birth_date_from_resident_id,
    resident_id_check_char,
    resident_id_checksum_ok,
    resident_id_problem,
)

DIGITS17 = st.text(alphabet="0123456789", min_size=17, max_size=17)
CHECK_CHARS = "0123456789X"


class Holder(BaseModel):
    resident_id: ResidentIdCard


def test_well_known_example_is_valid() -> None:
    assert resident_id_check_char("11010519491231002") == "X"
    assert resident_id_checksum_ok("11010519491231002X")
    assert resident_id_checksum_ok("11010519491231002x")
    assert resident_id_problem("11010519491231002X") is None


@pytest.mark.parametrize(
    "prefix", ["11010519491231002", "12010519580312003", "44030420000229123", "65010119991231999"]
)
def test_numbers_built_from_a_prefix_validate(prefix: str) -> None:
    number = prefix + resident_id_check_char(prefix)
    assert resident_id_checksum_ok(number)
    assert Holder(resident_id=number).resident_id == number


def test_lower_case_x_is_normalised() -> None:
    assert Holder(resident_id="11010519491231002x").resident_id == "11010519491231002X"


def test_birth_date_is_extracted() -> None:
    assert birth_date_from_resident_id("11010519491231002X") == dt.date(1949, 12, 31)
    with pytest.raises(ValueError):
        birth_date_from_resident_id("110105194912")


@pytest.mark.parametrize(
    ("value", "error_type", "message"),
    [
        ("11010519491231002", "resident_id_length", "must have 18 characters, got 17"),
        ("11010519491231002X1", "resident_id_length", "must have 18 characters, got 19"),
        ("1101051949123100AX", "resident_id_digits", "character 17 is 'A'"),
        ("11010519490231002X", "resident_id_birth_date", "birth date 19490231 is not a real"),
        ("110105194913310028", "resident_id_birth_date", "birth date 19491331 is not a real"),
        ("110105194912310021", "resident_id_check_digit", "check digit is 1, expected X"),
        ("11010519491231002Y", "resident_id_check_digit", "check digit is Y, expected X"),
    ],
)
def test_invalid_numbers_say_why(value: str, error_type: str, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Holder(resident_id=value)
    [error] = caught.value.errors()
    assert error["type"] == error_type
    assert message in error["msg"]
    assert resident_id_problem(value) == error["msg"]


def test_check_char_needs_17_digits() -> None:
    with pytest.raises(ValueError):
        resident_id_check_char("1234")


def test_non_ascii_digits_are_not_digits() -> None:
    assert not resident_id_checksum_ok("١١٠١٠٥١٩٤٩١٢٣١٠٠٢X")


@settings(max_examples=300, deadline=None)
@given(DIGITS17)
def test_computed_check_char_always_passes(prefix: str) -> None:
    check = resident_id_check_char(prefix)
    assert resident_id_checksum_ok(prefix + check)
    assert resident_id_checksum_ok(prefix + check.lower())


@settings(max_examples=300, deadline=None)
@given(DIGITS17, st.sampled_from(CHECK_CHARS))
def test_any_other_check_char_fails(prefix: str, check: str) -> None:
    expected = resident_id_check_char(prefix)
    assert resident_id_checksum_ok(prefix + check) == (check == expected)


@settings(max_examples=200, deadline=None)
@given(st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2030, 12, 31)), DIGITS17)
def test_valid_numbers_round_trip_their_birth_date(birth: dt.date, digits: str) -> None:
    prefix = digits[:6] + birth.strftime("%Y%m%d") + digits[14:17]
    number = prefix + resident_id_check_char(prefix)
    assert resident_id_problem(number) is None
    assert birth_date_from_resident_id(number) == birth


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=25))
def test_problem_and_checksum_never_raise(value: str) -> None:
    problem = resident_id_problem(value)
    if problem is None:
        assert resident_id_checksum_ok(value)
