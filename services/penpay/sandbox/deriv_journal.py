"""The Deriv simulator's books kept across restarts: every change appended to a JSON-lines file, replayed on start.

Deriv does not forget a transfer when PenPay restarts, and the sandbox should not either: with
``PENPAY_SANDBOX_STATE_DIR`` set (``.env.example`` sets it for ``make run``), the books' changes go to
``deriv-books.jsonl`` there, one line each, written and flushed before the simulator answers the call that made
them (so a killed sandbox loses none it has answered; the file is not fsynced, so a machine crash may lose the
last lines, which a simulator can afford). The first line names the agent and its opening balance. On start the
file is replayed; a last line cut short by a kill mid-write is dropped (and the file truncated to the last whole
line), any other unreadable line stops the sandbox with its line number. Without the setting (tests, the
benchmark) the books live in memory only. Start afresh by deleting the file, with the database it belongs to.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO

from penpay.sandbox.deriv_accounts import Change, DerivBooks

FILE_NAME = "deriv-books.jsonl"


class JournalError(Exception):
    """The journal cannot be replayed onto these books (says which line and why)."""


class DerivJournal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.replayed = 0
        self._file: IO[str] | None = None

    @classmethod
    def in_dir(cls, directory: str | Path) -> DerivJournal:
        return cls(Path(directory) / FILE_NAME)

    def attach(self, books: DerivBooks) -> None:
        """Replay the file onto ``books`` (new, untouched books), then record their every change in it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            self._replay(books)
        self._file = self.path.open("a", encoding="utf-8")
        if self.replayed == 0:
            self._append(books.opening())
        books.recorder = self._append

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _append(self, change: Change) -> None:
        assert self._file is not None
        self._file.write(json.dumps(change, separators=(",", ":")) + "\n")
        self._file.flush()

    def _replay(self, books: DerivBooks) -> None:
        data = self.path.read_bytes()
        whole = data.rfind(b"\n") + 1
        if whole < len(data):  # a line cut short by a kill mid-write: never answered, so never happened
            with self.path.open("r+b") as f:
                f.truncate(whole)
        for number, line in enumerate(data[:whole].decode("utf-8").splitlines(), start=1):
            try:
                books.replay(json.loads(line))
            except (ValueError, KeyError, TypeError) as exc:
                raise JournalError(f"{self.path}:{number}: {exc!r}; delete the file to start the books afresh") from exc
            self.replayed += 1
