"""The Deriv simulator's books kept across restarts in ``deriv-books.jsonl`` (``journal``): its first line names
the agent and its opening balance, each later line is one change of the books."""

from __future__ import annotations

from pathlib import Path

from penpay.sandbox.deriv_accounts import DerivBooks
from penpay.sandbox.journal import Journal, JournalError

__all__ = ["FILE_NAME", "DerivJournal", "JournalError"]

FILE_NAME = "deriv-books.jsonl"


class DerivJournal(Journal):
    @classmethod
    def in_dir(cls, directory: str | Path) -> DerivJournal:
        return cls(Path(directory) / FILE_NAME)

    def attach(self, books: DerivBooks) -> None:
        """Replay the file onto ``books`` (new, untouched books), then record their every change in it."""
        self.open(books.replay)
        if self.replayed == 0:
            self.append(books.opening())
        books.recorder = self.append
