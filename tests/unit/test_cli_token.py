"""``penpay token``: one token, or one a line for many users (a load run's users), each valid for the API."""

from __future__ import annotations

import jwt
import pytest

from penpay import cli
from penpay.settings import Settings

pytestmark = pytest.mark.usefixtures("restore_logging")


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str], str]:
    with pytest.raises(SystemExit) as stopped:
        cli.main(["token", *args])
    out, err = capsys.readouterr()
    return int(stopped.value.code or 0), out.splitlines(), err


def _claims(settings: Settings, token: str) -> dict[str, object]:
    return jwt.decode(
        token,
        settings.jwt_secret.get_secret_value(),
        algorithms=[settings.jwt_algorithm],
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
    )


def test_count_mints_one_token_a_line_for_numbered_users(capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, _ = _run(capsys, "--sub", "load", "--count", "3", "--ttl", "600")
    assert code == 0
    settings = Settings()
    claims = [_claims(settings, line) for line in lines]
    assert [c["sub"] for c in claims] == ["load-1", "load-2", "load-3"]
    assert all(int(str(c["exp"])) - int(str(c["iat"])) == 600 for c in claims)


def test_one_token_keeps_the_subject_as_given(capsys: pytest.CaptureFixture[str]) -> None:
    code, [line], _ = _run(capsys, "--sub", "alice", "--role", "admin")
    assert code == 0
    claims = _claims(Settings(), line)
    assert (claims["sub"], claims["role"]) == ("alice", "admin")


@pytest.mark.parametrize("count", ["0", "-2", "100001"])
def test_a_count_out_of_range_is_refused_in_one_line(capsys: pytest.CaptureFixture[str], count: str) -> None:
    code, lines, err = _run(capsys, "--sub", "load", "--count", count)
    assert (code, lines) == (2, [])
    assert err == "penpay: --count must be between 1 and 100,000\n"
