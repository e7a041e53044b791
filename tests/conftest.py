"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def devices() -> list[str]:
    """Devices every device-generic test runs on: ``["cpu"]``, plus ``"cuda"`` when available."""
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
