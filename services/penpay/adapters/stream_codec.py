"""The one wire format of PenPay's Redis Streams messages, shared by the immediate publisher, the outbox relay and
every consumer.

A stream entry has these fields (all strings):

    event_id        the outbox row id: the message's identity (consumers deduplicate on it)
    type            the event name, e.g. "deposit.requested"
    transaction_id  for logs and routing
    payload         the event's versioned JSON (``TransactionEvent.to_payload`` without ``event_id``)

Stream keys are ``<prefix>:<event.stream>`` (``penpay:deposits`` ...); the dead-letter stream is ``<prefix>:dead``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace

from penpay_domain.errors import InvalidInput
from penpay_domain.events import TransactionEvent, event_from_payload

DEAD_LETTER = "dead"


def stream_key(prefix: str, stream: str) -> str:
    return f"{prefix}:{stream}"


def payload_json(event: TransactionEvent) -> str:
    """The JSON stored in the outbox and carried in ``payload``: stable, without the event_id."""
    body = event.to_payload()
    body["event_id"] = None
    return json.dumps(body, separators=(",", ":"), sort_keys=True)


def fields_for(*, event_id: int, event_type: str, transaction_id: str | None, payload: str) -> dict[str, str]:
    return {
        "event_id": str(event_id),
        "type": event_type,
        "transaction_id": transaction_id or "",
        "payload": payload,
    }


def encode(event: TransactionEvent) -> dict[str, str]:
    if event.event_id is None:
        raise ValueError("only persisted events (with an outbox event_id) are published")
    return fields_for(
        event_id=event.event_id, event_type=event.name, transaction_id=event.transaction_id, payload=payload_json(event)
    )


def decode(fields: Mapping[bytes | str, bytes | str]) -> TransactionEvent:
    """Rebuild the event from a stream entry; malformed entries raise InvalidInput (the consumer dead-letters them)."""
    text = {_s(k): _s(v) for k, v in fields.items()}
    try:
        payload = json.loads(text["payload"])
        event_id = int(text["event_id"])
    except (KeyError, ValueError) as exc:
        raise InvalidInput(f"malformed stream entry: {exc}") from exc
    if not isinstance(payload, dict):
        raise InvalidInput("malformed stream entry: payload is not an object")
    return replace(event_from_payload(payload), event_id=event_id)


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
