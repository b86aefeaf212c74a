"""The proxy the gateway's Deriv sockets take: what websockets would take from the environment, looked up once."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from penpay.gateway.connection import proxy_for

DERIV = "wss://ws.derivws.com/websockets/v3?app_id=1089&l=EN"
SANDBOX = "ws://127.0.0.1:8093/websockets/v3?app_id=1&l=EN"


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "socks_proxy", "ws_proxy", "wss_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    proxy_for.cache_clear()
    yield
    proxy_for.cache_clear()


def test_no_proxy_configured_means_a_direct_connection() -> None:
    assert proxy_for(DERIV) is None


def test_the_environments_proxy_is_taken_and_no_proxy_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("https_proxy", "http://proxy.internal:3128")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")

    assert proxy_for(DERIV) == "http://proxy.internal:3128"
    assert proxy_for(SANDBOX) is None


def test_it_is_looked_up_once_per_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("https_proxy", "http://proxy.internal:3128")
    assert proxy_for(DERIV) == "http://proxy.internal:3128"
    monkeypatch.delenv("https_proxy")

    assert proxy_for(DERIV) == "http://proxy.internal:3128"  # a running process's environment does not change
    assert proxy_for.cache_info().hits == 1
