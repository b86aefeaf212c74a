"""Helpers for the Daraja contract tests: a running simulator, a callback receiver, golden-shape comparison.

Golden files (``golden/daraja/*.json``) are samples from ../shared/reference/daraja.md: §1 OAuth answer (with
``expires_in`` as the string the gateway sends); §0/§2 error envelope; §2 STK request (composed from the field
table) and answer; §3 STK callbacks (a failure has only the four top fields); §4 STK Query request, answer and the
"being processed" envelope; §5 B2C request, answer and result verbatim, a failed result (no ResultParameters, but a
TransactionID) and the queue-timeout notice (no portal sample: the envelope field code uses); §6 Transaction
Status request and answer, and its result composed from the listed keys (the sample's second ``DebitPartyName``
read as ``CreditPartyName``), values as strings.

The callback receiver is a deliberately small HTTP/1.1 server of its own (not FastAPI, not our client), so the
simulator's callbacks are checked as bytes on a real socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, TypedDict

import httpx
from fastapi import FastAPI

from penpay.sandbox.control import AppServer
from penpay.sandbox.daraja import DarajaSimulator
from penpay.sandbox.daraja_control import create_daraja_control_router
from penpay.sandbox.daraja_crypto import SandboxCertificate

GOLDEN = Path(__file__).parent / "golden" / "daraja"
CONSUMER_KEY = "test-consumer-key"
CONSUMER_SECRET = "test-consumer-secret"
SHORTCODE = "174379"
PASSKEY = "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919"
B2C_SHORTCODE = "600997"
INITIATOR = "testapi"
INITIATOR_PASSWORD = "Safaricom999!*!"


class ClientCredentials(TypedDict):
    consumer_key: str
    consumer_secret: str
    shortcode: str
    passkey: str
    b2c_shortcode: str
    initiator_name: str
    initiator_password: str


# what a DarajaClient is given for the simulator's app: DarajaClient(base_url=..., **CLIENT_CREDENTIALS, ...)
CLIENT_CREDENTIALS: ClientCredentials = {
    "consumer_key": CONSUMER_KEY,
    "consumer_secret": CONSUMER_SECRET,
    "shortcode": SHORTCODE,
    "passkey": PASSKEY,
    "b2c_shortcode": B2C_SHORTCODE,
    "initiator_name": INITIATOR,
    "initiator_password": INITIATOR_PASSWORD,
}
CALLBACK_DELAY_MS = 40


def golden(name: str) -> Any:
    return json.loads((GOLDEN / f"{name}.json").read_text(), parse_float=Decimal)


def decode(body: bytes | str) -> Any:
    """JSON as Daraja sends it, decimals kept exact."""
    return json.loads(body, parse_float=Decimal)


@functools.cache
def shared_certificate() -> SandboxCertificate:
    """One RSA key for the whole test session: generating one per test would dominate the run time."""
    return SandboxCertificate()


# ------------------------------------------------------------------------------------------ the simulator


@dataclass
class RunningDaraja:
    sim: DarajaSimulator
    url: str
    control_url: str
    control_app: FastAPI
    over_socket: bool

    def client(self, timeout_s: float = 5.0) -> httpx.AsyncClient:
        """Raw HTTP to the simulator (in-process ASGI unless it listens on a socket)."""
        if self.over_socket:
            return httpx.AsyncClient(base_url=self.url, timeout=timeout_s)
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.sim.app), base_url=self.url, timeout=timeout_s)

    def control(self) -> httpx.AsyncClient:
        if self.over_socket:
            return httpx.AsyncClient(base_url=self.control_url, timeout=5)
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.control_app), base_url=self.control_url, timeout=5
        )


@contextlib.asynccontextmanager
async def running_daraja(
    *, callback_delay_ms: int = CALLBACK_DELAY_MS, over_socket: bool = False
) -> AsyncIterator[RunningDaraja]:
    """The simulator and its control router: in-process (ASGI) by default, or each on a real socket (free port)
    where the test needs one (read timeouts). Callbacks always go over real sockets."""
    sim = DarajaSimulator(
        consumer_key=CONSUMER_KEY,
        consumer_secret=CONSUMER_SECRET,
        shortcode=SHORTCODE,
        passkey=PASSKEY,
        b2c_shortcode=B2C_SHORTCODE,
        initiator_name=INITIATOR,
        initiator_password=INITIATOR_PASSWORD,
        callback_delay_ms=callback_delay_ms,
        certificate=shared_certificate(),
    )
    control = FastAPI()
    control.include_router(create_daraja_control_router(sim), prefix="/daraja")
    if not over_socket:
        try:
            yield RunningDaraja(sim, "http://daraja.test", "http://control.test", control, over_socket=False)
        finally:
            await sim.aclose()
        return
    server, control_server = AppServer(sim.app, name="daraja"), AppServer(control, name="control")
    await asyncio.gather(server.start("127.0.0.1", 0), control_server.start("127.0.0.1", 0))
    try:
        yield RunningDaraja(sim, server.url, control_server.url, control, over_socket=True)
    finally:
        await sim.aclose()
        await asyncio.gather(control_server.stop(), server.stop())


# ------------------------------------------------------------------------------------------ callback receiver


@dataclass(frozen=True)
class Delivery:
    path: str
    body: bytes
    content_type: str

    def json(self) -> Any:
        return decode(self.body)


class CallbackReceiver:
    """An HTTP/1.1 server that records every POST and answers ``{"ResultCode": 0, "ResultDesc": "Accepted"}``."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self._arrived = asyncio.Condition()
        self._server: asyncio.Server | None = None
        self.port = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1)

    def at(self, path: str) -> list[Delivery]:
        return [d for d in self.deliveries if d.path == path]

    async def wait_for(self, path: str, count: int = 1, timeout_s: float = 5.0) -> list[Delivery]:
        async with asyncio.timeout(timeout_s), self._arrived:
            await self._arrived.wait_for(lambda: len(self.at(path)) >= count)
        return self.at(path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                _, path, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                async with self._arrived:
                    self.deliveries.append(Delivery(path, body, headers.get("content-type", "")))
                    self._arrived.notify_all()
                answer = b'{"ResultCode": 0, "ResultDesc": "Accepted"}'
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(answer)}\r\n\r\n".encode()
                    + answer
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def callback_receiver() -> AsyncIterator[CallbackReceiver]:
    receiver = CallbackReceiver()
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()


# ------------------------------------------------------------------------------------------ golden shapes

# Values that vary per message are matched by pattern rather than by value.
PATTERNS: dict[str, re.Pattern[str]] = {
    "CheckoutRequestID": re.compile(r"^ws_CO_\d{14,}$"),
    "MerchantRequestID": re.compile(r"^[0-9a-f]+(-[0-9a-f]+)+$"),
    "ConversationID": re.compile(r"^AG_\d{8}_[0-9a-f]{16,}$"),
    "MpesaReceiptNumber": re.compile(r"^[A-Z0-9]{10}$"),
    "TransactionReceipt": re.compile(r"^[A-Z0-9]{10}$"),
    "TransactionDate": re.compile(r"^20\d{12}$"),
    "TransactionCompletedDateTime": re.compile(r"^\d{2}\.\d{2}\.\d{4} \d{2}:\d{2}:\d{2}$"),
    "InitiatedTime": re.compile(r"^20\d{12}$"),
    "FinalisedTime": re.compile(r"^20\d{12}$"),
    "PhoneNumber": re.compile(r"^254[17]\d{8}$"),
    "access_token": re.compile(r"^[A-Za-z0-9]{20,}$"),
    "expires_in": re.compile(r"^3599$"),
    "requestId": re.compile(r"^[\w-]+$"),
    "errorCode": re.compile(r"^\d{3}\.\d{3}\.\d{2,4}$"),
    "ResponseCode": re.compile(r"^0$"),
    "DebitPartyCharges": re.compile(r"^(Fee For B2C Payment\|KES\|\d+\.\d{2})?$"),
}


def json_type(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, Decimal):
        return "decimal"  # a JSON number written with a fraction, e.g. 100.00
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    if isinstance(value, list):
        return "array"
    return "object"


def shape_problems(golden_value: object, actual: object, where: str = "$") -> list[str]:
    """Where ``actual`` differs from the golden sample in keys, JSON types or patterned values."""
    problems: list[str] = []
    if json_type(golden_value) != json_type(actual):
        return [f"{where}: {json_type(actual)} where the reference has {json_type(golden_value)}"]
    if isinstance(golden_value, dict) and isinstance(actual, dict):
        if set(golden_value) != set(actual):
            problems.append(f"{where}: keys {sorted(actual)} where the reference has {sorted(golden_value)}")
        for key in set(golden_value) & set(actual):
            problems += shape_problems(golden_value[key], actual[key], f"{where}.{key}")
            pattern = PATTERNS.get(key)
            if pattern is not None and not pattern.match(str(actual[key])):
                problems.append(f"{where}.{key}: {actual[key]!r} does not match {pattern.pattern}")
    elif isinstance(golden_value, list) and isinstance(actual, list):
        if len(golden_value) != len(actual):
            problems.append(f"{where}: {len(actual)} items where the reference has {len(golden_value)}")
        for i, (g, a) in enumerate(zip(golden_value, actual, strict=False)):
            problems += shape_problems(g, a, f"{where}[{i}]")
            named = isinstance(g, dict) and isinstance(a, dict)
            for label in ("Name", "Key"):
                if named and label in g and g.get(label) != a.get(label):
                    problems.append(f"{where}[{i}].{label}: {a.get(label)!r} where the reference has {g[label]!r}")
            # Items and parameters are {Name|Key, Value}: their values are patterned by the item's name.
            pattern = PATTERNS.get(str(a.get("Name") or a.get("Key"))) if named else None
            if named and pattern is not None and "Value" in a and not pattern.match(str(a["Value"])):
                problems.append(f"{where}[{i}].Value: {a['Value']!r} does not match {pattern.pattern}")
    return problems
