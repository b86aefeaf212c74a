"""Daraja's credential formulas (reference/daraja.md §1, §2, §5).

- OAuth: ``Authorization: Basic base64(consumer_key:consumer_secret)``.
- STK Password: ``base64(BusinessShortCode + Passkey + Timestamp)`` with the Timestamp ``YYYYMMDDHHmmss`` in EAT.
- B2C / Transaction Status SecurityCredential: ``base64(RSA-PKCS#1 v1.5(certificate public key, initiator
  password))``: no OAEP, no timestamp. Padding is random, so any encryption is valid and one is computed once.
"""

from __future__ import annotations

import base64
import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import padding, rsa

EAT = dt.timezone(dt.timedelta(hours=3), "EAT")


def basic_auth(consumer_key: str, consumer_secret: str) -> str:
    return "Basic " + base64.b64encode(f"{consumer_key}:{consumer_secret}".encode()).decode("ascii")


def eat_timestamp(now: dt.datetime) -> str:
    """``YYYYMMDDHHmmss`` in Kenyan time; ``now`` must be timezone-aware."""
    if now.tzinfo is None:
        raise ValueError("a Daraja timestamp needs an aware datetime")
    return now.astimezone(EAT).strftime("%Y%m%d%H%M%S")


def stk_password(shortcode: str, passkey: str, timestamp: str) -> str:
    return base64.b64encode(f"{shortcode}{passkey}{timestamp}".encode()).decode("ascii")


def load_certificate(data: bytes) -> x509.Certificate:
    """Safaricom's ``.cer`` files come as PEM or DER; accept either."""
    if b"-----BEGIN CERTIFICATE-----" in data:
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


def security_credential(initiator_password: str, certificate: bytes) -> str:
    public_key = load_certificate(certificate).public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise ValueError("Daraja's certificate must carry an RSA public key")
    blob = public_key.encrypt(initiator_password.encode("utf-8"), padding.PKCS1v15())
    return base64.b64encode(blob).decode("ascii")
