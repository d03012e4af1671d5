"""The system under test comes from the environment: tests/serving (cargo
test --test serving) starts `ciel demo --serve`, an impostor, and runs this
suite with their addresses."""

import os
from types import SimpleNamespace

import pytest

NAMES = ["CIEL_URL", "CIEL_POLICY", "CIEL_MODEL", "CIEL_MODEL_SHA256", "CIEL_EXPECTED", "CIEL_IMPOSTOR_URL"]


@pytest.fixture(scope="session")
def guest():
    missing = [n for n in NAMES if not os.environ.get(n)]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not set: run this suite through `cargo test --test serving` "
            "(scripts/test.sh), which starts the demo system for it",
            pytrace=False,
        )
    e = os.environ
    return SimpleNamespace(
        url=e["CIEL_URL"],
        policy=e["CIEL_POLICY"],
        model=e["CIEL_MODEL"],
        model_sha256=e["CIEL_MODEL_SHA256"],
        # The embedding model the demo guest serves beside it, if any.
        embedding_model=e.get("CIEL_EMBEDDING_MODEL"),
        embedding_model_sha256=e.get("CIEL_EMBEDDING_MODEL_SHA256"),
        expected=e["CIEL_EXPECTED"],
        impostor=e["CIEL_IMPOSTOR_URL"],
        # The simulated GPUs the guest attests with.
        gpus=int(e.get("CIEL_GPUS", "0")),
    )


@pytest.fixture()
def refused_on_evidence():
    """Whether failed checks are those of a guest the policy does not
    trust: its evidence, and, when its GPUs' evidence was too large for its
    certificate, that too (the client would have fetched it had the rest
    verified)."""

    def check(failed):
        names = [c.name for c in failed]
        return names[:1] == ["evidence"] and set(names) <= {"evidence", "gpu evidence"}

    return check


@pytest.fixture()
def refusing_policy(tmp_path):
    """A policy that trusts no root: the simulated guest must be refused."""
    p = tmp_path / "refuses.toml"
    p.write_text("[snp]\nmeasurements = []\n")
    return str(p)
