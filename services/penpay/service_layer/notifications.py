"""Telling people what happened: an e-mail to the user when their money arrives or comes back, and to operations
when a transaction needs a human.

The user's address is the e-mail of the Deriv account they linked (Deriv's ``authorize`` returns it); a deposit to
an account the user never linked has no address, so it is only logged. Notifications are at-least-once: a message
processed twice may send twice, which is the safe side for "your money arrived".
"""

from __future__ import annotations

from penpay.logging import get_logger
from penpay.service_layer.flow import Delivery, FlowDeps, already_processed, record_processed
from penpay_domain import events as ev
from penpay_domain.ids import TransactionId
from penpay_domain.msisdn import mask_msisdn
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
    is recorded in the unit of work that found that out."""
    subject = SUBJECTS.get(event.name)
    review = event.name == ev.TransactionNeedsReview.name
    if subject is None and not review:
        return "not notified"
    async with deps.uow() as uow:
        if await already_processed(uow, delivery):
            return "duplicate"
        txn = await uow.transactions.get(TransactionId(event.transaction_id))
        linked = await uow.linked_accounts.get(txn.parties.user_id, txn.parties.deriv_loginid)
        to = deps.ops_email if review else (linked.email if subject is not None and linked is not None else "")
        if not to:  # nothing to send: the message is done here, recorded in this very unit of work
            await record_processed(uow, delivery)
            await uow.commit()
    if review:
        if not to:
            log.warning("needs_review_without_ops_email", transaction_id=txn.id, reason=event.detail)
            return "no ops address"
        await deps.mailer.send(to=to, subject=f"PenPay: {txn.kind.value} {txn.id} needs review", body=_body(txn, event))
        return "ops notified"
    if subject is None or not to:
        log.info("no_address_for_notification", transaction_id=txn.id, event_type=event.name)
        return "no address"
    await deps.mailer.send(to=to, subject=subject, body=_body(txn, event))
    return "sent"
