"""``penpay-api``: serve the API with uvicorn on ``PENPAY_API_HOST``:``PENPAY_API_PORT``.

uvicorn's own proxy-header handling is off: the API decides itself which ``X-Forwarded-For`` to believe
(``PENPAY_TRUSTED_PROXIES``), and an address rewritten earlier would defeat the admin and callback allowlists.
"""

from __future__ import annotations

import uvicorn

from penpay.api.app import create_app
from penpay.gc_tuning import settle_heap
from penpay.http_protocol import CoalescingHttpProtocol
from penpay.logging import configure_logging
from penpay.settings import Settings

KEEP_ALIVE_S = 75


def main() -> None:
    settings = Settings()
    configure_logging("api", settings.log_level)
    app = create_app(settings)
    settle_heap()
    uvicorn.run(
        app,
        host=settings.api_host,
        port=settings.api_port,
        proxy_headers=False,
        server_header=False,
        http=CoalescingHttpProtocol,  # each answer in one socket write
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
        # longer than any client's idle keep-alive (httpx: 5 s) and a load balancer's idle timeout (typically 60 s),
        # so the server never closes a connection just as a client sends a request on it (the client would get a
        # read error and could not tell whether the request was handled: a lost Daraja callback)
        timeout_keep_alive=KEEP_ALIVE_S,
    )


if __name__ == "__main__":
    main()
