"""The copy of the providers' specs in tests/specs must be the shared specs, unchanged."""

from __future__ import annotations

import pytest

from tests.openapi_check import SHARED_SPECS_DIR, VENDORED_SPECS_DIR


def test_vendored_specs_equal_the_shared_ones() -> None:
    if not SHARED_SPECS_DIR.is_dir():
        pytest.skip(f"{SHARED_SPECS_DIR} is not beside this clone; the copy is all there is")
    shared = sorted(p.name for p in SHARED_SPECS_DIR.glob("*.openapi.json"))
    vendored = sorted(p.name for p in VENDORED_SPECS_DIR.glob("*.openapi.json"))
    assert shared == vendored
    for name in shared:
        assert (VENDORED_SPECS_DIR / name).read_bytes() == (SHARED_SPECS_DIR / name).read_bytes(), (
            f"tests/specs/{name} differs from {SHARED_SPECS_DIR / name}: copy it again"
        )
