"""How ``POST /deposit`` and ``POST /withdraw`` reach the database: batched (``service_layer.batch_initiation``),
with the retries around it.

``BatchIntake.submit`` queues a request in the API's :class:`MicroBatcher` (one intake, and so one queue, per kind);
each flush is one MySQL transaction for every request queued, then one pipelined publish of their events. A
deadlock or lock-wait timeout retries the whole batch (nothing of the failed try was kept); so does a float spent by
someone else between the batch's read of the accounts and its write (the CHECK constraints refuse the write), this
time with the accounts locked from the start. A duplicate key means another request committed the same idempotency
key between the batch's key check and its insert: the batch is then run again one member at a time, so that member
is answered ``KEY_TAKEN`` (and replayed by the one-request path) while the others are created.

A request older than ``max_wait_s`` (``PENPAY_INTAKE_QUEUE_DEADLINE_MS``, counted from its arrival: the middleware's
``received_at``) when it reaches the queue or leaves it for a batch is answered 503 ``overloaded`` with
``Retry-After`` before it touches the database (``MicroBatcher``'s deadline): nothing of it was written, so a retry
with the same idempotency key is a first try.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import partial

from sqlalchemy.exc import IntegrityError

from penpay.adapters.db.batch_initiation import SqlInitiationBatches
from penpay.adapters.db.unit_of_work import with_retries
from penpay.api.problems import ApiProblem, domain_problem
from penpay.api.schemas import render_transaction
from penpay.logging import get_logger
from penpay.service_layer.batch_initiation import KindRules, Outcome, Submission, initiate_batch
from penpay.service_layer.batching import MicroBatcher, QueueDeadlineExceeded
from penpay.service_layer.deposits import DepositPolicy
from penpay.service_layer.publishing import publish_quietly
from penpay_domain.errors import InsufficientFunds
from penpay_domain.ports import EventPublisher, FxQuotes

log = get_logger(__name__)
MAX_BATCH = 64
MAX_IN_FLIGHT = 2
OVERLOADED_RETRY_AFTER_S = 1


class BatchIntake:
    def __init__(
        self,
        batches: SqlInitiationBatches,
        *,
        rules: KindRules,
        fx: FxQuotes,
        policy: DepositPolicy,
        publisher: EventPublisher,
        max_batch: int = MAX_BATCH,
        max_in_flight: int = MAX_IN_FLIGHT,
        max_wait_s: float = 0.0,
    ) -> None:
        self._batches = batches
        self._rules = rules
        self._fx = fx
        self._policy = policy
        self._publisher = publisher
        self._batcher: MicroBatcher[Submission, Outcome] = MicroBatcher(
            self._flush, max_batch=max_batch, max_in_flight=max_in_flight, max_wait_s=max_wait_s
        )

    async def submit(self, submission: Submission, *, since: float | None = None) -> Outcome:
        """``since``: when the request arrived (the event loop's clock), for the deadline."""
        try:
            return await self._batcher.submit(submission, since=since)
        except QueueDeadlineExceeded as exc:
            log.info("intake_overloaded", kind=self._rules.kind.value, waited_ms=round(exc.waited_s * 1000))
            raise ApiProblem(
                503,
                "overloaded",
                f"PenPay is taking more requests than it can answer in time; nothing was done: retry in "
                f"{OVERLOADED_RETRY_AFTER_S} s with the same Idempotency-Key",
                headers={"Retry-After": str(OVERLOADED_RETRY_AFTER_S)},
            ) from None

    async def aclose(self) -> None:
        await self._batcher.aclose()

    async def _flush(self, batch: list[Submission]) -> Sequence[Outcome]:
        try:
            return await with_retries(lambda: self._once(batch))
        except InsufficientFunds:  # the float was spent between the batch's read and its write: decide locked
            return await with_retries(lambda: self._once(batch, lock=True))
        except IntegrityError:
            outcomes: list[Outcome] = []
            for submission in batch:
                outcomes.extend(await with_retries(partial(self._once, [submission])))
            return outcomes

    async def _once(self, batch: Sequence[Submission], *, lock: bool = False) -> list[Outcome]:
        started = time.perf_counter()
        outcomes, events = await initiate_batch(
            batch,
            rules=self._rules,
            store=await self._batches.open(lock=lock),
            fx=self._fx,
            policy=self._policy,
            render=render_transaction,
            problem=domain_problem,
        )
        await publish_quietly(self._publisher, events)
        log.debug(
            "initiation_batch",
            kind=self._rules.kind.value,
            size=len(batch),
            ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return outcomes
