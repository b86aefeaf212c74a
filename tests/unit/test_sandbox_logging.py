"""The sandbox's logs: third-party lines written for every connection only when it logs at DEBUG."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from penpay.sandbox.main import CONNECTION_LOGGERS, quiet_connection_logs


@pytest.fixture(autouse=True)
def restore_levels() -> Iterator[None]:
    yield
    for name in CONNECTION_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET)


@pytest.mark.parametrize("level", ["INFO", "warning", "ERROR"])
def test_per_connection_lines_are_left_out_unless_debugging(level: str) -> None:
    quiet_connection_logs(level)

    assert [logging.getLogger(name).getEffectiveLevel() for name in CONNECTION_LOGGERS] == [logging.WARNING] * 2


def test_at_debug_they_are_written() -> None:
    root = logging.getLogger()
    before = root.level
    root.setLevel(logging.DEBUG)
    try:
        quiet_connection_logs("debug")
        assert all(logging.getLogger(name).isEnabledFor(logging.INFO) for name in CONNECTION_LOGGERS)
    finally:
        root.setLevel(before)
