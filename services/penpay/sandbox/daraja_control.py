"""Inspection and control of the Daraja simulator, mounted by the sandbox's control app at ``/daraja``.

``GET /certificate`` (PEM, for the B2C SecurityCredential), ``GET /journal`` (``?kind=request|callback``,
``?path=``), ``DELETE /journal``, ``POST /tokens/expire`` (the current access token stops working, as on expiry),
``POST /faults?response_delay_ms=N`` (answers come N ms late, to exercise clients' read timeouts).
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from penpay.sandbox.daraja import DarajaSimulator


def create_daraja_control_router(sim: DarajaSimulator) -> APIRouter:
    """Inspection and control of the Daraja simulator; mounted by the sandbox at prefix ``/daraja``."""
    router = APIRouter()

    @router.get("/certificate")
    async def certificate() -> Response:
        return Response(sim.certificate.pem, media_type="application/x-pem-file")

    @router.get("/journal")
    async def journal(kind: str | None = None, path: str | None = None) -> list[dict[str, object]]:
        return sim.journal(kind=kind, path=path)

    @router.delete("/journal", status_code=204)
    async def clear_journal() -> None:
        sim.clear_journal()

    @router.post("/faults", status_code=204)
    async def set_faults(response_delay_ms: int = 0) -> None:
        sim.response_delay_s = max(response_delay_ms, 0) / 1000

    @router.post("/tokens/expire", status_code=204)
    async def expire_tokens() -> None:
        sim.expire_tokens()

    return router
