"""``penpay-sandbox``: the Daraja simulator, the Deriv simulator, the SMTP sink and the control HTTP app.

All four run in one asyncio loop; SIGINT or SIGTERM stops them together and the process exits 0. Ports come from
the settings (``PENPAY_SANDBOX_DARAJA_PORT``, ``PENPAY_SANDBOX_DERIV_PORT``, ``PENPAY_SMTP_PORT``,
``PENPAY_SANDBOX_HTTP_PORT``). With ``PENPAY_SANDBOX_STATE_DIR`` the simulated Deriv's books and Daraja's STK
sessions and B2C payouts are kept there across restarts (``journal``), and what Daraja had not delivered yet (a
callback, a result) is delivered after the restart; a journal it cannot replay makes it exit 1 with one line that
says where.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path
from urllib.parse import urlsplit

from penpay import eventloop
from penpay.gc_tuning import settle_heap
from penpay.logging import configure_logging, get_logger
from penpay.sandbox.control import AppServer, create_control_app
from penpay.sandbox.daraja import DarajaSimulator
from penpay.sandbox.daraja_control import create_daraja_control_router
from penpay.sandbox.deriv import DerivSimulator, create_deriv_control_router
from penpay.sandbox.deriv_journal import DerivJournal
from penpay.sandbox.journal import Journal, JournalError
from penpay.sandbox.smtp import MailSink
from penpay.settings import Settings

log = get_logger(__name__)

DARAJA_FILE = "daraja.jsonl"


def _host_of(url: str, default: str) -> str:
    return urlsplit(url).hostname or default


async def run(settings: Settings, stop: asyncio.Event) -> None:
    """Start every sandbox server, log where each listens, wait for ``stop``, then stop them all."""
    daraja = DarajaSimulator.from_settings(settings)
    deriv = DerivSimulator(agent_token=settings.deriv_agent_token.get_secret_value())
    journal = DerivJournal.in_dir(settings.sandbox_state_dir) if settings.sandbox_state_dir else None
    if journal is not None:
        journal.attach(deriv.books)
        log.info("sandbox_deriv_books", path=str(journal.path), replayed_changes=journal.replayed)
    daraja_journal = Journal(Path(settings.sandbox_state_dir) / DARAJA_FILE) if settings.sandbox_state_dir else None
    if daraja_journal is not None:
        daraja_journal.open(daraja.replay)
        daraja.recorder = daraja_journal.append
    mail = MailSink()
    daraja_server = AppServer(daraja.app, name="daraja")
    control_server = AppServer(
        create_control_app(
            mail=mail, daraja=create_daraja_control_router(daraja), deriv=create_deriv_control_router(deriv)
        ),
        name="control",
    )
    daraja_host = _host_of(settings.daraja_base_url, "127.0.0.1")
    deriv_host = _host_of(settings.deriv_ws_url, "127.0.0.1")
    started: list[str] = []
    try:
        await daraja_server.start(daraja_host, settings.sandbox_daraja_port)
        started.append("daraja")
        log.info("sandbox_listening", service="daraja", url=daraja_server.url)
        if daraja_journal is not None:
            owed = daraja.resume()
            log.info("sandbox_daraja_state", path=str(daraja_journal.path), replayed=daraja_journal.replayed, owed=owed)
        await deriv.start(deriv_host, settings.sandbox_deriv_port)
        started.append("deriv")
        log.info("sandbox_listening", service="deriv", url=deriv.url)
        await mail.start(settings.smtp_host, settings.smtp_port)
        started.append("smtp")
        log.info("sandbox_listening", service="smtp", url=f"smtp://{settings.smtp_host}:{mail.port}")
        await control_server.start(daraja_host, settings.sandbox_http_port)
        started.append("control")
        log.info("sandbox_listening", service="control", url=control_server.url)
        await stop.wait()
    finally:
        log.info("sandbox_stopping", running=started)
        if "control" in started:
            await control_server.stop()
        await mail.stop()
        await deriv.stop()
        if journal is not None:
            journal.close()
        await daraja.aclose()
        if daraja_journal is not None:
            daraja_journal.close()
        if "daraja" in started:
            await daraja_server.stop()
        log.info("sandbox_stopped")


# third-party loggers that write a line for every connection at INFO: websockets ("connection open" and "connection
# closed" for each Deriv session: one per withdrawal, whose client authorizes with its own token) and aiosmtpd
# (its AUTH mechanisms, for each message); a tenth of the sandbox's CPU in a withdrawal burst, and lines with no
# simulated request in them (the sandbox logs what it simulates itself: each mail received, say)
CONNECTION_LOGGERS = ("websockets.server", "mail.log")


def quiet_connection_logs(level: str) -> None:
    """Those loggers at WARNING, unless the sandbox logs at DEBUG."""
    if logging.getLevelName(level.upper()) != logging.DEBUG:
        for name in CONNECTION_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)


async def _main() -> None:
    settings = Settings()
    configure_logging("sandbox", settings.log_level)
    quiet_connection_logs(settings.log_level)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await run(settings, stop)


def main() -> None:
    settle_heap()
    try:
        eventloop.run(_main())
    except JournalError as exc:
        sys.stderr.write(f"penpay-sandbox: cannot read its saved state: {exc}\n")
        sys.exit(1)


if __name__ == "__main__":
    main()
