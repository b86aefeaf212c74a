"""The sandbox's B2C certificate: a SecurityCredential made with it decrypts to its password, once per credential."""

from __future__ import annotations

import pytest

from penpay.adapters.daraja.credentials import security_credential
from penpay.sandbox import daraja_crypto
from penpay.sandbox.daraja_crypto import SandboxCertificate


@pytest.fixture(scope="module")
def certificate() -> SandboxCertificate:
    return SandboxCertificate()


def test_a_credential_decrypts_to_its_password_and_is_decrypted_once(
    certificate: SandboxCertificate, monkeypatch: pytest.MonkeyPatch
) -> None:
    credential = security_credential("Safaricom999!*!", certificate.pem)
    assert certificate.decrypt_credential(credential) == "Safaricom999!*!"

    def no_more_rsa(_: str) -> str | None:
        raise AssertionError("decrypted again")

    monkeypatch.setattr(certificate, "_decrypt", no_more_rsa)
    assert certificate.decrypt_credential(credential) == "Safaricom999!*!"


def test_what_is_not_one_of_its_credentials_is_refused_each_time(certificate: SandboxCertificate) -> None:
    other = security_credential("Safaricom999!*!", SandboxCertificate().pem)

    for _ in range(2):
        # another certificate's ciphertext: None, or (OpenSSL's implicit rejection) a plaintext that is not its
        # password; never the password
        assert certificate.decrypt_credential(other) != "Safaricom999!*!"
        assert certificate.decrypt_credential("not base64 at all!") is None


def test_it_remembers_a_bounded_number_of_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    certificate = SandboxCertificate()
    monkeypatch.setattr(daraja_crypto, "REMEMBERED", 3)
    credentials = [security_credential(f"password-{i}", certificate.pem) for i in range(5)]

    assert [certificate.decrypt_credential(c) for c in credentials] == [f"password-{i}" for i in range(5)]

    assert list(certificate._plain) == credentials[2:]  # the oldest forgotten first
    assert certificate.decrypt_credential(credentials[0]) == "password-0"  # and decrypted again when asked
