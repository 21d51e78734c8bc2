"""Subscriber identity: normalisation and RFC 5321 checks."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from commprefs.domain.email import normalize_email
from commprefs.domain.errors import InvalidEmail


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Jane.Doe+tag@Example.com", "jane.doe+tag@example.com"),
        ("  padded@example.com \t", "padded@example.com"),
        ("o'brien@example.co.uk", "o'brien@example.co.uk"),
        ("x@xn--bcher-kva.example", "x@xn--bcher-kva.example"),
        ("a" * 64 + "@example.com", "a" * 64 + "@example.com"),
    ],
)
def test_valid_addresses_normalise(raw: str, expected: str) -> None:
    assert normalize_email(raw) == expected


@pytest.mark.parametrize(
    "raw",
    ["", "no-at", "a@b", "a@@b.com", "a@b@c.com", ".a@b.com", "a.@b.com", "a b@c.com", "a@b..com", "a@b.c-", "a@1.2"],
)
def test_invalid_addresses_raise(raw: str) -> None:
    with pytest.raises(InvalidEmail):
        normalize_email(raw)


def test_length_limits() -> None:
    with pytest.raises(InvalidEmail):
        normalize_email("a" * 65 + "@example.com")
    with pytest.raises(InvalidEmail):
        normalize_email("a@" + ".".join(["b" * 60] * 5) + ".com")


@given(st.emails())
def test_normalising_is_idempotent_and_case_blind(address: str) -> None:
    try:
        once = normalize_email(address)
    except InvalidEmail:
        return
    assert normalize_email(once) == once
    assert normalize_email(address.upper()) == once
    assert len(once) <= 254
