"""The Deriv simulator's books survive a restart: every change is recorded, and replaying the records onto new books
gives the same accounts, statements, codes and transaction ids (``deriv_accounts``), kept in a JSON-lines file
(``deriv_journal``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from penpay.sandbox.deriv_accounts import Change, DerivApiError, DerivBooks
from penpay.sandbox.deriv_journal import DerivJournal, JournalError

AGENT = "CR900000"


def books(agent_balance_cents: int = 100_000_000) -> DerivBooks:
    return DerivBooks(agent_token="agent-token", agent_loginid=AGENT, agent_balance_cents=agent_balance_cents)


def busy(b: DerivBooks) -> None:
    """A little of everything: a transfer, a funding, a withdrawal with its code, a code still unused."""
    b.move(
        debit=b.agent, credit=b.account("CR1234567"), cents=1_250, description="ref-1", kind="Payment agent transfer"
    )
    b.fund("CR7654321", 5_000)
    code = b.issue_verification_code("CR7654321")
    b.consume_verification_code("CR7654321", code)
    b.move(
        debit=b.account("CR7654321"), credit=b.agent, cents=999, description="ref-2", kind="Payment agent withdrawal"
    )
    b.issue_verification_code("CR1234567")


def snapshot(b: DerivBooks) -> dict[str, object]:
    return {
        "accounts": {k: (a.balance_cents, list(a.statement)) for k, a in b.accounts.items()},
        "codes": dict(b.verification_codes),
    }


def recorded() -> tuple[DerivBooks, list[Change]]:
    """Books that went through :func:`busy`, and what they recorded."""
    original, records = books(), list[Change]()
    original.recorder = records.append
    busy(original)
    return original, records


def replayed(records: list[Change]) -> DerivBooks:
    copy = books()
    for record in records:
        copy.replay(record)
    return copy


class TestReplay:
    def test_replaying_the_records_gives_the_same_books(self) -> None:
        original, records = recorded()
        assert [r["op"] for r in records] == ["move", "fund", "code", "code_used", "move", "code"]
        copy = replayed(json.loads(json.dumps(records)))  # as they come back from the file
        assert snapshot(copy) == snapshot(original)
        assert copy.agent.balance_cents == 100_000_000 - 1_250 + 999

    def test_after_a_replay_new_transaction_ids_follow_the_replayed_ones(self) -> None:
        copy = replayed(recorded()[1])
        replayed_ids = {e.transaction_id for a in copy.accounts.values() for e in a.statement}
        moved = copy.move(debit=copy.agent, credit=copy.account("CR1"), cents=1, description="", kind="t")
        assert moved.debit_transaction_id > max(replayed_ids)

    def test_a_replay_is_not_recorded_again(self) -> None:
        again: list[Change] = []
        copy = books()
        copy.recorder = again.append
        for record in recorded()[1]:
            copy.replay(record)
        assert again == []

    def test_the_opening_record_restores_the_agents_starting_balance(self) -> None:
        copy = books(agent_balance_cents=1)
        copy.replay(books(agent_balance_cents=500).opening())
        assert copy.agent.balance_cents == 500
        with pytest.raises(ValueError, match="CR900000"):
            DerivBooks(agent_token="t", agent_loginid="CR1", agent_balance_cents=0).replay(books().opening())

    def test_a_used_code_stays_used(self) -> None:
        copy = replayed(recorded()[1])
        with pytest.raises(DerivApiError):
            copy.consume_verification_code("CR7654321", "anything")


class TestJournal:
    def test_a_new_journal_starts_with_the_opening_and_records_every_change(self, tmp_path: Path) -> None:
        journal = DerivJournal.in_dir(tmp_path / "state")
        b = books()
        journal.attach(b)
        busy(b)
        journal.close()
        lines = [json.loads(line) for line in journal.path.read_text().splitlines()]
        assert lines[0] == {"op": "open", "agent": AGENT, "agent_balance_cents": 100_000_000}
        assert len(lines) == 7

    def test_books_attached_to_an_existing_journal_are_the_books_it_recorded(self, tmp_path: Path) -> None:
        first, journal = books(), DerivJournal.in_dir(tmp_path)
        journal.attach(first)
        busy(first)
        journal.close()  # a kill leaves the same file: every line is flushed when written

        second, reopened = books(agent_balance_cents=7), DerivJournal.in_dir(tmp_path)
        reopened.attach(second)
        assert reopened.replayed == 7
        assert snapshot(second) == snapshot(first)
        second.fund("CR1", 100)  # and it goes on recording after them
        reopened.close()
        third, once_more = books(), DerivJournal.in_dir(tmp_path)
        once_more.attach(third)
        assert snapshot(third) == snapshot(second)

    def test_a_last_line_cut_short_is_dropped_and_the_file_mended(self, tmp_path: Path) -> None:
        first, journal = books(), DerivJournal.in_dir(tmp_path)
        journal.attach(first)
        busy(first)
        journal.close()
        whole = journal.path.read_bytes()
        journal.path.write_bytes(whole + b'{"op":"fund","loginid":"CR1","ce')

        second, reopened = books(), DerivJournal.in_dir(tmp_path)
        reopened.attach(second)
        reopened.close()
        assert snapshot(second) == snapshot(first)
        assert journal.path.read_bytes() == whole

    def test_an_unreadable_line_names_its_place_and_changes_nothing(self, tmp_path: Path) -> None:
        path = tmp_path / "deriv-books.jsonl"
        path.write_text('{"op":"open","agent":"CR900000","agent_balance_cents":1}\n{"op":"teleport"}\n')
        with pytest.raises(JournalError, match=r"deriv-books.jsonl:2: .*teleport.*delete the file"):
            DerivJournal(path).attach(books())
        assert path.read_text().count("\n") == 2
