"""Taking a withdrawal's dollars from the client's Deriv account (paymentagent_withdraw through the gateway).

The verification code the user typed is single-use and secret: it stays sealed in storage until the debit it
authorises has Deriv's answer, and is deleted in the unit of work that records that answer; it is held in memory only
for the call and never logged. A debit found already DEBITING (a crash or a lost answer interrupted
it: the message came back, or the reconciler found it) is first looked up by its reference in the agent's
statement: found, it is done; not found while the first attempt may still be in flight, it waits; not found after
that (it provably never executed), it is sent again under the same reference with the kept code — or, if the code
is gone (a row from before codes were kept), it fails cleanly (nothing moved) and the user asks for a new code. The
lookup comes first even though the gateway executes a reference at most once, because a resend of a debit that did
execute would be refused by Deriv (its code spent) and must not read as a refusal.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime

from penpay.service_layer.flow import (
    Delivery,
    FlowDeps,
    Item,
    ProviderUnavailable,
    Results,
    lock_due,
    record_all_processed,
    record_answers,
    unwrap,
)
from penpay.service_layer.intake import IntakeUnitOfWork
from penpay_domain.ids import TransactionId
from penpay_domain.ports import LinkedAccount
from penpay_domain.providers import DerivTransferResult, DerivWithdrawalOrder, Outcome
from penpay_domain.transaction import Status, Transaction


async def debit_withdrawal(deps: FlowDeps, txn_id: TransactionId, *, delivery: Delivery | None = None) -> str:
    """withdrawal.requested (and the reconciler for DEBITING): debit the client's Deriv account."""
    return str(unwrap((await debit_withdrawals(deps, [Item(txn_id, delivery)]))[0]))


async def debit_withdrawals(deps: FlowDeps, items: Sequence[Item]) -> Results:
    """withdrawal.requested for a batch (distinct transactions): one unit of work moves them to DEBITING (taking
    their codes), the debits go to the gateway together, one unit of work records their answers. Each item gets
    "duplicate", "not due", "failed", "done", "rejected", "unknown", "already settled", or the exception its message
    ends with."""
    results: Results = ["duplicate"] * len(items)
    at = {id(item): n for n, item in enumerate(items)}
    due: list[tuple[Item, Transaction, str | None, LinkedAccount | None, bool]] = []
    async with deps.uow() as uow:
        candidates: list[tuple[Item, Transaction]] = []
        for item, txn in await lock_due(uow, items, results):
            if txn.status in (Status.PENDING, Status.DEBITING):
                candidates.append((item, txn))
            else:
                results[at[id(item)]] = "not due"
        codes = await uow.withdrawal_codes.get_many([t.id for _, t in candidates])
        linked = await uow.linked_accounts.get_many(
            [(t.parties.user_id, t.parties.deriv_loginid) for _, t in candidates]
        )
        refused: list[Delivery | None] = []
        unused: list[TransactionId] = []  # the codes of withdrawals that fail before their debit is sent
        for item, txn in candidates:
            code, account = codes.get(txn.id), linked.get((txn.parties.user_id, txn.parties.deriv_loginid))
            if txn.status is Status.PENDING and (account is None or code is None):
                why = "the Deriv account is no longer linked" if account is None else "no verification code"
                txn.reject_debit(code="withdrawal_not_authorised", reason=why, now=uow.now)
                refused.append(item.delivery)
                unused.append(txn.id)
                results[at[id(item)]] = "failed"
                continue
            again = txn.status is Status.DEBITING  # an earlier attempt may have reached Deriv
            if not again:
                txn.start_debit(uow.now)
            due.append((item, txn, code, account, again))
        await record_all_processed(uow, refused)
        await uow.withdrawal_codes.drop_many([t for t in unused if t in codes])
        await uow.commit()  # saves those that moved to DEBITING or failed

    answers = await _debits(deps, [(txn, code, account, again) for _, txn, code, account, again in due])
    final: list[tuple[Item, DerivTransferResult]] = []
    for (item, txn, *_), answer in zip(due, answers, strict=True):
        n = at[id(item)]
        if isinstance(answer, BaseException):
            results[n] = answer  # the message comes back; the gateway deduplicates the reference
        elif answer.outcome is Outcome.UNAVAILABLE:
            results[n] = ProviderUnavailable(f"Deriv gateway unavailable for {txn.id}: {answer.message}")
        elif answer.outcome is Outcome.UNKNOWN:
            results[n] = "unknown"
        else:
            final.append((item, answer))
    if final:
        for item, outcome in zip((i for i, _ in final), await _record(deps, final), strict=True):
            results[at[id(item)]] = outcome
    return results


async def _debits(
    deps: FlowDeps, due: Sequence[tuple[Transaction, str | None, LinkedAccount | None, bool]]
) -> list[DerivTransferResult | BaseException]:
    """The gateway's answer for each due debit, in order: those an earlier attempt may have sent are looked up in
    the statement first (concurrently, ``_looked_up``); every debit then still to send goes in one
    ``withdraw_many``. An exception is that debit's answer (its message comes back)."""
    answers: list[DerivTransferResult | BaseException | None] = [None] * len(due)
    repeats = [n for n, (_, code, linked, again) in enumerate(due) if again or code is None or linked is None]
    looked = await asyncio.gather(*(_looked_up(deps, *due[n][:3]) for n in repeats), return_exceptions=True)
    for n, answer in zip(repeats, looked, strict=True):
        answers[n] = answer
    sending = [(n, txn, code, linked) for n, (txn, code, linked, _) in enumerate(due) if answers[n] is None]
    orders = [
        DerivWithdrawalOrder(
            reference=txn.id,
            loginid=txn.parties.deriv_loginid,
            token_ciphertext=linked.token_ciphertext,
            amount=txn.amount_usd,
            verification_code=code,
        )
        for _, txn, code, linked in sending
        if code is not None and linked is not None  # _looked_up answered the others
    ]
    sent: Sequence[DerivTransferResult | BaseException]
    try:
        sent = await deps.deriv.withdraw_many(orders) if orders else []
    except Exception as exc:  # the whole call failed: each of its debits is answered so (sent or not, unknown here)
        sent = [exc] * len(orders)
    for (n, *_), answer in zip(sending, sent, strict=True):
        answers[n] = answer
    return [answer for answer in answers if answer is not None]


async def _looked_up(
    deps: FlowDeps, txn: Transaction, code: str | None, linked: LinkedAccount | None
) -> DerivTransferResult | None:
    """A debit an earlier attempt may have sent, looked up by its reference in the agent's statement: the answer
    if it is settled (found, still possibly in flight, or not sendable again), None when it is to be sent again."""
    result = await deps.deriv.find_transfer(reference=txn.id)  # did an earlier attempt reach Deriv?
    if not (result.outcome is Outcome.REJECTED and result.error_code == "NotFound"):
        return result
    stale = deps.clock.now() - txn.updated_at >= deps.reconcile_after
    if not stale:  # an attempt may still be in flight at the gateway
        return DerivTransferResult(outcome=Outcome.UNKNOWN, message="not in the statement yet")
    if code is None or linked is None:
        return DerivTransferResult(
            outcome=Outcome.REJECTED,
            error_code="verification_code_used",
            message="the withdrawal did not reach Deriv and its verification code is spent; request a new one",
        )
    return None


async def _record(deps: FlowDeps, final: Sequence[tuple[Item, DerivTransferResult]]) -> list[str]:
    """Record the gateway's final answers (one unit of work); those that moved on meanwhile are "already settled"."""
    settled = await record_answers(
        deps, final, expected=Status.DEBITING, apply=_apply_debit_answer, finish=_forget_codes
    )
    return ["already settled" if item.txn_id in settled else result.outcome.value for item, result in final]


async def _forget_codes(uow: IntakeUnitOfWork, txn_ids: list[TransactionId]) -> None:
    """Deriv answered these debits (done or refused): their codes are spent."""
    await uow.withdrawal_codes.drop_many(txn_ids)


def _apply_debit_answer(txn: Transaction, result: DerivTransferResult, now: datetime) -> None:
    if result.outcome is Outcome.DONE:
        txn.complete_debit(deriv_transaction_id=result.deriv_transaction_id or "", now=now)
    else:
        code, reason = debit_refusal(result)
        txn.reject_debit(code=code, reason=reason, now=now)


def debit_refusal(result: DerivTransferResult) -> tuple[str, str]:
    """The failure code and the reason the user reads when Deriv refuses a withdrawal's debit. Deriv's own text
    alone misleads where one code means two things: ``InvalidToken`` ("Your token has expired or is invalid.") is
    its answer both to a wrong, used or expired e-mailed code and to a revoked login token, and the gateway says
    which call was refused (``refused_by``)."""
    deriv_said = f" (Deriv: {result.message})" if result.message else ""
    if result.refused_by == "paymentagent_withdraw" and result.error_code == "InvalidToken":
        return (
            "verification_code_invalid",
            "Deriv refused the verification code: it is wrong, already used or expired. Request a new code and "
            f"withdraw again{deriv_said}",
        )
    if result.refused_by == "authorize":
        return (
            "deriv_token_invalid",
            "Deriv refused the linked account's token: it was revoked, has expired or is for another account. "
            f"Link the Deriv account again{deriv_said}",
        )
    return result.error_code or "deriv_rejected", result.message or "Deriv refused the withdrawal"
