"""Structured JSON logging (structlog) shared by every process.

Context (``transaction_id``, ``request_id``, ``stream_message_id``) is bound with ``structlog.contextvars`` so it
follows a task through awaits; values under secret-looking keys are redacted before anything is written.

A line costs what it costs on the hot paths: a deposit is ~6 lines across the processes (the API's access line for
its POST and for its STK callback, the worker's steps, the gateway's transfer), so each is rendered by orjson and
written as bytes, and redaction copies an event only when something in it names a secret. The lines of one
event-loop step (a batch's) leave in one write at the end of the step (:class:`StepLines`): a ``write`` system
call per line was ~6 a deposit; what a SIGKILL can take with it is that one step's lines.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import json
import logging
import sys
import threading
from collections.abc import MutableMapping
from typing import Any, BinaryIO

import orjson
import structlog

_SECRET_MARKERS = ("password", "secret", "token", "passkey", "authorization", "credential", "api_key")
REDACTED = "***"
_ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS


def redact_secrets(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Replace the value of any key that names a secret, at any depth of dicts. An event with no such key and no
    nested dict (nearly every line) is passed on as it is."""
    if _any_names_a_secret(tuple(event_dict)) or any(issubclass(t, dict) for t in set(map(type, event_dict.values()))):
        return {key: _redact(key, value) for key, value in event_dict.items()}
    return event_dict


@functools.lru_cache(maxsize=4096)
def _any_names_a_secret(keys: tuple[str, ...]) -> bool:
    return any(_names_a_secret(key) for key in keys)


@functools.lru_cache(maxsize=4096)
def _names_a_secret(key: str) -> bool:
    return key != "event" and any(marker in key.lower() for marker in _SECRET_MARKERS)


def _redact(key: str, value: Any) -> Any:
    if _names_a_secret(key):
        return REDACTED
    if isinstance(value, dict):
        return {str(k): _redact(str(k), v) for k, v in value.items()}
    return value


def render_json(event_dict: Any, default: Any = None, **_: Any) -> bytes:
    """One event as a line of JSON bytes: orjson, which knows datetimes, UUIDs, enums and dataclasses itself and
    hands anything else to ``default`` (structlog's: its ``repr``). What orjson refuses outright (an integer beyond
    64 bits) goes through ``json.dumps`` instead: a log call must never raise in the code that logs."""
    try:
        return orjson.dumps(event_dict, default=default, option=_ORJSON_OPTIONS)
    except TypeError:
        return json.dumps(event_dict, default=default or repr).encode()


def _render_text(event_dict: Any, default: Any = None, **_: Any) -> str:
    return render_json(event_dict, default).decode()


class StepLines:
    """A byte stream's lines, each handed to the stream at once outside an event loop, and inside one joined with
    the other lines of the same step and written in one ``write`` (then flushed) at the step's end, in order.
    Lines kept by a loop that stopped before its step's end are written with the next line, or at exit."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self._pending: list[bytes] | None = None
        self._owner: asyncio.AbstractEventLoop | None = None  # the loop whose step's end writes what is kept
        self._lock = threading.Lock()  # a line from another thread (a thread pool's task) while a step is kept
        atexit.register(self._flush_at_exit)

    def line(self, data: bytes) -> None:
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # no event loop in this thread
            loop = None
        with self._lock:
            if self._pending is not None:
                if loop is self._owner or (self._owner is not None and self._owner.is_running()):
                    self._pending.append(data)
                    return
                self._write_kept()  # its loop stopped: the step's end it waited for will not come
            if loop is None:
                self._write(data)
                return
            self._pending, self._owner = [data], loop
        loop.call_soon(self.flush)

    def flush(self) -> None:
        with self._lock:
            self._write_kept()

    def _write_kept(self) -> None:
        pending, self._pending, self._owner = self._pending, None, None
        if pending:
            self._write(b"".join(pending))

    def _flush_at_exit(self) -> None:
        with contextlib.suppress(ValueError, OSError):  # the stream may be closed by then: nothing to tell
            self.flush()

    def _write(self, data: bytes) -> None:
        self._file.write(data)
        self._file.flush()


class StepLogger:
    """structlog's logger for :class:`StepLines`: every level is one line (as ``structlog.BytesLogger``)."""

    __slots__ = ("_lines",)

    def __init__(self, lines: StepLines) -> None:
        self._lines = lines

    def msg(self, message: bytes) -> None:
        self._lines.line(message + b"\n")

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


def configure_logging(process: str, level: str = "INFO") -> None:
    """Configure structlog and the stdlib root logger to emit one JSON object per line on stderr.

    structlog's lines go to stderr's byte stream, the stdlib's (uvicorn, alembic, third parties) through stderr's
    text stream; that flushes at every newline, so the two never interleave within a line."""
    raw = getattr(sys.stderr, "buffer", None)
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
            structlog.processors.JSONRenderer(serializer=render_json if raw is not None else _render_text),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        # bytes to the file under stderr, a step's lines in one write (each flushed, as the text stream's line
        # buffering did); a stderr replaced by one without bytes underneath (an embedding host's) gets text lines
        logger_factory=_step_logger_factory(raw) if raw is not None else structlog.PrintLoggerFactory(file=sys.stderr),
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


def _step_logger_factory(file: BinaryIO) -> Any:
    lines = StepLines(file)

    def factory(*_: Any) -> StepLogger:
        return StepLogger(lines)

    return factory


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
