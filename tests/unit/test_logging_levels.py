"""What each process logs at its configured level: httpx's own line per request only when debugging (the Daraja
client logs each step's outcome itself), and the root level as configured."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import structlog

from penpay.logging import configure_logging


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root, httpx_logger = logging.getLogger(), logging.getLogger("httpx")
    saved = (root.level, list(root.handlers), httpx_logger.level)
    yield
    root.setLevel(saved[0])
    root.handlers[:] = saved[1]
    httpx_logger.setLevel(saved[2])
    structlog.reset_defaults()  # other tests capture structlog's events with its default configuration
    structlog.contextvars.clear_contextvars()


@pytest.mark.parametrize(("level", "httpx_info"), [("INFO", False), ("WARNING", False), ("DEBUG", True)])
def test_httpx_request_lines_only_when_debugging(level: str, httpx_info: bool) -> None:
    configure_logging("test", level)
    assert logging.getLogger().level == logging.getLevelName(level)
    assert logging.getLogger("httpx").isEnabledFor(logging.INFO) is httpx_info
    assert logging.getLogger("httpx").isEnabledFor(logging.WARNING)  # its warnings always
