"""A small asyncio client for the Kubernetes API (aiohttp), with retries and list+watch informers.

Only what the node agent needs: JSON requests, patches, watches that resume from a
resourceVersion and relist after 410 Gone, and backoff while the API server is unreachable.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import random
import ssl
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

log = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"


class ApiError(Exception):
    def __init__(self, status: int, body: Any, method: str = "", path: str = "") -> None:
        self.status = status
        self.body = body
        self.reason = body.get("reason", "") if isinstance(body, dict) else ""
        message = body.get("message", "") if isinstance(body, dict) else str(body)[:500]
        self.message = message
        super().__init__(f"{method} {path}: HTTP {status} {self.reason}: {message}")


class WatchExpired(Exception):
    """The watch's resourceVersion is too old (410 Gone): relist."""


@dataclass(frozen=True)
class KubeConfig:
    server: str
    ca_file: str | None
    ca_data: bytes | None
    cert_file: str | None
    key_file: str | None
    cert_data: bytes | None
    key_data: bytes | None
    token: str | None
    insecure: bool


def _b64(value: str | None) -> bytes | None:
    return base64.b64decode(value) if value else None


def load_kubeconfig(path: str | os.PathLike[str], context: str | None = None) -> KubeConfig:
    raw = yaml.safe_load(Path(path).read_text())
    base = Path(path).resolve().parent
    ctx_name = context or raw.get("current-context")
    contexts = {c["name"]: c["context"] for c in raw.get("contexts") or []}
    if ctx_name not in contexts:
        raise ValueError(f"kubeconfig {path}: context {ctx_name!r} not found")
    ctx = contexts[ctx_name]
    clusters = {c["name"]: c["cluster"] for c in raw.get("clusters") or []}
    users = {u["name"]: u.get("user") or {} for u in raw.get("users") or []}
    cluster = clusters.get(ctx.get("cluster"))
    if cluster is None:
        raise ValueError(f"kubeconfig {path}: cluster {ctx.get('cluster')!r} not found")
    user = users.get(ctx.get("user"), {})

    def rel(p: str | None) -> str | None:
        return str((base / p).resolve()) if p else None

    token = user.get("token")
    if not token and user.get("tokenFile"):
        token = Path(rel(user["tokenFile"]) or "").read_text().strip()
    return KubeConfig(
        server=cluster["server"].rstrip("/"),
        ca_file=rel(cluster.get("certificate-authority")),
        ca_data=_b64(cluster.get("certificate-authority-data")),
        cert_file=rel(user.get("client-certificate")),
        key_file=rel(user.get("client-key")),
        cert_data=_b64(user.get("client-certificate-data")),
        key_data=_b64(user.get("client-key-data")),
        token=token,
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
    )


def ssl_context_for(cfg: KubeConfig) -> ssl.SSLContext:
    if cfg.insecure:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx = ssl.create_default_context(
            cafile=cfg.ca_file, cadata=cfg.ca_data.decode() if cfg.ca_data else None
        )
    if cfg.cert_file and cfg.key_file:
        ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
    elif cfg.cert_data and cfg.key_data:
        # ssl only loads certificate chains from files: use private temporary ones.
        with tempfile.TemporaryDirectory() as tmp:
            cert, key = Path(tmp, "c.pem"), Path(tmp, "k.pem")
            cert.write_bytes(cfg.cert_data)
            key.touch(mode=0o600)
            key.write_bytes(cfg.key_data)
            ctx.load_cert_chain(str(cert), str(key))
    return ctx


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, ApiError):
        return exc.status in (429, 500, 502, 503, 504)
    return isinstance(exc, (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError, OSError))


class KubeApi:
    def __init__(self, cfg: KubeConfig, *, retry_for: float = 60.0) -> None:
        self.cfg = cfg
        self.server = cfg.server
        self._ssl = ssl_context_for(cfg)
        self._headers = {"Accept": "application/json"}
        if cfg.token:
            self._headers["Authorization"] = f"Bearer {cfg.token}"
        self._session: aiohttp.ClientSession | None = None
        self.retry_for = retry_for

    @classmethod
    def from_kubeconfig(cls, path: str | os.PathLike[str], **kw: Any) -> "KubeApi":
        return cls(load_kubeconfig(path), **kw)

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=32),
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _once(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None,
        body: Any,
        content_type: str,
        timeout: float,
    ) -> Any:
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type} if data is not None else {}
        async with self.session.request(
            method,
            self.server + path,
            params={k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in (params or {}).items()},
            data=data,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            text = await resp.text()
            try:
                payload = json.loads(text) if text else {}
            except ValueError:
                payload = text
            if resp.status >= 400:
                raise ApiError(resp.status, payload, method, path)
            return payload

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float = 30.0,
        retry: bool = True,
    ) -> Any:
        """One API call; transient failures (connection, 5xx, 429) retried with backoff."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        delay = 0.2
        while True:
            try:
                return await self._once(method, path, params, body, content_type, timeout)
            except Exception as exc:  # noqa: BLE001 - classified below
                # retry_for is read on every attempt, so lowering it (shutdown) ends retries early.
                if not retry or not _transient(exc) or loop.time() + delay - started > self.retry_for:
                    raise
                log.debug("%s %s failed (%s), retrying in %.1fs", method, path, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def get(self, path: str, **params: Any) -> Any:
        return await self.request("GET", path, params=params)

    async def get_or_none(self, path: str) -> Any:
        try:
            return await self.request("GET", path)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def create(self, path: str, body: Any) -> Any:
        return await self.request("POST", path, body=body)

    async def patch(self, path: str, body: Any, patch_type: str = MERGE_PATCH) -> Any:
        return await self.request("PATCH", path, body=body, content_type=patch_type)

    async def put(self, path: str, body: Any) -> Any:
        return await self.request("PUT", path, body=body)

    async def delete(self, path: str, body: Any = None, **params: Any) -> Any:
        return await self.request("DELETE", path, body=body, params=params)

    async def watch(self, path: str, params: Mapping[str, Any]) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Raw watch events until the server closes the stream. 410 -> WatchExpired."""
        query = {**params, "watch": "true", "allowWatchBookmarks": "true"}
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=float(params.get("timeoutSeconds", 300)) + 30)
        async with self.session.get(
            self.server + path, params={k: str(v) for k, v in query.items()}, timeout=timeout
        ) as resp:
            if resp.status == 410:
                raise WatchExpired(path)
            if resp.status >= 400:
                text = await resp.text()
                try:
                    body: Any = json.loads(text)
                except ValueError:
                    body = text
                raise ApiError(resp.status, body, "WATCH", path)
            buf = b""
            async for chunk in resp.content.iter_any():
                buf += chunk
                while True:
                    nl = buf.find(b"\n")
                    if nl == -1:
                        break
                    line, buf = buf[:nl], buf[nl + 1 :]
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    etype = event.get("type", "")
                    obj = event.get("object") or {}
                    if etype == "ERROR":
                        if obj.get("code") == 410:
                            raise WatchExpired(path)
                        raise ApiError(int(obj.get("code") or 500), obj, "WATCH", path)
                    yield etype, obj


def obj_key(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata", {})
    ns = meta.get("namespace")
    return f"{ns}/{meta.get('name')}" if ns else str(meta.get("name"))


Handler = Callable[[str, dict[str, Any]], Awaitable[None]]


class Informer:
    """List, then watch from the list's resourceVersion; relist on 410 or errors.

    The handler gets ("UPSERT", obj) for additions/changes and ("DELETE", obj) for removals,
    including objects found missing after a relist. `cache` mirrors the server.
    """

    def __init__(self, api: KubeApi, path: str, handler: Handler, params: Mapping[str, Any] | None = None, name: str = "") -> None:
        self.api = api
        self.path = path
        self.params = dict(params or {})
        self.handler = handler
        self.name = name or path
        self.cache: dict[str, dict[str, Any]] = {}
        self.synced = asyncio.Event()

    async def _relist(self) -> str:
        listing = await self.api.request("GET", self.path, params=self.params, timeout=60)
        items = listing.get("items") or []
        kind = listing.get("kind", "")
        fresh: dict[str, dict[str, Any]] = {}
        for item in items:
            if kind.endswith("List") and "kind" not in item:
                item["kind"] = kind[: -len("List")]
            fresh[obj_key(item)] = item
        gone = [self.cache[k] for k in self.cache if k not in fresh]
        self.cache = fresh
        for obj in gone:
            await self._dispatch("DELETE", obj)
        for obj in fresh.values():
            await self._dispatch("UPSERT", obj)
        return listing.get("metadata", {}).get("resourceVersion", "")

    async def _dispatch(self, kind: str, obj: dict[str, Any]) -> None:
        try:
            await self.handler(kind, obj)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - one bad object must not stop the informer
            log.exception("%s: handler failed for %s %s", self.name, kind, obj_key(obj))

    async def run(self) -> None:
        delay = 0.5
        rv = ""
        while True:
            try:
                if not rv:
                    rv = await self._relist()
                    self.synced.set()
                params = {**self.params, "resourceVersion": rv, "timeoutSeconds": random.randint(240, 360)}
                async for etype, obj in self.api.watch(self.path, params):
                    new_rv = obj.get("metadata", {}).get("resourceVersion")
                    if new_rv:
                        rv = new_rv
                    if etype == "BOOKMARK":
                        continue
                    key = obj_key(obj)
                    if etype in ("ADDED", "MODIFIED"):
                        self.cache[key] = obj
                        await self._dispatch("UPSERT", obj)
                    elif etype == "DELETED":
                        self.cache.pop(key, None)
                        await self._dispatch("DELETE", obj)
                delay = 0.5
            except asyncio.CancelledError:
                raise
            except WatchExpired:
                log.debug("%s: watch expired, relisting", self.name)
                rv = ""
            except Exception as exc:  # noqa: BLE001 - keep watching through outages
                log.warning("%s: watch failed (%s); retrying in %.1fs", self.name, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                rv = ""
