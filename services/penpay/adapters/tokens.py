"""Fernet encryption of small secrets kept at rest with ``PENPAY_TOKEN_ENCRYPTION_KEY``.

Users' Deriv tokens need nothing from here: the gateway's ``LinkAccount`` already answers with the Fernet ciphertext
that the API stores and hands back to ``Withdraw``. What the API encrypts itself is the withdrawal verification code
that waits for the worker (single use, short-lived, but a secret all the same).
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken

from penpay.settings import Settings


class SecretBox:
    def __init__(self, key: str) -> None:
        self._fernet = Fernet(key.encode("ascii"))

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox:
        return cls(settings.token_encryption_key.get_secret_value())

    def seal(self, plaintext: str) -> bytes:
        return self._fernet.encrypt(plaintext.encode("utf-8"))

    def open(self, ciphertext: bytes) -> str:
        try:
            return self._fernet.decrypt(ciphertext).decode("utf-8")
        except InvalidToken as exc:
            raise ValueError("the ciphertext does not decrypt with the configured key") from exc
