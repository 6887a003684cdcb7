"""The load generator's own HTTP/1.1 client: keep-alive connections over asyncio streams.

The bench shares the machine with the system it measures, so its CPU is taken from the
system's budget: aiohttp's client cost about 0.4 ms per request here, this one a fraction of
that. It speaks just what the api answers: ``Content-Length`` bodies, keep-alive.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

import orjson


class HttpError(RuntimeError):
    """The api answered with an error status, or something this client does not speak."""


class Connection:
    """One keep-alive connection; one request at a time."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise HttpError(f"the bench speaks plain http://host:port, not {url!r}")
        self.host, self.port = parts.hostname, parts.port or 80
        self.prefix = parts.path.rstrip("/")
        extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        self._head = f"Host: {parts.netloc}\r\nContent-Type: application/json\r\n{extra}"
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def post(self, path: str, body: Any) -> Any:
        """POST ``body`` as JSON; the decoded JSON reply, or HttpError for a status ≥ 300."""
        payload = orjson.dumps(body)
        request = (
            f"POST {self.prefix}{path} HTTP/1.1\r\n{self._head}"
            f"Content-Length: {len(payload)}\r\n\r\n"
        ).encode() + payload
        if self._streams is None:
            self._streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self._streams
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lowered = head.lower()
        start = lowered.find(b"\r\ncontent-length:")
        if start < 0:
            self.close()
            raise HttpError(f"POST {path} answered {status} without a Content-Length")
        end = lowered.index(b"\r\n", start + 2)
        reply = await reader.readexactly(int(lowered[start + 17 : end]))
        if b"\r\nconnection: close" in lowered:
            self.close()
        if status >= 300:
            raise HttpError(
                f"POST {path} answered {status}: {reply[:300].decode(errors='replace')}"
            )
        return orjson.loads(reply)

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None
