"""The API's unit of work: the SQL unit of work plus the intake repositories (``penpay.service_layer.intake``).

Same connection, same database transaction: the per-user limit lock, the withdrawal code and the stored callback
commit (or roll back) together with the transaction rows, ledger legs, outbox and audit rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Self

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from penpay.adapters.db.engine import from_db, to_db
from penpay.adapters.db.in_lists import padded
from penpay.adapters.db.multirow import consecutive_ids_on, insert_returning_ids
from penpay.adapters.db.tables import mpesa_callbacks, user_limits, withdrawal_codes
from penpay.adapters.db.unit_of_work import SqlUnitOfWork
from penpay.adapters.tokens import SecretBox
from penpay.service_layer.intake import CallbackKind, IntakeUnitOfWork, ReceivedCallback, StoredCallback
from penpay_domain.errors import NotFound
from penpay_domain.ids import TransactionId, UserId
from penpay_domain.ports import Clock


class SqlUserLimits:
    def __init__(self, conn: AsyncConnection, clock: Clock) -> None:
        self._conn = conn
        self._clock = clock

    async def lock(self, user_id: UserId) -> None:
        # INSERT … ON DUPLICATE KEY UPDATE takes the row's exclusive lock straight away (a plain INSERT IGNORE
        # followed by SELECT … FOR UPDATE would take a shared lock first, and two waiters would deadlock upgrading).
        stmt = mysql.insert(user_limits).values(user_id=user_id, locked_at=to_db(self._clock.now()))
        await self._conn.execute(stmt.on_duplicate_key_update(locked_at=stmt.inserted.locked_at))


class SqlWithdrawalCodes:
    def __init__(self, conn: AsyncConnection, box: SecretBox, clock: Clock) -> None:
        self._conn = conn
        self._box = box
        self._clock = clock

    async def put(self, txn_id: TransactionId, code: str) -> None:
        await self._conn.execute(
            withdrawal_codes.insert().values(
                transaction_id=txn_id, code_ciphertext=self._box.seal(code), created_at=to_db(self._clock.now())
            )
        )

    async def take(self, txn_id: TransactionId) -> str | None:
        return (await self.take_many([txn_id])).get(txn_id)

    async def take_many(self, txn_ids: Sequence[TransactionId]) -> dict[TransactionId, str]:
        """Read under row locks and deleted in the same transaction: each code is handed out once."""
        codes = await self.get_many(txn_ids)
        await self.drop_many(list(codes))
        return codes

    async def get_many(self, txn_ids: Sequence[TransactionId]) -> dict[TransactionId, str]:
        """Read under row locks (in id order, as every batch locks its rows); kept until ``drop_many``."""
        if not txn_ids:
            return {}
        rows = (
            await self._conn.execute(
                sa.select(withdrawal_codes.c.transaction_id, withdrawal_codes.c.code_ciphertext)
                .where(withdrawal_codes.c.transaction_id.in_(padded(sorted(set(txn_ids)))))
                .order_by(withdrawal_codes.c.transaction_id)
                .with_for_update()
            )
        ).all()
        return {TransactionId(r.transaction_id): self._box.open(bytes(r.code_ciphertext)) for r in rows}

    async def drop_many(self, txn_ids: Sequence[TransactionId]) -> None:
        if txn_ids:
            await self._conn.execute(
                withdrawal_codes.delete().where(withdrawal_codes.c.transaction_id.in_(padded(sorted(set(txn_ids)))))
            )


class SqlCallbackInbox:
    def __init__(self, conn: AsyncConnection, clock: Clock) -> None:
        self._conn = conn
        self._clock = clock

    async def add(self, callback: ReceivedCallback) -> StoredCallback:
        return (await self.add_many([callback]))[0]

    async def add_many(self, callbacks: Sequence[ReceivedCallback]) -> list[StoredCallback]:
        received_at = from_db(to_db(self._clock.now()))
        rows = [
            {
                "kind": callback.kind.value,
                "transaction_id": callback.transaction_id,
                "source_ip": callback.source_ip[:45],
                "source_allowed": callback.source_allowed,
                "token_valid": callback.token_valid,
                "body": callback.body,
                "received_at": to_db(received_at),
            }
            for callback in callbacks
        ]
        ids = await insert_returning_ids(
            self._conn, "mpesa_callbacks", rows, consecutive=await consecutive_ids_on(self._conn)
        )
        return [
            StoredCallback(id=i, received_at=received_at, callback=callback)
            for i, callback in zip(ids, callbacks, strict=True)
        ]

    async def get(self, callback_id: int) -> StoredCallback:
        found = await self.get_many([callback_id])
        if callback_id not in found:
            raise NotFound(f"callback {callback_id} not found")
        return found[callback_id]

    async def get_many(self, callback_ids: Sequence[int]) -> dict[int, StoredCallback]:
        if not callback_ids:
            return {}
        rows = await self._conn.execute(_CALLBACKS, {"b_ids": padded(sorted(set(callback_ids)))})
        return {int(row.id): _stored(row) for row in rows}


_CALLBACKS = sa.select(mpesa_callbacks).where(mpesa_callbacks.c.id.in_(sa.bindparam("b_ids", expanding=True)))


def _stored(row: sa.Row[Any]) -> StoredCallback:
    return StoredCallback(
        id=int(row.id),
        received_at=from_db(row.received_at),
        callback=ReceivedCallback(
            kind=CallbackKind(row.kind),
            transaction_id=TransactionId(row.transaction_id) if row.transaction_id else None,
            source_ip=str(row.source_ip),
            source_allowed=bool(row.source_allowed),
            token_valid=bool(row.token_valid),
            body=str(row.body),
        ),
    )


class SqlIntakeUnitOfWork(SqlUnitOfWork):
    user_limits: SqlUserLimits
    withdrawal_codes: SqlWithdrawalCodes
    callbacks: SqlCallbackInbox

    def __init__(
        self, engine: AsyncEngine, clock: Clock, box: SecretBox, *, actor: str = "system", snapshot: bool = False
    ) -> None:
        super().__init__(engine, clock, actor=actor, snapshot=snapshot)
        self._box = box
        self._intake_clock = clock

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        conn = self.connection
        self.user_limits = SqlUserLimits(conn, self._intake_clock)
        self.withdrawal_codes = SqlWithdrawalCodes(conn, self._box, self._intake_clock)
        self.callbacks = SqlCallbackInbox(conn, self._intake_clock)
        return self


def _conforms(engine: AsyncEngine, clock: Clock, box: SecretBox) -> IntakeUnitOfWork:
    return SqlIntakeUnitOfWork(engine, clock, box)  # mypy checks the protocol
