"""Structured JSON logging (structlog) shared by every process.

Context (``transaction_id``, ``request_id``, ``stream_message_id``) is bound with ``structlog.contextvars`` so it
follows a task through awaits; values under secret-looking keys are redacted before anything is written.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_SECRET_MARKERS = ("password", "secret", "token", "passkey", "authorization", "credential", "api_key")
REDACTED = "***"


def redact_secrets(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Replace the value of any key that names a secret, at any depth of dicts."""
    return {key: _redact(key, value) for key, value in event_dict.items()}


@functools.lru_cache(maxsize=4096)
def _names_a_secret(key: str) -> bool:
    return key != "event" and any(marker in key.lower() for marker in _SECRET_MARKERS)


def _redact(key: str, value: Any) -> Any:
    if _names_a_secret(key):
        return REDACTED
    if isinstance(value, dict):
        return {str(k): _redact(str(k), v) for k, v in value.items()}
    return value


def configure_logging(process: str, level: str = "INFO") -> None:
    """Configure structlog and the stdlib root logger to emit one JSON object per line on stderr."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.JSONRenderer(),
            ],
            foreign_pre_chain=shared,
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every request at INFO ("HTTP Request: POST …"), a line per STK push with no transaction id; the
    # Daraja client logs what matters itself (the step's outcome, a failure), so httpx's own lines only at DEBUG
    logging.getLogger("httpx").setLevel(logging.DEBUG if root.level <= logging.DEBUG else logging.WARNING)
    structlog.contextvars.bind_contextvars(process=process)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
