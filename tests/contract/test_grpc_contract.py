"""Pins the gateway's gRPC contract (proto/penpay/gateway/v1/gateway.proto) through the generated descriptors.

A failing test here means the wire contract changed: renumbering or retyping a field silently breaks every
deployed client, so any change must be deliberate (add fields with new numbers; never reuse a number).
"""

from __future__ import annotations

import pytest
from google.protobuf.descriptor import FieldDescriptor

from penpay._proto.penpay.gateway.v1 import gateway_pb2 as pb

pytestmark = pytest.mark.contract

_TYPE_NAMES = {
    FieldDescriptor.TYPE_STRING: "string",
    FieldDescriptor.TYPE_BYTES: "bytes",
    FieldDescriptor.TYPE_INT64: "int64",
    FieldDescriptor.TYPE_INT32: "int32",
    FieldDescriptor.TYPE_MESSAGE: "message",
    FieldDescriptor.TYPE_BOOL: "bool",
    FieldDescriptor.TYPE_ENUM: "enum",
}

METHODS = {
    "Transfer": ("TransferRequest", "TransferResponse"),
    "TransferBatch": ("TransferBatchRequest", "TransferBatchResponse"),
    "Withdraw": ("WithdrawRequest", "WithdrawResponse"),
    "WithdrawBatch": ("WithdrawBatchRequest", "WithdrawBatchResponse"),
    "RequestWithdrawalCode": ("RequestWithdrawalCodeRequest", "RequestWithdrawalCodeResponse"),
    "GetBalance": ("GetBalanceRequest", "GetBalanceResponse"),
    "FindTransfer": ("FindTransferRequest", "FindTransferResponse"),
    "LinkAccount": ("LinkAccountRequest", "LinkAccountResponse"),
}

MONEY_RESULT = {
    "outcome": (1, "enum"),
    "transaction_id": (2, "int64"),
    "error_code": (3, "string"),
    "error_message": (4, "string"),
}

MESSAGES: dict[str, dict[str, tuple[int, str]]] = {
    "TransferRequest": {
        "reference": (1, "string"),
        "loginid": (2, "string"),
        "amount_cents": (3, "int64"),
        "currency": (4, "string"),
    },
    "TransferResponse": {**MONEY_RESULT, "client_full_name": (5, "string"), "refused_by": (6, "string")},
    "TransferBatchRequest": {"transfers": (1, "message")},
    "TransferBatchResponse": {"results": (1, "message")},
    "TransferBatchResult": {"response": (1, "message"), "status_code": (2, "int32"), "status_details": (3, "string")},
    "WithdrawBatchRequest": {"withdrawals": (1, "message")},
    "WithdrawBatchResponse": {"results": (1, "message")},
    "WithdrawBatchResult": {"response": (1, "message"), "status_code": (2, "int32"), "status_details": (3, "string")},
    "WithdrawRequest": {
        "reference": (1, "string"),
        "loginid": (2, "string"),
        "encrypted_token": (3, "bytes"),
        "amount_cents": (4, "int64"),
        "currency": (5, "string"),
        "verification_code": (6, "string"),
    },
    "WithdrawResponse": {**MONEY_RESULT, "refused_by": (5, "string")},
    "RequestWithdrawalCodeRequest": {"loginid": (1, "string"), "encrypted_token": (2, "bytes")},
    "RequestWithdrawalCodeResponse": {
        "outcome": (1, "enum"),
        "error_code": (2, "string"),
        "error_message": (3, "string"),
    },
    "GetBalanceRequest": {},
    "GetBalanceResponse": {
        "loginid": (1, "string"),
        "currency": (2, "string"),
        "balance_cents": (3, "int64"),
        "as_of_unix_ms": (4, "int64"),
    },
    "FindTransferRequest": {"reference": (1, "string")},
    "FindTransferResponse": {
        "found": (1, "bool"),
        "transaction_id": (2, "int64"),
        "amount_cents": (3, "int64"),
        "transaction_time": (4, "int64"),
        "longcode": (5, "string"),
    },
    "LinkAccountRequest": {"token": (1, "string")},
    "LinkAccountResponse": {
        "outcome": (1, "enum"),
        "error_code": (2, "string"),
        "error_message": (3, "string"),
        "loginid": (4, "string"),
        "currency": (5, "string"),
        "email": (6, "string"),
        "fullname": (7, "string"),
        "is_virtual": (8, "bool"),
        "scopes": (9, "string"),
        "encrypted_token": (10, "bytes"),
    },
}


def test_the_service_is_penpay_gateway_v1_deriv_gateway() -> None:
    assert pb.DESCRIPTOR.package == "penpay.gateway.v1"
    assert pb.DESCRIPTOR.services_by_name["DerivGateway"].full_name == "penpay.gateway.v1.DerivGateway"


def test_the_methods_and_their_message_types_are_pinned() -> None:
    service = pb.DESCRIPTOR.services_by_name["DerivGateway"]
    actual = {m.name: (m.input_type.name, m.output_type.name) for m in service.methods}
    assert actual == METHODS
    assert not any(m.client_streaming or m.server_streaming for m in service.methods)


@pytest.mark.parametrize("message", sorted(MESSAGES))
def test_field_names_numbers_and_types_are_pinned(message: str) -> None:
    descriptor = pb.DESCRIPTOR.message_types_by_name[message]
    actual = {f.name: (f.number, _TYPE_NAMES[f.type]) for f in descriptor.fields}
    assert actual == MESSAGES[message]


def test_every_message_of_the_file_is_pinned() -> None:
    assert set(pb.DESCRIPTOR.message_types_by_name) == set(MESSAGES)


def test_outcome_values_are_pinned_and_zero_means_unspecified() -> None:
    outcome = pb.DESCRIPTOR.enum_types_by_name["Outcome"]
    assert {v.name: v.number for v in outcome.values} == {
        "OUTCOME_UNSPECIFIED": 0,
        "OUTCOME_DONE": 1,
        "OUTCOME_REJECTED": 2,
        "OUTCOME_UNKNOWN": 3,
    }


def test_enum_fields_use_the_outcome_enum_and_scopes_is_repeated() -> None:
    for name in ("TransferResponse", "WithdrawResponse", "RequestWithdrawalCodeResponse", "LinkAccountResponse"):
        field = pb.DESCRIPTOR.message_types_by_name[name].fields_by_name["outcome"]
        assert field.enum_type.full_name == "penpay.gateway.v1.Outcome"
    scopes = pb.DESCRIPTOR.message_types_by_name["LinkAccountResponse"].fields_by_name["scopes"]
    assert scopes.is_repeated


def test_a_transfer_batch_carries_repeated_transfer_requests_and_one_result_each() -> None:
    messages = pb.DESCRIPTOR.message_types_by_name
    transfers = messages["TransferBatchRequest"].fields_by_name["transfers"]
    assert transfers.is_repeated and transfers.message_type.name == "TransferRequest"
    results = messages["TransferBatchResponse"].fields_by_name["results"]
    assert results.is_repeated and results.message_type.name == "TransferBatchResult"
    assert messages["TransferBatchResult"].fields_by_name["response"].message_type.name == "TransferResponse"
