"""Outgoing HTTP between the apps (token exchange, back-channel logout).

`*.localhost` names are loopback by RFC 6761 and browsers resolve them so, but glibc does not:
this transport sends requests for `<anything>.localhost` to 127.0.0.1 and keeps the original
Host header, so development and test setups on `blog.localhost:8001` etc. work as they do in
a browser. Every other host is resolved normally.
"""

from __future__ import annotations

import httpx

LOOPBACK = "127.0.0.1"


class LocalhostTransport(httpx.AsyncHTTPTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if host == "localhost" or host.endswith(".localhost"):
            request.headers["Host"] = request.url.netloc.decode("ascii")
            request.url = request.url.copy_with(host=LOOPBACK)
        return await super().handle_async_request(request)


def create_http_client(
    transport: httpx.AsyncBaseTransport | None = None, timeout: float = 5.0
) -> httpx.AsyncClient:
    """A client for calls between the apps: no redirects followed, a firm timeout."""
    return httpx.AsyncClient(
        transport=transport or LocalhostTransport(),
        timeout=timeout,
        follow_redirects=False,
    )
