"""Composing a notification: the sender and subject are parsed once, and the message is what the ``email`` package
writes from the plain strings (ASCII or not)."""

from __future__ import annotations

import re
from email.message import EmailMessage
from types import SimpleNamespace

import pytest

from penpay.adapters import mailer
from penpay.adapters.mailer import SmtpMailer, repeated_header


def _plain(mail_from: str, to: str, subject: str, body: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = mail_from
    message["To"] = to
    message["Subject"] = subject
    message.set_content(body)
    return message


def _without_date_and_id(data: bytes) -> bytes:
    return re.sub(rb"(?m)^(Date|Message-ID): .*\r?\n", b"", data)


@pytest.mark.parametrize(
    ("mail_from", "subject", "body"),
    [
        ("PenPay <no-reply@penpay.local>", "Your withdrawal has been sent to M-Pesa", "USD 10.00 sent.\n"),
        ("Pësä Päy <no-reply@penpay.local>", "Ümlaut: your deposit 🎉", "Wanjikũ, KES 1,000 arrived.\n"),
    ],
)
def test_a_message_is_what_the_email_package_writes_from_the_plain_strings(
    mail_from: str, subject: str, body: str
) -> None:
    sender = SmtpMailer(host="x", port=25, mail_from=mail_from)
    composed = sender.compose(to="u@example.test", subject=subject, body=body)

    assert _without_date_and_id(composed.as_bytes()) == _without_date_and_id(
        _plain(mail_from, "u@example.test", subject, body).as_bytes()
    )
    assert composed["Date"] and composed["Message-ID"]


def test_the_sender_and_a_subject_are_parsed_once_for_every_message(monkeypatch: pytest.MonkeyPatch) -> None:
    repeated_header.cache_clear()
    parsed: list[tuple[str, str]] = []
    factory = mailer.policy.default.header_factory

    def counting(name: str, value: str) -> object:
        parsed.append((name, value))
        return factory(name, value)

    monkeypatch.setattr(mailer, "policy", SimpleNamespace(default=SimpleNamespace(header_factory=counting)))
    sender = SmtpMailer(host="x", port=25, mail_from="PenPay <no-reply@penpay.local>")
    for n in range(3):
        sender.compose(to=f"u{n}@example.test", subject="Your deposit has arrived on Deriv", body="x\n")

    assert parsed == [("From", "PenPay <no-reply@penpay.local>"), ("Subject", "Your deposit has arrived on Deriv")]
    repeated_header.cache_clear()
