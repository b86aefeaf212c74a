"""How PenPay's own processes run their event loop: uvloop when it is installed (it comes with ``uvicorn[standard]``,
which the API already runs on), else asyncio's default loop.

uvloop's C loop and socket transports cost a fraction of asyncio's per wake-up and per write; the workers do a
database or Redis round trip for nearly everything, so this is most of their non-SQL overhead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop  # noqa: PLC0415 - optional accelerator
    except ImportError:  # pragma: no cover - uvicorn[standard] installs it
        return asyncio.run(main)
    return uvloop.run(main)
