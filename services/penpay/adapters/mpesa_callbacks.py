"""Decoding stored Daraja callback bodies into the service layer's notices (``service_layer.callbacks``).

The wire shapes and their quirks live in ``adapters/daraja/wire.py`` and the outcome mapping in
``adapters/daraja/mpesa.py``; this module only picks the parser for each kind of callback. A body without the
documented shape raises ``ValueError``.
"""

from __future__ import annotations

from penpay.adapters.daraja import mpesa, wire
from penpay.service_layer.callbacks import B2cNotice, CallbackDecoder, StkNotice
from penpay.service_layer.intake import CallbackKind
from penpay_domain.providers import PaymentResult, PaymentStatus


class DarajaCallbackDecoder:
    def stk(self, body: str) -> StkNotice:
        try:
            parsed = wire.parse_stk_callback(body.encode())
        except wire.DarajaPayloadError as exc:
            raise ValueError(str(exc)) from exc
        return StkNotice(
            checkout_request_id=parsed.checkout_request_id, result=mpesa.payment_result_from_stk_callback(parsed)
        )

    def b2c(self, kind: CallbackKind, body: str) -> B2cNotice:
        try:
            if kind is CallbackKind.B2C_TIMEOUT:
                timeout = wire.parse_b2c_queue_timeout(body.encode())
                return B2cNotice(
                    originator_conversation_id=timeout.originator_conversation_id,
                    conversation_id=timeout.conversation_id,
                    result=mpesa.payment_result_from_queue_timeout(timeout),
                )
            parsed = wire.parse_b2c_result(body.encode())
        except wire.DarajaPayloadError as exc:
            raise ValueError(str(exc)) from exc
        return B2cNotice(
            originator_conversation_id=parsed.originator_conversation_id,
            conversation_id=parsed.conversation_id,
            result=mpesa.payment_result_from_b2c_result(parsed),
        )

    def status(self, kind: CallbackKind, body: str) -> PaymentResult:
        if kind is CallbackKind.STATUS_TIMEOUT:
            return PaymentResult(
                status=PaymentStatus.UNKNOWN, result_code="timeout", description="status query timed out"
            )
        try:
            parsed = wire.parse_transaction_status_result(body.encode())
        except wire.DarajaPayloadError as exc:
            raise ValueError(str(exc)) from exc
        return mpesa.payment_result_from_transaction_status(parsed)


_: type[CallbackDecoder] = DarajaCallbackDecoder
