"""What a log line looks like: one JSON object a line with the bound context, secrets redacted at any depth, and
nothing a caller passes able to make logging raise."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import structlog

from penpay.logging import REDACTED, configure_logging, get_logger, redact_secrets

pytestmark = pytest.mark.usefixtures("restore_logging")


def _lines(capfd: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in capfd.readouterr().err.splitlines() if line.strip()]


def test_a_line_is_one_json_object_with_the_bound_context(capfd: pytest.CaptureFixture[str]) -> None:
    configure_logging("worker")
    structlog.contextvars.bind_contextvars(transaction_id="01TXN", stream_message_id="1-0")
    get_logger("t").info("step_done", step="deposit.requested", outcome=None, amount_kes=100)
    [line] = _lines(capfd)
    assert line["event"] == "step_done"
    assert line["step"] == "deposit.requested"
    assert line["outcome"] is None
    assert line["amount_kes"] == 100
    assert line["transaction_id"] == "01TXN"
    assert line["stream_message_id"] == "1-0"
    assert line["process"] == "worker"
    assert line["level"] == "info"
    assert line["timestamp"].endswith("Z")


def test_secrets_are_redacted_at_any_depth(capfd: pytest.CaptureFixture[str]) -> None:
    configure_logging("api")
    get_logger("t").warning(
        "calling_daraja",
        access_token="abc123",
        request={"Password": "b64", "headers": {"Authorization": "Bearer xyz"}, "Amount": 10},
        note="token rotation",  # a value that merely mentions a secret is not one
    )
    [line] = _lines(capfd)
    assert line["access_token"] == REDACTED
    assert line["request"] == {"Password": REDACTED, "headers": {"Authorization": REDACTED}, "Amount": 10}
    assert line["note"] == "token rotation"
    assert line["event"] == "calling_daraja"


def test_an_event_without_secrets_is_passed_on_unchanged() -> None:
    event = {"event": "request", "method": "POST", "status": 202, "duration_ms": 1.5}
    assert redact_secrets(None, "info", event) is event
    nested = {"event": "x", "body": {"ok": 1}}
    assert redact_secrets(None, "info", nested) == nested


def test_values_json_cannot_take_are_still_logged(capfd: pytest.CaptureFixture[str]) -> None:
    class Opaque:
        def __repr__(self) -> str:
            return "<opaque>"

    configure_logging("gateway")
    get_logger("t").info("odd_values", thing=Opaque(), huge=2**70, keys={1: "one"})
    [line] = _lines(capfd)
    assert line["thing"] == "<opaque>"
    assert line["huge"] == 2**70
    assert line["keys"] == {"1": "one"}


def test_stdlib_loggers_write_json_lines_too(capfd: pytest.CaptureFixture[str]) -> None:
    configure_logging("api")
    structlog.contextvars.bind_contextvars(request_id="r1")
    logging.getLogger("uvicorn.error").warning("something %s", "happened")
    [line] = _lines(capfd)
    assert line["event"] == "something happened"
    assert line["level"] == "warning"
    assert line["request_id"] == "r1"


def test_an_exception_is_logged_with_its_traceback(capfd: pytest.CaptureFixture[str]) -> None:
    configure_logging("worker")
    try:
        raise ValueError("boom")
    except ValueError:
        get_logger("t").exception("step_failed")
    [line] = _lines(capfd)
    assert line["event"] == "step_failed"
    assert "ValueError: boom" in line["exception"]
