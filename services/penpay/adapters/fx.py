"""FX quotes: the static provider (``PENPAY_FX_PROVIDER=static``) implementing ``ports.FxQuotes``.

It quotes ``PENPAY_FX_STATIC_KES_PER_USD`` as the mid rate with ``PENPAY_FX_SPREAD_BPS`` and a lifetime of
``PENPAY_FX_QUOTE_TTL_S``; a live provider plugs in behind the same port.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from penpay.settings import Settings
from penpay_domain import ports
from penpay_domain.fx import LockedRate
from penpay_domain.ids import new_quote_id


class StaticFxQuotes:
    def __init__(self, *, mid: Decimal, spread_bps: int, ttl_s: int) -> None:
        if ttl_s <= 0:
            raise ValueError("a quote lives a positive number of seconds")
        self._mid = mid
        self._spread_bps = spread_bps
        self._ttl = timedelta(seconds=ttl_s)

    @classmethod
    def from_settings(cls, settings: Settings) -> StaticFxQuotes:
        if settings.fx_provider != "static":
            raise ValueError(f"unknown PENPAY_FX_PROVIDER {settings.fx_provider!r}: only 'static' is built in")
        return cls(mid=settings.fx_static_kes_per_usd, spread_bps=settings.fx_spread_bps, ttl_s=settings.fx_quote_ttl_s)

    async def quote(self, now: datetime) -> LockedRate:
        return LockedRate(
            quote_id=new_quote_id(now),
            mid=self._mid,
            spread_bps=self._spread_bps,
            issued_at=now,
            expires_at=now + self._ttl,
        )


_: type[ports.FxQuotes] = StaticFxQuotes
