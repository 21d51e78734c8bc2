"""The OpenAPI documents the contract tests use are HubSpot's, unchanged."""

import pytest

from tests.openapi import REFERENCE, SHARED


def test_vendored_documents_are_byte_identical_to_the_shared_reference() -> None:
    if SHARED is None:
        pytest.skip("no shared/reference/hubspot-openapi above this checkout to compare with")
    ours = sorted(p.name for p in REFERENCE.glob("*.json"))
    assert len(ours) == 6, ours
    for name in ours:
        assert (REFERENCE / name).read_bytes() == (SHARED / name).read_bytes(), name
