"""The one way every entry point takes a policy."""

from __future__ import annotations

import os
from typing import Optional, Union

from ._native import Policy

PolicyLike = Union[Policy, str, "os.PathLike[str]"]


def resolve_policy(policy: Optional[PolicyLike], policy_toml: Optional[str]) -> Policy:
    """``policy`` (a :class:`Policy` or a policy file's path) or
    ``policy_toml`` (the policy's TOML text): exactly one of them."""
    if (policy is None) == (policy_toml is None):
        raise TypeError("give exactly one of policy (a Policy or a file path) and policy_toml")
    if policy_toml is not None:
        if not isinstance(policy_toml, str):
            raise TypeError(f"policy_toml must be TOML text (str), not {type(policy_toml).__name__}")
        return Policy.from_toml(policy_toml)
    if isinstance(policy, Policy):
        return policy
    if isinstance(policy, (str, os.PathLike)):
        return Policy.load(os.fspath(policy))
    raise TypeError(f"policy must be a ciel.Policy or a file path, not {type(policy).__name__}")


BundleLike = Union[str, "os.PathLike[str]"]


def resolve_bundle(bundle: Optional[BundleLike]) -> Optional[str]:
    """A collateral bundle's path (``ciel collateral bundle``), or None."""
    if bundle is None:
        return None
    if isinstance(bundle, (str, os.PathLike)):
        return os.fspath(bundle)
    raise TypeError(f"collateral_bundle must be a file path, not {type(bundle).__name__}")
