"""What the platform keeps only for a while, and the pass that removes the rest.

Three tables are working state, not records, and would otherwise grow by a few rows per transaction for good:

- idempotency keys: 24 hours (:data:`IDEMPOTENCY_RETENTION`, Stripe's window; ``api.idempotency`` answers an older
  key as a new one);
- the workers' processed-message records (each stream message's deduplication): ``dedupe`` (7 days by default),
  far longer than a message can be redelivered (a pending one is reclaimed after ``PENPAY_WORKER_CLAIM_IDLE_MS``, and
  the relay republishes an unstamped outbox row after seconds);
- outbox rows once published: ``outbox`` (7 days by default); every event stays in the audit log for good;
- withdrawal verification codes (sealed secrets) left behind by a debit that never got an answer (a withdrawal
  settled by review): 24 hours, long after Deriv's code itself has expired.

The ledger, the transactions, the stored callbacks and the audit log are records and are never removed. Each pass
deletes at most ``chunk`` rows of each table, each chunk its own short transaction, so a backlog is worked off over
several passes without long locks; the reconciler runs it after each sweep.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

IDEMPOTENCY_RETENTION = timedelta(hours=24)
CODE_RETENTION = timedelta(hours=24)
CHUNK = 5_000


class Expiring(StrEnum):
    IDEMPOTENCY_KEYS = "idempotency_keys"
    PROCESSED_MESSAGES = "processed_messages"
    PUBLISHED_OUTBOX = "published_outbox"
    WITHDRAWAL_CODES = "withdrawal_codes"


@dataclass(frozen=True, slots=True)
class Retention:
    dedupe: timedelta = timedelta(days=7)
    outbox: timedelta = timedelta(days=7)

    def cutoffs(self, now: datetime) -> dict[Expiring, datetime]:
        return {
            Expiring.IDEMPOTENCY_KEYS: now - IDEMPOTENCY_RETENTION,
            Expiring.PROCESSED_MESSAGES: now - self.dedupe,
            Expiring.PUBLISHED_OUTBOX: now - self.outbox,
            Expiring.WITHDRAWAL_CODES: now - CODE_RETENTION,
        }


class ExpiredRows(Protocol):
    async def delete(self, what: Expiring, *, before: datetime, limit: int) -> int:
        """Delete up to ``limit`` rows of ``what`` older than ``before`` in one short transaction; how many."""
        ...


async def tidy(rows: ExpiredRows, now: datetime, retention: Retention, *, chunk: int = CHUNK) -> dict[str, int]:
    """One pass: at most ``chunk`` expired rows of each kind; the counts of those deleted (none: an empty dict)."""
    done: dict[str, int] = {}
    for what, before in retention.cutoffs(now).items():
        deleted = await rows.delete(what, before=before, limit=chunk)
        if deleted:
            done[what.value] = deleted
    return done
