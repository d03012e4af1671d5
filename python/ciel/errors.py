"""The exceptions the ciel SDK raises.

Every one is a :class:`CielError`. A guest that does not pass the policy is
:class:`AttestationRefused`, with the report of what failed; nothing was sent
to it. Through the ``httpx`` transports, connection problems arrive as the
``httpx`` exceptions their clients expect (``httpx.ConnectError``, ...), raised
from the ciel exception below; a refusal stays :class:`AttestationRefused`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, List, Optional

if TYPE_CHECKING:
    from ._native import Check, Report


class CielError(Exception):
    """Base class of every ciel SDK error."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class PolicyError(CielError, ValueError):
    """A policy could not be read or parsed; ``path`` names its file, if any."""

    def __init__(self, message: str, path: Optional[str] = None) -> None:
        super().__init__(message)
        self.path = None if path is None else str(path)


class AttestationRefused(CielError):
    """The guest's attestation did not pass the policy: nothing was sent.

    ``report`` is the whole verification; ``failed`` the checks that failed.
    """

    def __init__(self, message: str, address: str, report: "Report") -> None:
        super().__init__(message)
        self.address = address
        self.report = report

    @property
    def checks(self) -> "List[Check]":
        """Every check, passed or not."""
        return self.report.checks

    @property
    def failed(self) -> "List[Check]":
        """The checks that failed."""
        return self.report.failed


class ConnectionFailed(CielError):
    """No verified connection could be made (TCP or TLS); nothing was sent."""

    def __init__(self, message: str, address: Optional[str] = None) -> None:
        super().__init__(message)
        self.address = address


class ConnectionLost(CielError):
    """The connection broke after the request was sent (the answer may be
    incomplete)."""


class Timeout(CielError):
    """A wait passed its limit; ``phase`` is ``"connect"`` or ``"read"``."""

    def __init__(self, message: str, phase: str) -> None:
        super().__init__(message)
        self.phase = phase


class GuestError(CielError):
    """The guest answered with an HTTP error (``status``) to an SDK call."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class ProtocolError(CielError):
    """The guest's answer was not what the protocol says."""


__all__ = [
    "AttestationRefused",
    "CielError",
    "ConnectionFailed",
    "ConnectionLost",
    "GuestError",
    "PolicyError",
    "ProtocolError",
    "Timeout",
]
