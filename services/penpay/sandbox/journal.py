"""A simulator's state kept across restarts: every change appended to a JSON-lines file, replayed on start.

Deriv and Safaricom do not forget what PenPay asked of them when PenPay restarts, and the sandbox should not either:
with ``PENPAY_SANDBOX_STATE_DIR`` set (``.env.example`` sets it for ``make run``), each simulator's changes go to a
file there (``deriv-books.jsonl``: the Deriv books; ``daraja.jsonl``: STK sessions and B2C payouts), one line
each, written and flushed before the simulator answers the call that made them (so a killed sandbox loses none it
has answered; the file is not fsynced, so a machine crash may lose the last lines, which a simulator can afford).
On start the file is replayed; a last line cut short by a kill mid-write is dropped (and the file truncated to the
last whole line), any other unreadable line stops the sandbox with its line number. Without the setting (tests,
the benchmark) the state lives in memory only. Start afresh by deleting the files, with the database they belong to.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

Record = dict[str, Any]


class JournalError(Exception):
    """The journal cannot be replayed onto this simulator (says which line and why)."""


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.replayed = 0
        self._file: IO[str] | None = None

    def open(self, replay: Callable[[Record], None]) -> None:
        """Replay the file's records, in order, through ``replay``; then take new records (:meth:`append`)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            self._replay(replay)
        self._file = self.path.open("a", encoding="utf-8")

    def append(self, record: Record) -> None:
        assert self._file is not None, "the journal is not open"
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _replay(self, replay: Callable[[Record], None]) -> None:
        data = self.path.read_bytes()
        whole = data.rfind(b"\n") + 1
        if whole < len(data):  # a line cut short by a kill mid-write: never answered, so never happened
            with self.path.open("r+b") as f:
                f.truncate(whole)
        for number, line in enumerate(data[:whole].decode("utf-8").splitlines(), start=1):
            try:
                replay(json.loads(line))
            except (ValueError, KeyError, TypeError) as exc:
                raise JournalError(f"{self.path}:{number}: {exc!r}; delete the file to start afresh") from exc
            self.replayed += 1
