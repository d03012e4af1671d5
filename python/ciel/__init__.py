"""ciel: verify a confidential inference guest from Python, then talk to it.

Every check is the Rust client SDK's, compiled into this package: the guest's
hardware evidence, its binding to the TLS key, the served model's digest.

    import ciel
    report = ciel.verify("https://host:8443", "policy.toml")
    print(report)

    import httpx2 as httpx   # or httpx
    import openai
    client = openai.OpenAI(
        base_url="https://host:8443/v1",
        api_key="unused",
        http_client=httpx.Client(transport=ciel.AttestedTransport(policy="policy.toml")),
    )

Each request travels on a new connection verified in its TLS handshake; a
guest that fails the policy raises :class:`ciel.errors.AttestationRefused`
and never sees the request.
"""

from __future__ import annotations

from typing import Optional

from . import errors
from ._native import Check, Policy, Report, __version__
from ._native import verify as _verify
from ._policy import BundleLike, PolicyLike, resolve_bundle, resolve_policy
from ._transport import REPORT_EXTENSION, AsyncAttestedTransport, AttestedTransport
from .errors import AttestationRefused, CielError


def verify(
    url: str,
    policy: Optional[PolicyLike] = None,
    *,
    policy_toml: Optional[str] = None,
    fresh: bool = False,
    timeout: Optional[float] = 30.0,
    collateral_bundle: Optional[BundleLike] = None,
) -> Report:
    """Connects to the guest at ``url`` (``https://HOST:PORT``, its host),
    verifies its attestation against the policy, and returns the report.

    ``policy``: a :class:`Policy` or a policy file's path (TOML, or JSON if
    it ends in ``.json``); or ``policy_toml``: the policy's TOML text.
    ``fresh``: also verify evidence the guest produces for a new random
    nonce (not only the evidence in its certificate). ``timeout``: seconds
    for the whole verification (``None``: no limit). ``collateral_bundle``:
    a file from ``ciel collateral bundle`` with collateral the guest's
    evidence does not carry (a TDX guest whose host serves none, an
    air-gapped hub); its items are verified like the evidence's own.

    Raises :class:`ciel.errors.AttestationRefused` (with the failed checks)
    when the guest does not pass, and other :class:`ciel.errors.CielError`
    subclasses when it cannot be reached.
    """
    return _verify(url, resolve_policy(policy, policy_toml), fresh, timeout, resolve_bundle(collateral_bundle))


__all__ = [
    "AsyncAttestedTransport",
    "AttestationRefused",
    "AttestedTransport",
    "Check",
    "CielError",
    "Policy",
    "REPORT_EXTENSION",
    "Report",
    "__version__",
    "errors",
    "verify",
]
