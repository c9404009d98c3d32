"""The one error type for an API server's refusal, shared by the operator and the relay.

Standard library only: the relay imports it and must stay free of the kubernetes client and kopf.
"""

from __future__ import annotations


class ApiError(Exception):
    """An HTTP error answer from the API server (status code, Kubernetes reason, message).

    `str()` reads "<status> <reason>: <message>"; the operator puts it in status conditions as is."""

    def __init__(self, status: int, reason: str, message: str, retry_after: float | None = None,
                 fields: tuple[str, ...] = ()):
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.retry_after = retry_after  # seconds, from a Retry-After header
        self.fields = fields  # the field paths of an Invalid answer's causes
