"""The sandbox's inspection/control HTTP app, and the small uvicorn wrapper that serves each sandbox HTTP app.

Routes: ``/healthz``; ``/mail`` (the SMTP sink: ``GET`` newest last, ``?to=`` filter; ``DELETE`` empties it);
``/daraja/...`` (the simulator's certificate, journal and token control); ``/deriv/...`` (the Deriv simulator's
router).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Generator

import uvicorn
from fastapi import APIRouter, FastAPI
from starlette.types import ASGIApp

from penpay.http_protocol import CoalescingHttpProtocol
from penpay.sandbox.smtp import MailSink


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signals to the sandbox's main, which stops every server together."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class AppServer:
    """Serves one ASGI app with uvicorn in the running loop; port 0 picks a free port."""

    def __init__(self, app: ASGIApp, *, name: str) -> None:
        self._app = app
        self.name = name
        self.host = "127.0.0.1"
        self.port = 0
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        self.host, self.port = host, sock.getsockname()[1]
        # keep idle connections longer than clients do (httpx: 5 s, PenPay's Daraja client: less), as an edge proxy
        # does: with equal timeouts a client may send on a connection the server is closing, and cannot know
        # whether a money-moving request was handled
        # no proxy-header middleware: nothing here reads a client's address, and it wrapped every request
        config = uvicorn.Config(
            self._app,
            log_config=None,
            access_log=False,
            lifespan="off",
            proxy_headers=False,
            timeout_keep_alive=75,
            http=CoalescingHttpProtocol,  # each answer in one socket write
        )
        self._server = _Server(config)
        self._task = asyncio.get_running_loop().create_task(self._server.serve(sockets=[sock]))
        async with asyncio.timeout(10):
            while not self._server.started:
                if self._task.done():
                    self._task.result()  # re-raises why it could not start
                    raise RuntimeError(f"{self.name} stopped while starting")
                await asyncio.sleep(0.01)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        await self._task
        self._server, self._task = None, None


def create_control_app(*, mail: MailSink, daraja: APIRouter, deriv: APIRouter | None = None) -> FastAPI:
    app = FastAPI(title="PenPay sandbox: control", docs_url="/docs", redoc_url=None)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/mail")
    async def list_mail(to: str | None = None) -> list[dict[str, object]]:
        return [message.as_json() for message in mail.messages(to)]

    @app.delete("/mail", status_code=204)
    async def clear_mail() -> None:
        mail.clear()

    app.include_router(daraja, prefix="/daraja")
    if deriv is not None:
        app.include_router(deriv, prefix="/deriv")
    return app
