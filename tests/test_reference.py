"""The OpenAPI documents the contract tests use are HubSpot's, unchanged."""

import os

import pytest

from tests.openapi import REFERENCE, SHARED


def test_vendored_documents_are_byte_identical_to_the_shared_reference() -> None:
    if not SHARED.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{SHARED} is missing: CI runs with shared/ beside the checkout")
        pytest.skip("no shared/ reference beside this checkout")
    ours = sorted(p.name for p in REFERENCE.glob("*.json"))
    assert ours, "no vendored documents"
    for name in ours:
        assert (REFERENCE / name).read_bytes() == (SHARED / name).read_bytes(), name
