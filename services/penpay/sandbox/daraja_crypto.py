"""The sandbox's stand-in for Safaricom's B2C certificate: an RSA key pair and a self-signed X.509 certificate.

Daraja's SecurityCredential is the initiator password encrypted (RSA, PKCS#1 v1.5) with the public key of a
certificate Safaricom publishes. The sandbox makes its own pair at start-up and serves the certificate (PEM) on the
control API, so a client encrypts with it exactly as it would with Safaricom's, and the simulator checks the result
by decrypting with the private key.

A client encrypts its password once and sends the same SecurityCredential with every B2C request (PenPay's does),
so each credential's plaintext is remembered (up to ``REMEMBERED`` of them): an RSA private-key operation per
request was a sixth of the sandbox's CPU in a withdrawal burst.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

REMEMBERED = 1024


class SandboxCertificate:
    def __init__(self, private_key: rsa.RSAPrivateKey | None = None) -> None:
        self._key = private_key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, "KE"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "PenPay Sandbox"),
                x509.NameAttribute(NameOID.COMMON_NAME, "sandbox.daraja.penpay.local"),
            ]
        )
        self._plain: dict[str, str | None] = {}  # SecurityCredential -> its plaintext (None: not one of ours)
        now = dt.datetime.now(dt.UTC)
        self._certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .sign(self._key, hashes.SHA256())
        )

    @property
    def pem(self) -> bytes:
        return self._certificate.public_bytes(serialization.Encoding.PEM)

    def decrypt_credential(self, security_credential: str) -> str | None:
        """The plaintext behind a SecurityCredential; None when it cannot be one (not base64, not a ciphertext of
        this key's size, not text). A ciphertext made with another certificate does not always fail: OpenSSL's
        implicit rejection (PKCS#1 v1.5, against the Marvin attack) decrypts it to an unpredictable plaintext, text
        now and then (~0.7 % here), which no password matches: callers compare, as Daraja does."""
        try:
            return self._plain[security_credential]
        except KeyError:
            pass
        plain = self._decrypt(security_credential)
        if len(self._plain) >= REMEMBERED:
            del self._plain[next(iter(self._plain))]
        self._plain[security_credential] = plain
        return plain

    def _decrypt(self, security_credential: str) -> str | None:
        try:
            blob = base64.b64decode(security_credential, validate=True)
            return self._key.decrypt(blob, padding.PKCS1v15()).decode("utf-8")
        except (ValueError, binascii.Error, UnicodeDecodeError):
            return None
