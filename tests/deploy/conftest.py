"""Deploy tests: the systemd unit and the install scripts."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "slow: builds a real venv with pip (about 30 s); -m 'not slow' leaves it out")
