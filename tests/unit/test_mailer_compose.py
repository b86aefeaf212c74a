"""Composing a notification: the message is what the ``email`` package's ``EmailMessage`` writes from the plain
strings, byte for byte on the wire (ASCII or not, whichever way ``compose`` builds it), and the sender and subject
are parsed once."""

from __future__ import annotations

import re
import string
from email.message import EmailMessage, Message
from types import SimpleNamespace

import pytest
from aiosmtplib.email import flatten_message
from aiosmtplib.protocol import normalize_message_line_endings
from hypothesis import given
from hypothesis import strategies as st

from penpay.adapters import mailer
from penpay.adapters.mailer import SmtpMailer, repeated_header

NOTIFICATION = (
    "Transaction: 01JEXAMPLE0000000000000000\nStatus: COMPLETED\nM-Pesa: KES 1000 (2547****678)\n"
    "Deriv: USD 7.70 (CR1234567)\nRate: 129.87 KES per USD; fee KES 0\nM-Pesa receipt: SAB1C2D3E4\n"
)


def _reference(mail_from: str, to: str, subject: str, body: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = mail_from
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = "Mon, 07 Dec 2026 20:00:00 +0000"
    message["Message-ID"] = "<1.2.3@penpay.local>"
    message.set_content(body)
    return message


def _wire(message: Message) -> bytes:
    """What aiosmtplib sends after DATA (before dot-stuffing), the Date and Message-ID values masked."""
    data = normalize_message_line_endings(flatten_message(message))
    return re.sub(rb"(?m)^(Date|Message-ID): .*\r\n", rb"\1: -\r\n", data)


def _same_on_the_wire(mail_from: str, to: str, subject: str, body: str) -> Message:
    composed = SmtpMailer(host="x", port=25, mail_from=mail_from).compose(to=to, subject=subject, body=body)
    assert _wire(composed) == _wire(_reference(mail_from, to, subject, body))
    assert composed["Date"] and composed["Message-ID"]
    return composed


def test_a_plain_ascii_notification_is_built_the_quick_way_and_reads_the_same() -> None:
    subject = "Your withdrawal has been sent to M-Pesa"
    composed = _same_on_the_wire("PenPay <no-reply@penpay.local>", "wanjiku@example.co.ke", subject, NOTIFICATION)
    assert not isinstance(composed, EmailMessage)


@pytest.mark.parametrize(
    ("mail_from", "to", "subject", "body"),
    [
        ("Pësä Päy <no-reply@penpay.local>", "u@example.test", "Ümlaut: your deposit 🎉", "Wanjikũ, KES 1,000.\n"),
        ("PenPay <no-reply@penpay.local>", "u@example.test", "Your deposit did not go through", "Reason: Ümlaut\n"),
        ("PenPay <no-reply@penpay.local>", "u@example.test", "Subject " + "long " * 16, "x\n"),
        ("PenPay <no-reply@penpay.local>", "u@example.test", "Your deposit", "Detail: " + "long " * 20 + "\n"),
        ("PenPay <no-reply@penpay.local>", "u@example.test", "Your deposit", "From here on\nthe rest\n"),
        ("PenPay <no-reply@penpay.local>", "Wanjiku <u@example.test>", "Your deposit", "x\n"),
        ("PenPay  (ops)  <no-reply@penpay.local>", "u@example.test", "Your deposit", "x\n"),
        ("PenPay <no-reply@penpay.local>", "u" * 80 + "@example.test", "Your deposit", "x\n"),
    ],
    ids=[
        "non-ascii",
        "non-ascii-body",
        "long-subject",
        "long-line",
        "from-line",
        "display-name",
        "odd-from",
        "long-to",
    ],
)
def test_anything_else_is_built_by_email_message(mail_from: str, to: str, subject: str, body: str) -> None:
    assert isinstance(_same_on_the_wire(mail_from, to, subject, body), EmailMessage)


@pytest.mark.parametrize(
    ("to", "subject"),
    [
        ("u@example.test", "Your deposit\r\nBcc: someone@example.test"),
        ("u@example.test", "Your deposit\nX: y"),
        ("u@example.test\r\nBcc: someone@example.test", "Your deposit"),
    ],
)
def test_a_recipient_or_subject_with_a_line_break_is_refused(to: str, subject: str) -> None:
    sender = SmtpMailer(host="x", port=25, mail_from="PenPay <no-reply@penpay.local>")
    with pytest.raises(ValueError, match="line break would inject headers"):
        sender.compose(to=to, subject=subject, body="x\n")


@pytest.mark.parametrize("body", ["", "\n", "no newline at the end", "a\r\nb\rc\n\n", ".\n..\n"])
def test_bodies_are_split_and_ended_as_set_content_does(body: str) -> None:
    _same_on_the_wire("PenPay <no-reply@penpay.local>", "u@example.test", "Your deposit", body)


_ASCII_TEXT = st.text(alphabet=string.printable, max_size=300)
_ADDRESS = st.from_regex(r"[a-z0-9._+-]{1,30}@[a-z0-9-]{1,20}\.[a-z]{2,6}", fullmatch=True)
_SUBJECT = st.text(alphabet=string.ascii_letters + string.digits + " :,.-", max_size=90)


@given(to=_ADDRESS, subject=_SUBJECT, body=_ASCII_TEXT)
def test_generated_notifications_read_the_same_on_the_wire(to: str, subject: str, body: str) -> None:
    _same_on_the_wire("PenPay <no-reply@penpay.local>", to, subject, body)


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
