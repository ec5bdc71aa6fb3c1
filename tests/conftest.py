from __future__ import annotations

import pytest


@pytest.fixture
def ledger_dir(tmp_path, monkeypatch):
    """A throwaway ledger so tests never touch data/results/."""
    monkeypatch.setenv("WORKBOOK_RESULTS", str(tmp_path))
    return tmp_path
