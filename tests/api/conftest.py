"""Fixtures shared by the in-process API tests."""

from __future__ import annotations

import pytest

from support.vendor_fakes import VendorFake


@pytest.fixture(scope="module")
def fake():
    """A programmable fake online API for the module's tests (see VendorFake)."""
    upstream = VendorFake().start()
    yield upstream
    upstream.stop()
