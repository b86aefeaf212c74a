"""Decoding stored Daraja callback bodies into the service layer's notices (``service_layer.callbacks``).

The wire shapes and their quirks live in ``adapters/daraja/wire.py``; this module only maps Daraja's outcomes onto
``penpay_domain.providers.PaymentResult``. A body without the documented shape raises ``ValueError``.
"""

from __future__ import annotations

from penpay.adapters.daraja import wire
from penpay.adapters.daraja.codes import Outcome
from penpay.service_layer.callbacks import B2cNotice, CallbackDecoder, StkNotice
from penpay.service_layer.intake import CallbackKind
from penpay_domain.money import Money
from penpay_domain.providers import PaymentResult, PaymentStatus

_STATUS = {
    Outcome.PAID: PaymentStatus.PAID,
    Outcome.CANCELLED: PaymentStatus.CANCELLED,
    Outcome.TIMED_OUT: PaymentStatus.TIMED_OUT,
    Outcome.WRONG_PIN: PaymentStatus.WRONG_PIN,
    Outcome.INSUFFICIENT_FUNDS: PaymentStatus.INSUFFICIENT_FUNDS,
    Outcome.REJECTED: PaymentStatus.FAILED,
    Outcome.FAILED: PaymentStatus.FAILED,
    Outcome.PENDING: PaymentStatus.PENDING,
    Outcome.UNKNOWN: PaymentStatus.UNKNOWN,
}


class DarajaCallbackDecoder:
    def stk(self, body: str) -> StkNotice:
        try:
            parsed = wire.parse_stk_callback(body.encode())
        except wire.DarajaPayloadError as exc:
            raise ValueError(str(exc)) from exc
        return StkNotice(
            checkout_request_id=parsed.checkout_request_id,
            result=PaymentResult(
                status=_STATUS[parsed.outcome],
                result_code=parsed.result_code,
                description=parsed.result_desc,
                receipt=parsed.receipt,
                amount=Money.kes(parsed.amount_kes) if parsed.amount_kes is not None else None,
            ),
        )

    def b2c(self, kind: CallbackKind, body: str) -> B2cNotice:
        try:
            if kind is CallbackKind.B2C_TIMEOUT:
                timeout = wire.parse_b2c_queue_timeout(body.encode())
                return B2cNotice(
                    originator_conversation_id=timeout.originator_conversation_id,
                    conversation_id=timeout.conversation_id,
                    result=PaymentResult(
                        status=PaymentStatus.UNKNOWN, result_code=timeout.result_code, description=timeout.result_desc
                    ),
                )
            parsed = wire.parse_b2c_result(body.encode())
        except wire.DarajaPayloadError as exc:
            raise ValueError(str(exc)) from exc
        return B2cNotice(
            originator_conversation_id=parsed.originator_conversation_id,
            conversation_id=parsed.conversation_id,
            result=PaymentResult(
                status=_STATUS[parsed.outcome],
                result_code=parsed.result_code,
                description=parsed.result_desc,
                receipt=parsed.receipt,
                amount=Money.kes(parsed.amount_kes) if parsed.amount_kes is not None else None,
            ),
        )


_: type[CallbackDecoder] = DarajaCallbackDecoder
