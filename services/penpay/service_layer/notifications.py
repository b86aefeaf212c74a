"""Telling people what happened: an e-mail to the user when their money arrives or comes back, and to operations
when a transaction needs a human.

The user's address is the e-mail of the Deriv account they linked (Deriv's ``authorize`` returns it); a deposit to
an account the user never linked has no address, so it is only logged. Notifications are at-least-once: a message
processed twice may send twice, which is the safe side for "your money arrived".
"""

from __future__ import annotations

from collections.abc import Sequence

from penpay.logging import get_logger
from penpay.service_layer.flow import Delivery, FlowDeps, Item, Results, skip_processed, unwrap
from penpay_domain import events as ev
from penpay_domain.errors import NotFound
from penpay_domain.ids import TransactionId
from penpay_domain.msisdn import mask_msisdn
from penpay_domain.ports import Mail
from penpay_domain.transaction import Transaction

log = get_logger(__name__)

SUBJECTS: dict[str, str] = {
    ev.DepositCompleted.name: "Your deposit has arrived on Deriv",
    ev.DepositPaymentFailed.name: "Your deposit did not go through",
    ev.DepositRefunded.name: "Your deposit was refunded to M-Pesa",
    ev.WithdrawalCompleted.name: "Your withdrawal has been sent to M-Pesa",
    ev.WithdrawalFailed.name: "Your withdrawal did not go through",
    ev.WithdrawalReversed.name: "Your withdrawal was returned to your Deriv account",
}


def _body(txn: Transaction, event: ev.TransactionEvent) -> str:
    lines = [
        f"Transaction: {txn.id}",
        f"Status: {txn.status.value}",
        f"M-Pesa: {txn.amount_kes} ({mask_msisdn(txn.parties.msisdn)})",
        f"Deriv: {txn.amount_usd} ({txn.parties.deriv_loginid})",
        f"Rate: {txn.fx_rate} KES per USD; fee {txn.fee}",
    ]
    if txn.mpesa_receipt:
        lines.append(f"M-Pesa receipt: {txn.mpesa_receipt}")
    if txn.failure_reason:
        lines.append(f"Reason: {txn.failure_reason}")
    if event.detail:
        lines.append(f"Detail: {event.detail}")
    return "\n".join(lines) + "\n"


async def notify(deps: FlowDeps, event: ev.TransactionEvent, *, delivery: Delivery | None = None) -> str:
    """Send the e-mail an event calls for. A sent message is recorded as processed by the caller after the send (an
    e-mail cannot share a commit), so a crash in between sends it again: at-least-once. One with no one to send to
    is done without a record (``Delivery.needs_no_record``): a redelivery could only find the same."""
    return str(unwrap((await notify_many(deps, [Item(TransactionId(event.transaction_id), delivery, event)]))[0]))


async def notify_many(deps: FlowDeps, items: Sequence[Item]) -> Results:
    """:func:`notify` for the messages of a batch (distinct transactions): one read-only unit of work reads every
    transaction and linked account, then the e-mails go out together (one ``Mailer.send_many``). Each item gets what
    ``notify`` returns, or the exception its message ends with."""
    results: Results = [None] * len(items)
    relevant: list[tuple[int, Item, ev.TransactionEvent]] = []
    for n, item in enumerate(items):
        event = item.event
        if event is None:
            results[n] = ValueError("a notification needs its event")
        elif event.name not in SUBJECTS and event.name != ev.TransactionNeedsReview.name:
            results[n] = "not notified"
        else:
            relevant.append((n, item, event))
    if not relevant:
        return results
    mails: list[tuple[int, str, str, str, str]] = []  # (index, to, subject, body, outcome)
    async with deps.uow() as uow:
        todo = {id(i) for i in await skip_processed(uow, [item for _, item, _ in relevant])}
        txns = await uow.transactions.get_many([item.txn_id for _, item, _ in relevant if id(item) in todo])
        linked = await uow.linked_accounts.get_many(
            [(t.parties.user_id, t.parties.deriv_loginid) for t in txns.values()]
        )
        for n, item, event in relevant:
            txn = txns.get(item.txn_id)
            if id(item) not in todo:
                results[n] = "duplicate"
                continue
            if txn is None:
                results[n] = NotFound(f"transaction {item.txn_id} not found")
                continue
            subject = SUBJECTS.get(event.name)
            review = subject is None
            account = linked.get((txn.parties.user_id, txn.parties.deriv_loginid))
            to = deps.ops_email if review else (account.email if account is not None else "")
            if not to:  # nothing to send, so nothing a redelivery could repeat: done, and no record to write
                if item.delivery is not None:
                    item.delivery.needs_no_record()
                if review:
                    log.warning("needs_review_without_ops_email", transaction_id=txn.id, reason=event.detail)
                    results[n] = "no ops address"
                else:
                    # routine (a user who never linked a Deriv account has no address): the step's own line says it
                    log.debug("no_address_for_notification", transaction_id=txn.id, event_type=event.name)
                    results[n] = "no address"
            elif review:
                title = f"PenPay: {txn.kind.value} {txn.id} needs review"
                mails.append((n, to, title, _body(txn, event), "ops notified"))
            else:
                mails.append((n, to, str(subject), _body(txn, event), "sent"))
    sent = await deps.mailer.send_many([Mail(to=to, subject=subject, body=body) for _, to, subject, body, _ in mails])
    for (n, *_, outcome), answer in zip(mails, sent, strict=True):
        results[n] = outcome if answer is None else answer
    return results
