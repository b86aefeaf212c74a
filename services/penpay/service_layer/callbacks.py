"""M-Pesa callbacks: signed callback URLs, the durable intake, and applying a stored callback to its transaction.

Daraja does not sign callbacks, so PenPay signs its callback URLs: each carries the transaction id and
``token = hex(HMAC-SHA256(PENPAY_CALLBACK_SECRET, "<kind>:<transaction id>"))``. Paths (under
``PENPAY_CALLBACK_PUBLIC_PREFIX``, default ``/hooks``, because Daraja refuses URLs containing "mpesa"):

    {prefix}/stk/{txn_id}/{token}   {prefix}/b2c/result/{txn_id}/{token}   {prefix}/b2c/timeout/{txn_id}/{token}
    {prefix}/status/result/{txn_id}/{token}   {prefix}/status/timeout/{txn_id}/{token}   (Transaction Status answers)

The same handlers answer at ``/mpesa/callback``, ``/mpesa/b2c/result`` and ``/mpesa/b2c/timeout`` with the same
``/{txn_id}/{token}`` suffix. Both travel as hex, whose alphabet cannot spell any word Daraja refuses in a URL
("cmd", "exe", "sql", ...): the id as ``transaction_id_hex`` (its base-32 form can spell "cmd" or "exe", and Daraja
refused about 1 push in 1,000 for it in the benchmark), the token as an HMAC digest. The API still reads the
base-32 form in URLs given out before this change.

Intake (the API): every callback, forged or not, is stored raw and audited before the acknowledgement; only one from
an allowed address with a valid token is queued for the callback worker. Application (the worker, through
``process_callback``): the callback must match a transaction by CheckoutRequestID / ConversationID, be bound by its
token to that same transaction, and carry the expected amount. Duplicates and late callbacks change nothing; a
mismatch changes no money, is audited, and a paid-but-wrong-amount is sent to review. The payer's phone in a
callback is recorded (in the raw body), never trusted: Safaricom masks it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from penpay.service_layer.collection import settle_stk_result
from penpay.service_layer.intake import CallbackKind, IntakeUnitOfWork, ReceivedCallback, StoredCallback
from penpay.service_layer.payouts import apply_payout_result
from penpay_domain.errors import NotFound
from penpay_domain.ids import TransactionId, transaction_id_hex
from penpay_domain.ports import UnitOfWork
from penpay_domain.providers import PaymentResult, PaymentStatus
from penpay_domain.transaction import Kind, Status, Transaction

_PATHS = {
    CallbackKind.STK: "stk",
    CallbackKind.B2C_RESULT: "b2c/result",
    CallbackKind.B2C_TIMEOUT: "b2c/timeout",
    CallbackKind.STATUS_RESULT: "status/result",
    CallbackKind.STATUS_TIMEOUT: "status/timeout",
}
LEGACY_PATHS = {
    CallbackKind.STK: "/mpesa/callback",
    CallbackKind.B2C_RESULT: "/mpesa/b2c/result",
    CallbackKind.B2C_TIMEOUT: "/mpesa/b2c/timeout",
    CallbackKind.STATUS_RESULT: "/mpesa/status/result",
    CallbackKind.STATUS_TIMEOUT: "/mpesa/status/timeout",
}
ACTOR = "mpesa"


# ------------------------------------------------------------------------------------------------ signed URLs
class CallbackUrls:
    """Builds and checks the per-transaction callback URLs handed to Daraja."""

    def __init__(self, *, base_url: str, prefix: str, secret: str) -> None:
        self._base = base_url.rstrip("/")
        self._prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
        self._key = secret.encode()

    def token(self, kind: CallbackKind, txn_id: str) -> str:
        return hmac.new(self._key, f"{kind.value}:{txn_id}".encode(), hashlib.sha256).hexdigest()

    def verify(self, kind: CallbackKind, txn_id: str, token: str) -> bool:
        return hmac.compare_digest(self.token(kind, txn_id).encode(), token.encode("utf-8", "replace"))

    def path(self, kind: CallbackKind) -> str:
        return f"{self._prefix}/{_PATHS[kind]}"

    def url(self, kind: CallbackKind, txn_id: str) -> str:
        """The transaction travels as hex (``transaction_id_hex``): its base-32 form can spell words Daraja refuses in
        a URL. The token is computed over the id itself."""
        hex_id = transaction_id_hex(TransactionId(txn_id))
        return f"{self._base}{self.path(kind)}/{hex_id}/{self.token(kind, txn_id)}"

    def stk(self, txn_id: str) -> str:
        return self.url(CallbackKind.STK, txn_id)

    def b2c_result(self, txn_id: str) -> str:
        return self.url(CallbackKind.B2C_RESULT, txn_id)

    def b2c_timeout(self, txn_id: str) -> str:
        return self.url(CallbackKind.B2C_TIMEOUT, txn_id)

    def status_result(self, txn_id: str) -> str:
        return self.url(CallbackKind.STATUS_RESULT, txn_id)

    def status_timeout(self, txn_id: str) -> str:
        return self.url(CallbackKind.STATUS_TIMEOUT, txn_id)


# ------------------------------------------------------------------------------------------------ intake
async def receive_callbacks(uow: IntakeUnitOfWork, callbacks: Sequence[ReceivedCallback]) -> list[StoredCallback]:
    """Store the raw callbacks and audit them, in one commit (callbacks that arrived together share it). The caller
    acknowledges them only after this returns."""
    async with uow:
        stored = await uow.callbacks.add_many(callbacks)
        await uow.audit.append_many(actor=ACTOR, entries=[callback_audit_entry(s) for s in stored], now=uow.now)
        await uow.commit()
    return stored


def callback_audit_entry(stored: StoredCallback) -> tuple[str, str, dict[str, object]]:
    """What the audit log says of a stored callback: (action, subject, payload). The body itself is in the inbox;
    the audit row carries its hash."""
    callback = stored.callback
    return (
        "mpesa.callback_received" if callback.verified else "mpesa.callback_rejected",
        callback.transaction_id or f"callback:{stored.id}",
        {
            "callback_id": stored.id,
            "kind": callback.kind.value,
            "source_ip": callback.source_ip,
            "source_allowed": callback.source_allowed,
            "token_valid": callback.token_valid,
            "body_sha256": hashlib.sha256(callback.body.encode()).hexdigest(),
        },
    )


# ------------------------------------------------------------------------------------------------ application
@dataclass(frozen=True, slots=True, kw_only=True)
class StkNotice:
    """An STK callback in domain terms (decoded by the Daraja adapter from the stored raw body)."""

    checkout_request_id: str
    result: PaymentResult


@dataclass(frozen=True, slots=True, kw_only=True)
class B2cNotice:
    """A B2C result or queue-timeout notice; a timeout's result is UNKNOWN whatever its code says."""

    originator_conversation_id: str
    conversation_id: str
    result: PaymentResult


class CallbackDecoder(Protocol):
    """Decodes stored raw bodies; raises ``ValueError`` for a body without the documented shape."""

    def stk(self, body: str) -> StkNotice: ...
    def b2c(self, kind: CallbackKind, body: str) -> B2cNotice: ...
    def status(self, kind: CallbackKind, body: str) -> PaymentResult:
        """A Transaction Status answer about a payout (a failed or timed-out query is UNKNOWN, never FAILED)."""
        ...


class Verdict(StrEnum):
    APPLIED = "applied"  # the transaction moved
    DUPLICATE = "duplicate"  # already applied (or the transaction moved on): nothing changed
    PENDING = "pending"  # no final answer in it (e.g. a queue timeout): the reconciler asks the provider
    EARLY = "early"  # the transaction has not recorded its CheckoutRequestID yet: retry the message later
    UNMATCHED = "unmatched"  # no transaction has this CheckoutRequestID / ConversationID
    MISMATCH = "mismatch"  # wrong transaction for its token, or wrong amount: no money moved, audited
    REJECTED = "rejected"  # unverified (address or token) or malformed: never applied


async def process_callback(
    uow_factory: Callable[[], IntakeUnitOfWork], callback_id: int, decoder: CallbackDecoder
) -> Verdict:
    """What the callback worker runs for each queued callback id: load, decode, apply, commit (one transaction)."""
    async with uow_factory() as uow:
        stored = await uow.callbacks.get(callback_id)
        verdict = await apply_callback(uow, stored, decoder)
        await uow.commit()
    return verdict


async def apply_callback(uow: UnitOfWork, stored: StoredCallback, decoder: CallbackDecoder) -> Verdict:
    """Decode and apply within the caller's open unit of work (the caller commits)."""
    callback = stored.callback
    if not callback.verified:
        return await _note(uow, stored, Verdict.REJECTED, "unverified callback (source address or token)")
    try:
        if callback.kind is CallbackKind.STK:
            return await apply_stk_callback(uow, stored, decoder.stk(callback.body))
        if callback.kind in (CallbackKind.STATUS_RESULT, CallbackKind.STATUS_TIMEOUT):
            return await apply_status_answer(uow, stored, decoder.status(callback.kind, callback.body))
        return await apply_b2c_callback(uow, stored, decoder.b2c(callback.kind, callback.body))
    except ValueError as exc:
        return await _note(uow, stored, Verdict.REJECTED, f"malformed body: {exc}")


async def apply_stk_callback(uow: UnitOfWork, stored: StoredCallback, notice: StkNotice) -> Verdict:
    if not stored.callback.verified:
        return await _note(uow, stored, Verdict.REJECTED, "unverified callback (source address or token)")
    txn = await uow.transactions.find_by_checkout_request_id(notice.checkout_request_id)
    if txn is None:
        txn = await _awaiting_without_checkout_id(uow, stored, notice.checkout_request_id)
        if txn is None:
            return await _unmatched(uow, stored, f"CheckoutRequestID {notice.checkout_request_id}")
        if txn.mpesa_checkout_request_id is None:
            # Daraja's answer to our push was lost, or has not been recorded yet; the token-bound URL names this
            # deposit, so the callback is its own
            if txn.status is Status.PENDING:
                txn.stk_push_accepted(notice.checkout_request_id, uow.now)
            else:
                txn.mpesa_checkout_request_id = notice.checkout_request_id
    if txn.id != stored.callback.transaction_id:
        return await _note(uow, stored, Verdict.MISMATCH, f"token is bound to another transaction than {txn.id}")
    before = txn.status
    done = await settle_stk_result(uow, txn, notice.result, from_query=False)
    return await _note(uow, stored, _VERDICTS.get(done, Verdict.DUPLICATE), f"{done} ({before.value})", txn)


async def apply_b2c_callback(uow: UnitOfWork, stored: StoredCallback, notice: B2cNotice) -> Verdict:
    if not stored.callback.verified:
        return await _note(uow, stored, Verdict.REJECTED, "unverified callback (source address or token)")
    txn = None
    if notice.conversation_id:
        txn = await uow.transactions.find_by_conversation_id(notice.conversation_id)
    if txn is None and notice.originator_conversation_id:
        txn = await uow.transactions.find_by_payout_id(notice.originator_conversation_id)
    if txn is None:
        ids = f"ConversationID {notice.conversation_id} / {notice.originator_conversation_id}"
        return await _unmatched(uow, stored, ids)
    if txn.id != stored.callback.transaction_id:
        return await _note(uow, stored, Verdict.MISMATCH, f"token is bound to another transaction than {txn.id}")
    result = notice.result
    if stored.callback.kind is CallbackKind.B2C_TIMEOUT:
        result = PaymentResult(
            status=PaymentStatus.UNKNOWN, result_code=result.result_code, description="queue timeout"
        )
    return await _apply_payout(uow, stored, txn, result)


async def apply_status_answer(uow: UnitOfWork, stored: StoredCallback, result: PaymentResult) -> Verdict:
    """A Transaction Status answer names its own query, not the payout, so it is matched by the transaction its
    token-bound URL names (the URL was made for that transaction's query)."""
    if not stored.callback.verified or stored.callback.transaction_id is None:
        return await _note(uow, stored, Verdict.REJECTED, "unverified callback (source address or token)")
    try:
        txn = await uow.transactions.get(stored.callback.transaction_id, for_update=True)
    except NotFound:
        return await _note(uow, stored, Verdict.UNMATCHED, "no such transaction")
    if stored.callback.kind is CallbackKind.STATUS_TIMEOUT:
        result = PaymentResult(status=PaymentStatus.UNKNOWN, result_code=result.result_code, description="timeout")
    return await _apply_payout(uow, stored, txn, result)


async def _apply_payout(uow: UnitOfWork, stored: StoredCallback, txn: Transaction, result: PaymentResult) -> Verdict:
    if result.status is PaymentStatus.PAID and result.amount is not None and result.amount != txn.amount_kes:
        reason = f"B2C paid {result.amount.to_str()} (receipt {result.receipt}), expected {txn.amount_kes.to_str()}"
        if txn.can_move_to(Status.NEEDS_REVIEW):
            txn.flag_for_review(reason=reason[:255], now=uow.now)
        return await _note(uow, stored, Verdict.MISMATCH, reason, txn)
    before = txn.status
    done = await apply_payout_result(uow, txn, result)
    return await _note(uow, stored, _VERDICTS.get(done, Verdict.DUPLICATE), f"{done} ({before.value})", txn)


_VERDICTS = {
    "paid": Verdict.APPLIED,
    "failed": Verdict.APPLIED,
    "pending": Verdict.PENDING,
    "amount mismatch": Verdict.MISMATCH,
    "late success": Verdict.MISMATCH,
    "receipt recorded": Verdict.APPLIED,
    "duplicate": Verdict.DUPLICATE,
}


async def _awaiting_without_checkout_id(
    uow: UnitOfWork, stored: StoredCallback, checkout_request_id: str
) -> Transaction | None:
    claimed = stored.callback.transaction_id
    if claimed is None:
        return None
    try:
        txn = await uow.transactions.get(claimed, for_update=True)
    except NotFound:
        return None
    if txn.kind is not Kind.DEPOSIT:
        return None
    if txn.mpesa_checkout_request_id == checkout_request_id:
        return txn  # the push's answer was recorded while this waited for the row lock: it is the match after all
    if txn.mpesa_checkout_request_id is not None:
        return None
    if txn.status is Status.AWAITING_PAYMENT:
        return txn
    if txn.status is Status.PENDING and txn.stk_requested_at is not None:
        return txn  # the callback overtook Daraja's answer to our push (the push was sent: it is recorded)
    return None


async def _unmatched(uow: UnitOfWork, stored: StoredCallback, what: str) -> Verdict:
    """No transaction has these provider ids. One still waiting for its CheckoutRequestID is retried, not dropped."""
    claimed: TransactionId | None = stored.callback.transaction_id
    if claimed is not None and stored.callback.kind is CallbackKind.STK:
        try:
            txn = await uow.transactions.get(claimed)
        except NotFound:
            txn = None
        if txn is not None and txn.status is Status.PENDING and txn.mpesa_checkout_request_id is None:
            return await _note(uow, stored, Verdict.EARLY, f"{what} not recorded yet on {txn.id}", txn)
    return await _note(uow, stored, Verdict.UNMATCHED, f"no transaction has {what}")


async def _note(
    uow: UnitOfWork, stored: StoredCallback, verdict: Verdict, detail: str, txn: Transaction | None = None
) -> Verdict:
    await uow.audit.append(
        actor=ACTOR,
        action=f"mpesa.callback_{verdict.value}",
        subject=(txn.id if txn is not None else stored.callback.transaction_id) or f"callback:{stored.id}",
        payload={"callback_id": stored.id, "kind": stored.callback.kind.value, "detail": detail},
        now=uow.now,
    )
    return verdict
