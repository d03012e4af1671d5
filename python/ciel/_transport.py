"""``httpx`` transports that send every request over a connection the Rust
client verified during its TLS handshake (as ``ciel proxy`` does): a guest
that does not pass the policy never sees the request.

They work with ``httpx`` and with ``httpx2`` (which recent ``openai`` clients
use): each response is built from the classes of the module that made the
request.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from typing import Any, Dict, Iterator, Optional, Tuple

from . import _native
from ._policy import BundleLike, PolicyLike, resolve_bundle, resolve_policy
from .errors import CielError, ConnectionFailed, ConnectionLost, ProtocolError, Timeout

#: The response extension that carries what the connection's guest proved.
REPORT_EXTENSION = "ciel_report"


def _httpx_of(request: Any) -> Any:
    """The ``httpx``-like module whose ``Request`` this is."""
    return sys.modules[type(request).__module__.split(".", 1)[0]]


@contextlib.contextmanager
def _as_httpx_errors(httpx: Any, request: Any) -> Iterator[None]:
    """ciel's connection errors as the ``httpx`` exceptions an ``httpx``
    client expects, raised from them; a refused attestation stays ciel's
    own :class:`~ciel.errors.AttestationRefused` (it is not a network glitch
    to retry past)."""
    try:
        yield
    except CielError as err:
        if isinstance(err, Timeout):
            cls = httpx.ConnectTimeout if err.phase == "connect" else httpx.ReadTimeout
        elif isinstance(err, ConnectionFailed):
            cls = httpx.ConnectError
        elif isinstance(err, ConnectionLost):
            cls = httpx.ReadError
        elif isinstance(err, ProtocolError):
            cls = httpx.RemoteProtocolError
        else:
            raise
        raise cls(str(err), request=request) from err


def _target(httpx: Any, request: Any) -> Tuple[str, str]:
    """``(HOST:PORT, /path?query)``; only ``https`` (TLS ends in the guest)."""
    url = request.url
    if url.scheme != "https":
        raise httpx.UnsupportedProtocol(
            f"{url}: a ciel guest is reached over attested TLS only; use an https:// URL",
            request=request,
        )
    host = url.raw_host.decode("ascii")
    port = url.port or 443
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return authority, url.raw_path.decode("ascii")


def _timeouts(request: Any) -> Tuple[Optional[float], Optional[float]]:
    t: Dict[str, Optional[float]] = request.extensions.get("timeout", {})
    return t.get("connect"), t.get("read")


@functools.lru_cache(maxsize=None)
def _streams(httpx: Any) -> Tuple[type, type]:
    """Body stream classes for ``httpx`` (one pair per module)."""

    class SyncStream(httpx.SyncByteStream):  # type: ignore[misc]
        def __init__(self, response: _native.Response, request: Any) -> None:
            self._response = response
            self._request = request

        def __iter__(self):  # type: ignore[no-untyped-def]
            while True:
                with _as_httpx_errors(httpx, self._request):
                    chunk = self._response.read()
                if chunk is None:
                    return
                yield chunk

        def close(self) -> None:
            self._response.close()

    class AsyncStream(httpx.AsyncByteStream):  # type: ignore[misc]
        def __init__(self, response: _native.Response, request: Any) -> None:
            self._response = response
            self._request = request

        async def __aiter__(self):  # type: ignore[no-untyped-def]
            import anyio.to_thread

            while True:
                with _as_httpx_errors(httpx, self._request):
                    chunk = await anyio.to_thread.run_sync(self._response.read, abandon_on_cancel=True)
                if chunk is None:
                    return
                yield chunk

        async def aclose(self) -> None:
            self._response.close()

    return SyncStream, AsyncStream


def _response(httpx: Any, native: _native.Response, stream: Any, request: Any) -> Any:
    return httpx.Response(
        status_code=native.status,
        headers=native.headers,
        stream=stream,
        request=request,
        extensions={"http_version": b"HTTP/1.1", REPORT_EXTENSION: native.report},
    )


class AttestedTransport:
    """A synchronous ``httpx`` transport: each request goes out on a new TLS
    connection whose guest passed ``policy`` in the handshake.

    ``httpx.Client(transport=ciel.AttestedTransport(policy="policy.toml"))``;
    the response's ``extensions["ciel_report"]`` is the connection's
    :class:`ciel.Report`. ``collateral_bundle``: a file from ``ciel
    collateral bundle``, for evidence that carries no collateral of its own. A refused guest raises
    :class:`ciel.errors.AttestationRefused` and is sent nothing.
    """

    def __init__(
        self,
        policy: Optional[PolicyLike] = None,
        *,
        policy_toml: Optional[str] = None,
        collateral_bundle: Optional[BundleLike] = None,
    ) -> None:
        self._native = _native.Transport(resolve_policy(policy, policy_toml), resolve_bundle(collateral_bundle))

    def handle_request(self, request: Any) -> Any:
        httpx = _httpx_of(request)
        authority, target = _target(httpx, request)
        connect, read = _timeouts(request)
        body = request.read()
        with _as_httpx_errors(httpx, request):
            native = self._native.send(
                request.method, authority, target, list(request.headers.raw), body, connect, read
            )
        return _response(httpx, native, _streams(httpx)[0](native, request), request)

    def close(self) -> None:
        """Nothing to release: no connection outlives its request."""

    def __enter__(self) -> "AttestedTransport":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncAttestedTransport:
    """The asynchronous twin of :class:`AttestedTransport`, for
    ``httpx.AsyncClient`` (asyncio or trio): the Rust client does the work
    in worker threads, so the event loop never blocks."""

    def __init__(
        self,
        policy: Optional[PolicyLike] = None,
        *,
        policy_toml: Optional[str] = None,
        collateral_bundle: Optional[BundleLike] = None,
    ) -> None:
        self._native = _native.Transport(resolve_policy(policy, policy_toml), resolve_bundle(collateral_bundle))

    async def handle_async_request(self, request: Any) -> Any:
        import anyio.to_thread

        httpx = _httpx_of(request)
        authority, target = _target(httpx, request)
        connect, read = _timeouts(request)
        body = await request.aread()
        send = functools.partial(
            self._native.send, request.method, authority, target, list(request.headers.raw), body, connect, read
        )
        with _as_httpx_errors(httpx, request):
            native = await anyio.to_thread.run_sync(send, abandon_on_cancel=True)
        return _response(httpx, native, _streams(httpx)[1](native, request), request)

    async def aclose(self) -> None:
        """Nothing to release: no connection outlives its request."""

    async def __aenter__(self) -> "AsyncAttestedTransport":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
