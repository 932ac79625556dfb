"""Suite-wide settings."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="session")
def _receipts_out_of_home(tmp_path_factory):
    """Banks keep the bureau's audit receipts and lookup tables under ~/.xinrong by
    default: not in tests."""
    mp = pytest.MonkeyPatch()
    mp.setenv("XINRONG_RECEIPTS_DIR", str(tmp_path_factory.mktemp("receipts")))
    mp.setenv("XINRONG_TABLES_DIR", str(tmp_path_factory.mktemp("lookup-tables")))
    yield
    mp.undo()
