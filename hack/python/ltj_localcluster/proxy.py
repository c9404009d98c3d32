"""A TCP proxy from the cluster bridge to the API server on loopback.

Pods live in their own network namespaces and cannot reach the host's 127.0.0.1, so the
`kubernetes` Service's environment variables point here (bridge IP) instead. TLS passes through
untouched; the API server's certificate carries the bridge IP as a SAN.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

log = logging.getLogger(__name__)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            if writer.can_write_eof():
                writer.write_eof()


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self, host: str, port: int = 0) -> int:
        self._server = await asyncio.start_server(self._handle, host, port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        try:
            try:
                up_r, up_w = await asyncio.open_connection(self.target_host, self.target_port)
            except OSError as exc:
                log.warning("api proxy: cannot reach %s:%s: %s", self.target_host, self.target_port, exc)
                client_w.close()
                return
            await asyncio.gather(_pipe(client_r, up_w), _pipe(up_r, client_w))
            for w in (up_w, client_w):
                w.close()
        finally:
            self._conns.discard(task)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._conns):
                task.cancel()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
