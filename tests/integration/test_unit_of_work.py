"""The unit of work commits the aggregate, its ledger legs, its outbox events and its audit rows together."""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from penpay.adapters.db.tables import audit_log, outbox
from penpay.bootstrap import Database
from penpay.service_layer import admin
from penpay_domain import ledger
from penpay_domain.errors import ConcurrencyConflict
from penpay_domain.fees import FeePolicy
from penpay_domain.fx import LockedRate
from penpay_domain.ids import UserId, new_quote_id, new_transaction_id, parse_deriv_loginid
from penpay_domain.money import Currency, Money
from penpay_domain.msisdn import parse_msisdn
from penpay_domain.transaction import Kind, LegState, Parties, Status, Transaction
from tests.integration.audit_helpers import chain_audit, chained_seq, pending_subjects

pytestmark = pytest.mark.integration


def _deposit(amount: int = 1_000, user: str | None = None) -> Transaction:
    now = datetime.now(UTC)
    quote = LockedRate(
        quote_id=new_quote_id(now),
        mid=Decimal("129.50"),
        spread_bps=150,
        issued_at=now,
        expires_at=now + timedelta(seconds=60),
    )
    parties = Parties(
        user_id=UserId(user or f"u-{secrets.token_hex(4)}"),
        msisdn=parse_msisdn("0712345678"),
        deriv_loginid=parse_deriv_loginid("CR1234567"),
    )
    return Transaction.new_deposit(
        id=new_transaction_id(now),
        parties=parties,
        amount_kes=Money.kes(amount),
        quote=quote,
        fee_policy=FeePolicy(bps=100),
        now=now,
    )


async def _fund_agent(db: Database, cents: int) -> None:
    async with db.uow() as uow:
        await uow.ledger.apply(
            ledger.funding(f"fund:{secrets.token_hex(6)}", ledger.DERIV_AGENT, Money.usd_cents(cents))
        )
        await uow.commit()


async def _outbox_types(db: Database, txn_id: str) -> list[str]:
    async with db.engine.connect() as conn:
        rows = await conn.execute(
            sa.select(outbox.c.event_type).where(outbox.c.transaction_id == txn_id).order_by(outbox.c.id)
        )
        return [r[0] for r in rows]


class TestUnitOfWork:
    async def test_a_new_deposit_is_stored_with_its_pending_legs_event_and_audit_row(self, db: Database) -> None:
        await _fund_agent(db, 100_00)
        txn = _deposit()
        async with db.uow(actor="test") as uow:
            await uow.transactions.add(txn)
            events = await uow.commit()

        assert [e.name for e in events] == ["deposit.requested"]
        assert await _outbox_types(db, txn.id) == ["deposit.requested"]
        async with db.uow() as uow:
            stored = await uow.transactions.get(txn.id)
            legs = (await uow.ledger.leg_states())[txn.id]
        assert stored.status is Status.PENDING
        assert stored.amount_kes == Money.kes(1_000) and stored.fee == Money.kes(10)
        assert stored.amount_usd == txn.amount_usd and stored.fx_rate == txn.fx_rate
        assert legs == {"kes": LegState.PENDING, "usd": LegState.PENDING}
        await chain_audit(db)
        async with db.engine.connect() as conn:
            actions = [
                r[0]
                for r in await conn.execute(sa.select(audit_log.c.action).where(audit_log.c.subject.like(f"{txn.id}%")))
            ]
        assert "deposit.requested" in actions and "ledger.pending" in actions

    async def test_the_full_deposit_lifecycle_leaves_a_balanced_ledger(self, db: Database) -> None:
        await _fund_agent(db, 100_00)
        txn = _deposit(2_000)
        async with db.uow() as uow:
            await uow.transactions.add(txn)
            await uow.commit()
        steps = [
            lambda t, now: t.stk_push_accepted(f"ws_CO_{t.id}", now),
            lambda t, now: t.confirm_payment(receipt=f"R{t.id[-9:]}", amount=Money.kes(2_000), now=now),
            lambda t, now: t.start_credit(now),
            lambda t, now: t.complete_credit(deriv_transaction_id="900001", now=now),
        ]
        for step in steps:
            async with db.uow() as uow:
                loaded = await uow.transactions.get(txn.id, for_update=True)
                step(loaded, uow.now)
                await uow.commit()

        async with db.uow() as uow:
            final = await uow.transactions.get(txn.id)
        assert final.status is Status.COMPLETED and final.version == 4
        # the events a worker acts on; the others (RECORDED_ONLY) are in the audit log only
        assert await _outbox_types(db, txn.id) == ["deposit.requested", "deposit.payment_received", "deposit.completed"]
        await chain_audit(db)
        async with db.engine.connect() as conn:
            audited = (
                await conn.execute(
                    sa.select(audit_log.c.action).where(audit_log.c.subject == txn.id).order_by(audit_log.c.seq)
                )
            ).scalars()
            assert list(audited) == [
                "deposit.requested",
                "deposit.stk_push_accepted",
                "deposit.payment_received",
                "deposit.credit_started",
                "deposit.completed",
            ]
        check = await admin.check_ledger(db.uow)
        assert check.ok, check.problems
        assert (await admin.verify_audit(db.uow)).ok

    async def test_the_events_of_one_commit_get_the_ids_of_their_own_outbox_rows(self, db: Database) -> None:
        await _fund_agent(db, 100_00)
        txns = [_deposit(1_000 + i) for i in range(3)]
        async with db.uow() as uow:  # three aggregates, one outbox insert for their events
            for txn in txns:
                await uow.transactions.add(txn)
            events = await uow.commit()

        assert [e.transaction_id for e in events] == [t.id for t in txns]
        async with db.engine.connect() as conn:
            rows = {
                r.id: (r.transaction_id, r.event_type)
                for r in await conn.execute(
                    sa.select(outbox.c.id, outbox.c.transaction_id, outbox.c.event_type).where(
                        outbox.c.transaction_id.in_([t.id for t in txns])
                    )
                )
            }
        assert {e.event_id: (e.transaction_id, e.name) for e in events} == rows

    async def test_nothing_is_kept_without_commit(self, db: Database) -> None:
        txn = _deposit()
        async with db.uow() as uow:
            await uow.transactions.add(txn)
        async with db.uow() as uow:
            assert await uow.transactions.find_by_checkout_request_id("nope") is None
            with pytest.raises(Exception, match="not found"):
                await uow.transactions.get(txn.id)
        assert await _outbox_types(db, txn.id) == []

    async def test_a_stale_copy_cannot_overwrite_a_newer_state(self, db: Database) -> None:
        await _fund_agent(db, 100_00)
        txn = _deposit()
        async with db.uow() as uow:
            await uow.transactions.add(txn)
            await uow.commit()
        async with db.uow() as uow:
            stale = await uow.transactions.get(txn.id)
        async with db.uow() as uow:
            fresh = await uow.transactions.get(txn.id, for_update=True)
            fresh.stk_push_accepted("ws_CO_fresh", uow.now)
            await uow.commit()
        stale.fail_payment(code="1032", reason="cancelled", now=datetime.now(UTC))
        async with db.uow() as uow:
            with pytest.raises(ConcurrencyConflict):
                await uow.transactions.save(stale)

    async def test_daily_volume_counts_todays_live_transactions_of_one_user(self, db: Database) -> None:
        await _fund_agent(db, 1_000_00)
        user = f"u-{secrets.token_hex(4)}"
        live, failed = _deposit(1_000, user), _deposit(3_000, user)
        failed.fail_payment(code="1032", reason="cancelled", now=datetime.now(UTC))
        async with db.uow() as uow:
            await uow.transactions.add(live)
            await uow.transactions.add(failed)
            await uow.commit()
        now = datetime.now(UTC)
        async with db.uow() as uow:
            volume = await uow.transactions.kes_volume(
                UserId(user), Kind.DEPOSIT, now - timedelta(hours=1), now + timedelta(hours=1)
            )
        assert volume == Money(1_000, Currency.KES)


class TestAuditChain:
    async def test_the_chain_verifies_and_names_the_first_tampered_row(self, db: Database) -> None:
        async with db.uow() as uow:
            tag = secrets.token_hex(4)
            await uow.audit.append(actor="t", action="a", subject=f"s1-{tag}", payload={"n": 1}, now=uow.now)
            await uow.audit.append(actor="t", action="a", subject=f"s2-{tag}", payload={"n": 2}, now=uow.now)
            await uow.commit()
        first_seq, second_seq = await chained_seq(db, f"s1-{tag}"), await chained_seq(db, f"s2-{tag}")
        assert second_seq == first_seq + 1
        assert (await admin.verify_audit(db.uow)).ok

        restore = sa.text(
            "CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log FOR EACH ROW SIGNAL SQLSTATE "
            "'45000' SET MESSAGE_TEXT = 'audit_log is append-only: UPDATE is not allowed'"
        )
        edit = sa.text("UPDATE audit_log SET payload = :payload WHERE seq = :seq")
        async with db.engine.begin() as conn:  # an attacker with DDL rights disables the guard and edits a row
            await conn.execute(sa.text("DROP TRIGGER audit_log_no_update"))
            await conn.execute(edit, {"payload": '{"n":99}', "seq": first_seq})
        try:
            report = await admin.verify_audit(db.uow)
            assert not report.ok
            assert report.first_bad_row == first_seq
        finally:
            async with db.engine.begin() as conn:
                await conn.execute(edit, {"payload": '{"n":1}', "seq": first_seq})
                await conn.execute(restore)
        assert (await admin.verify_audit(db.uow)).ok


async def test_chaining_does_not_wait_for_transactions_still_open(db: Database) -> None:
    """The chainer links what is committed while other units of work hold uncommitted audit rows."""
    from datetime import UTC, datetime  # noqa: PLC0415

    for n in range(300):  # enough committed rows for a long id list
        async with db.uow() as uow:
            await uow.audit.append(actor="t", action="test.row", subject=f"s{n}", payload={}, now=uow.now)
            await uow.commit()
    open_uow = db.uow()
    async with open_uow as uow:
        await uow.audit.append(actor="t", action="test.open", subject="open", payload={}, now=datetime.now(UTC))
        await uow.audit.flush()  # inserted, not committed
        async with db.uow(actor="auditor") as chainer:
            await chainer.connection.exec_driver_sql("SET SESSION innodb_lock_wait_timeout = 2")
            assert await chainer.audit.chain_pending(limit=1000) >= 300  # would raise 1205 if it waited
            await chainer.commit()


async def test_chaining_around_an_open_row_neither_waits_for_it_nor_deletes_it(db: Database) -> None:
    """Committed rows on both sides of a row still being inserted: runs of ids are deleted by ranges that stop
    short of that row, and it is chained once it commits."""
    from datetime import UTC, datetime  # noqa: PLC0415

    async def committed(subject: str) -> None:
        async with db.uow() as uow:
            await uow.audit.append(actor="t", action="test.row", subject=subject, payload={}, now=uow.now)
            await uow.commit()

    tag = secrets.token_hex(4)
    for n in range(5):
        await committed(f"{tag}-before-{n}")
    open_uow = db.uow()
    async with open_uow as uow:
        await uow.audit.append(actor="t", action="test.open", subject=f"{tag}-open", payload={}, now=datetime.now(UTC))
        await uow.audit.flush()  # inserted, not committed
        for n in range(5):
            await committed(f"{tag}-after-{n}")
        async with db.uow(actor="auditor") as chainer:
            await chainer.connection.exec_driver_sql("SET SESSION innodb_lock_wait_timeout = 2")
            await chainer.audit.chain_pending(limit=1000)  # would raise 1205 if it waited
            await chainer.commit()
        await uow.commit()

    async with db.engine.connect() as conn:
        left = await pending_subjects(conn, prefix=f"{tag}-")
        assert left == [f"{tag}-open"]  # the open row survived the chainer's deletes
    await chain_audit(db)
    async with db.engine.connect() as conn:
        chained = (
            await conn.execute(sa.text("SELECT subject FROM audit_log WHERE subject LIKE :t"), {"t": f"{tag}-%"})
        ).all()
    assert sorted(r.subject for r in chained) == sorted(
        [f"{tag}-before-{n}" for n in range(5)] + [f"{tag}-after-{n}" for n in range(5)] + [f"{tag}-open"]
    )
    assert (await admin.verify_audit(db.uow)).ok


async def test_audit_entries_of_a_unit_of_work_are_one_insert_with_its_commit(db: Database) -> None:
    tag = secrets.token_hex(4)
    async with db.uow() as uow:
        for n in range(3):
            await uow.audit.append(actor="t", action="test.buffered", subject=f"{tag}-{n}", payload={}, now=uow.now)
        async with db.engine.connect() as other:  # nothing written before the commit
            assert await pending_subjects(other, prefix=f"{tag}-") == []
        await uow.commit()
    async with db.uow() as uow:  # a unit of work that does not commit leaves nothing
        await uow.audit.append(actor="t", action="test.buffered", subject=f"{tag}-x", payload={}, now=uow.now)
    await chain_audit(db)
    async with db.engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.select(audit_log.c.subject).where(audit_log.c.subject.like(f"{tag}-%")).order_by(audit_log.c.seq)
            )
        ).all()
    assert [r.subject for r in rows] == [f"{tag}-{n}" for n in range(3)]  # in the order appended


async def test_a_unit_of_work_waits_as_one_pending_row_and_the_chainer_takes_whole_rows(db: Database) -> None:
    """Every entry of a unit of work is in one ``audit_pending`` row; a pass takes whole rows until it has ``limit``
    entries, and chains each entry as its own ``audit_log`` row, in order."""
    tag = secrets.token_hex(4)
    await chain_audit(db)  # what earlier tests left
    sizes = (3, 4, 5)
    for n, size in enumerate(sizes):
        async with db.uow() as uow:
            await uow.audit.append_many(
                actor="t", entries=[("test.unit", f"{tag}-{n}-{i}", {"i": i}) for i in range(size)], now=uow.now
            )
            await uow.commit()
    async with db.engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.text("SELECT entry_count FROM audit_pending WHERE entries LIKE :t"), {"t": f"%{tag}%"}
            )
        ).all()
    assert [r.entry_count for r in rows] == list(sizes)

    async with db.uow(actor="auditor") as chainer:
        assert await chainer.audit.chain_pending(limit=5) >= 3 + 4  # the first row is 3, so the second is taken too
        await chainer.commit()
    async with db.engine.connect() as conn:
        assert await pending_subjects(conn, prefix=f"{tag}-") == [f"{tag}-2-{i}" for i in range(5)]
    await chain_audit(db)
    async with db.engine.connect() as conn:
        chained = (
            await conn.execute(
                sa.select(audit_log.c.subject, audit_log.c.payload)
                .where(audit_log.c.subject.like(f"{tag}-%"))
                .order_by(audit_log.c.seq)
            )
        ).all()
    assert [(r.subject, r.payload) for r in chained] == [
        (f"{tag}-{n}-{i}", f'{{"i":{i}}}') for n, size in enumerate(sizes) for i in range(size)
    ]
    assert (await admin.verify_audit(db.uow)).ok


async def test_rows_linked_while_the_chain_is_verified_are_not_a_broken_head(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Verification reads the head first and walks up to it: the chainer linking more rows meanwhile (here: just as
    the walk ends, the worst moment) is not reported as a head that does not match its last row."""
    from penpay.adapters.db import audit  # noqa: PLC0415

    walk = audit._rows

    async def walk_while_the_chainer_runs(conn, batch, upto):  # type: ignore[no-untyped-def]
        async for row in walk(conn, batch, upto):
            yield row
        async with db.uow() as uow:
            await uow.audit.append(actor="t", action="test.race", subject="race", payload={}, now=uow.now)
            await uow.commit()
        await chain_audit(db)

    await chain_audit(db)
    monkeypatch.setattr(audit, "_rows", walk_while_the_chainer_runs)
    report = await admin.verify_audit(db.uow)
    assert report.ok, report


class TestSnapshot:
    """A unit of work with ``snapshot`` reads the database as of one moment; the others see each commit at once."""

    async def test_a_snapshot_does_not_see_a_commit_made_after_its_first_read(self, db: Database) -> None:
        async with db.uow(snapshot=True) as frozen, db.uow() as live:
            before = {a.code: a for a in await frozen.ledger.accounts()}
            live_before = {a.code: a for a in await live.ledger.accounts()}
            await _fund_agent(db, 1_234)  # committed by a third unit of work meanwhile
            after = {a.code: a for a in await frozen.ledger.accounts()}
            totals = await frozen.ledger.entry_totals()
            live_after = {a.code: a for a in await live.ledger.accounts()}
        assert after[ledger.DERIV_AGENT.code] == before[ledger.DERIV_AGENT.code]
        assert totals[ledger.DERIV_AGENT.code]["debits_posted"] == before[ledger.DERIV_AGENT.code].debits_posted
        assert (
            live_after[ledger.DERIV_AGENT.code].debits_posted
            == live_before[ledger.DERIV_AGENT.code].debits_posted + 1_234
        )

    async def test_the_ledger_check_reads_counters_and_entries_as_of_one_moment(self, db: Database) -> None:
        await _fund_agent(db, 500)
        done = False

        async def write_meanwhile() -> None:
            while not done:
                await _fund_agent(db, 100)

        writer = asyncio.create_task(write_meanwhile())
        try:
            checks = [await admin.check_ledger(lambda: db.uow(snapshot=True)) for _ in range(10)]
        finally:
            done = True
            await writer
        assert all(check.ok for check in checks), [c.problems for c in checks if not c.ok]

    async def test_the_connection_gets_the_engines_isolation_level_back(self, db: Database) -> None:
        async with db.uow(snapshot=True) as uow:
            level = await uow.connection.exec_driver_sql("SELECT @@tx_isolation")
            assert level.scalar_one() == "REPEATABLE-READ"
        async with db.engine.connect() as conn:  # the pool hands the same connection out again
            levels = {(await conn.exec_driver_sql("SELECT @@tx_isolation")).scalar_one()}
        assert levels == {"READ-COMMITTED"}
