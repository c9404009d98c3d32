"""A minimal Kubernetes API client for the relay: GET and PATCH of one job's status subresource.

Stdlib only (http.client + ssl) so the sidecar stays small and starts fast. The bearer token is
read from its file on every request because the kubelet rotates projected tokens; the CA is
re-read whenever a new connection is made.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import ssl
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ltj_api import GROUP, PLURAL, VERSION

from ..apierror import ApiError

log = logging.getLogger(__name__)

USER_AGENT = "ltj-relay/0.1"


class Unavailable(Exception):
    """The API server could not be reached or did not answer in time."""


@dataclass(frozen=True)
class Endpoint:
    server: str  # https://host:port
    token_file: Path
    ca_file: Path | None  # None: the system trust store
    timeout: float = 5.0


class JobStatusClient:
    """GET/PATCH ``.../namespaces/{ns}/lightningtrainingjobs/{name}/status`` with a bearer token."""

    def __init__(self, endpoint: Endpoint, namespace: str, name: str):
        self.endpoint = endpoint
        url = urllib.parse.urlsplit(endpoint.server)
        if url.scheme != "https" or not url.hostname:
            raise ValueError(f"server: must be an https:// URL, got {endpoint.server!r}")
        self._host = url.hostname
        self._port = url.port or 443
        prefix = url.path.rstrip("/")
        self.path = (f"{prefix}/apis/{GROUP}/{VERSION}/namespaces/{urllib.parse.quote(namespace)}/"
                     f"{PLURAL}/{urllib.parse.quote(name)}/status")
        self._conn: http.client.HTTPSConnection | None = None
        self.requests = 0  # answered requests, for logs and benchmarks

    def _connection(self, timeout: float) -> http.client.HTTPSConnection:
        if self._conn is None:
            ctx = ssl.create_default_context(cafile=str(self.endpoint.ca_file) if self.endpoint.ca_file else None)
            self._conn = http.client.HTTPSConnection(self._host, self._port, context=ctx, timeout=timeout)
        else:
            self._conn.timeout = timeout
            if self._conn.sock is not None:
                self._conn.sock.settimeout(timeout)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _token(self) -> str:
        try:
            return self.endpoint.token_file.read_text().strip()
        except OSError as e:
            raise Unavailable(f"cannot read token {self.endpoint.token_file}: {e}") from e

    def request(self, method: str, body: Any = None, content_type: str = "application/json",
                timeout: float | None = None) -> dict[str, Any]:
        """One request; on 401 the token file is re-read and the request retried once."""
        for attempt in (1, 2):
            try:
                return self._request_once(method, body, content_type, timeout or self.endpoint.timeout)
            except ApiError as e:
                if e.status != 401 or attempt == 2:
                    raise
                log.info("401 from the API server: re-reading the token and retrying")
        raise AssertionError("unreachable")

    def _request_once(self, method: str, body: Any, content_type: str, timeout: float) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self._token()}", "Accept": "application/json",
                   "User-Agent": USER_AGENT}
        data = None
        if body is not None:
            data = json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
            headers["Content-Type"] = content_type
        for fresh in (self._conn is None, True):
            conn = self._connection(timeout)
            try:
                conn.request(method, self.path, body=data, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
                break
            except (OSError, http.client.HTTPException, socket.timeout) as e:
                self.close()  # the connection state is unknown: start a fresh one
                # A kept-alive connection the server has closed meanwhile fails at once: retry on a
                # new one before calling the server unavailable (the write is idempotent).
                if fresh or isinstance(e, (socket.timeout, TimeoutError)):
                    raise Unavailable(f"{method} {self.path}: {type(e).__name__}: {e}") from e
        self.requests += 1
        if resp.getheader("Connection", "").lower() == "close":
            self.close()
        if 200 <= resp.status < 300:
            try:
                return json.loads(raw) if raw else {}
            except ValueError as e:
                raise ApiError(resp.status, "BadResponse", f"invalid JSON: {e}") from e
        reason, message = resp.reason, raw[:2000].decode(errors="replace")
        fields: tuple[str, ...] = ()
        try:
            status = json.loads(raw)
            reason, message = status.get("reason") or reason, status.get("message") or message
            causes = (status.get("details") or {}).get("causes") or []
            fields = tuple(c["field"] for c in causes if isinstance(c, dict) and isinstance(c.get("field"), str))
        except (ValueError, AttributeError, TypeError):
            pass
        retry_after = None
        if resp.getheader("Retry-After"):
            try:
                retry_after = float(resp.getheader("Retry-After", ""))
            except ValueError:
                retry_after = None
        raise ApiError(resp.status, reason, message, retry_after, fields)

    def get(self, timeout: float | None = None) -> dict[str, Any]:
        return self.request("GET", timeout=timeout)

    def merge_patch(self, patch: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        return self.request("PATCH", patch, "application/merge-patch+json", timeout)

    def json_patch(self, ops: list[dict[str, Any]], timeout: float | None = None) -> dict[str, Any]:
        return self.request("PATCH", ops, "application/json-patch+json", timeout)


def training_of(job: dict[str, Any]) -> dict[str, Any] | None:
    status = job.get("status")
    training = status.get("training") if isinstance(status, dict) else None
    return training if isinstance(training, dict) else None


def seq_of(job: dict[str, Any]) -> int:
    training = training_of(job)
    seq = training.get("seq") if training else None
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else 0
