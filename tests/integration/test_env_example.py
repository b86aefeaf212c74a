"""``.env.example`` (which ``make run`` copies to ``.env``) reads the same to every consumer: pydantic-settings'
dotenv parser (how the processes read ``.env``), honcho's (``make run``), and a POSIX shell (``set -a; . ./.env``,
how an operator loads it into a shell or a systemd ``EnvironmentFile``-style wrapper)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from dotenv import dotenv_values
from honcho.environ import parse as honcho_parse

EXAMPLE = Path(__file__).resolve().parents[2] / ".env.example"


def _from_shell() -> dict[str, str]:
    script = 'set -a; . "$1"; env -0'
    done = subprocess.run(
        ["bash", "-c", script, "bash", str(EXAMPLE)],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        check=False,
        timeout=30,
    )
    assert done.returncode == 0 and not done.stderr, done.stderr.decode()
    pairs = (item.split(b"=", 1) for item in done.stdout.split(b"\0") if b"=" in item)
    return {k.decode(): v.decode() for k, v in pairs if k.startswith(b"PENPAY_")}


def test_the_shell_honcho_and_the_settings_read_the_same_values() -> None:
    dotenv = {k: v or "" for k, v in dotenv_values(EXAMPLE).items()}
    assert dotenv, "no variables read"
    assert _from_shell() == dotenv
    # honcho leaves out the empty ones (the processes then read them from .env themselves, empty)
    from_honcho = {k: v for k, v in honcho_parse(EXAMPLE.read_text()).items() if k.startswith("PENPAY_")}
    assert from_honcho == {k: v for k, v in dotenv.items() if v}


def test_values_with_shell_characters_keep_them() -> None:
    values = dotenv_values(EXAMPLE)
    assert values["PENPAY_MAIL_FROM"] == "PenPay <no-reply@penpay.local>"
    assert values["PENPAY_DARAJA_INITIATOR_PASSWORD"] == "Safaricom999!*!"
