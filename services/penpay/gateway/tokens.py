"""Token manager: the agent's token from settings, users' Deriv tokens encrypted at rest (Fernet).

The API stores only the ciphertext that ``LinkAccount`` returns; the gateway alone holds the key and decrypts a
user's token just long enough to authorise a short-lived socket. Tokens are never logged.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken


class TokenDecryptionError(ValueError):
    """The blob was not produced with this gateway's key (or was tampered with)."""


class TokenVault:
    def __init__(self, key: str) -> None:
        self._fernet = Fernet(key.encode())

    def encrypt(self, token: str) -> bytes:
        return self._fernet.encrypt(token.encode())

    def decrypt(self, blob: bytes) -> str:
        try:
            return self._fernet.decrypt(blob).decode()
        except (InvalidToken, ValueError) as exc:
            raise TokenDecryptionError("the encrypted Deriv token cannot be decrypted") from exc
