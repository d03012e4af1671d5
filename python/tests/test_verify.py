"""ciel.verify, policies and the report: every check is the Rust SDK's."""

import pathlib

import pytest

import ciel
from ciel.errors import AttestationRefused, ConnectionFailed, PolicyError


def test_verify_reports_each_check_and_the_model(guest):
    r = ciel.verify(guest.url, guest.policy)
    assert r.accepted and not r.failed
    names = [c.name for c in r.checks]
    base = ["evidence", "tls binding", "model"] + (["embedding model"] if guest.embedding_model else [])
    assert names[: len(base)] == base, names
    gpu = [n for n in names if n.startswith("gpu")]
    assert gpu == (["gpu binding"] + ["gpu"] * guest.gpus + ["gpus"] if guest.gpus else []), names
    # GPU evidence too large for the certificate is fetched fresh on the
    # same connection before the verification is final.
    assert set(names) - set(base) - set(gpu) <= {"freshness", "same guest"}, names
    assert all(c.ok and c.detail for c in r.checks)
    assert r.model == guest.model
    assert r.model_sha256 == guest.model_sha256
    assert r.claims["model"]["sha256"] == guest.model_sha256
    if guest.embedding_model:
        assert r.claims["embedding_model"] == {
            "name": guest.embedding_model,
            "sha256": guest.embedding_model_sha256,
        }
    assert r.platform == "snp" and r.simulated and not r.fresh
    assert len(r.tls_key_sha256) == 64
    text = str(r)
    assert text.startswith("guest:       VERIFIED\n") and "SIMULATED" in text, text
    d = r.to_dict()
    assert d["accepted"] is True and d["claims"]["model"]["name"] == guest.model
    assert "VERIFIED" in repr(r)


def test_fresh_evidence_is_bound_to_a_new_nonce(guest):
    r = ciel.verify(guest.url, guest.policy, fresh=True)
    assert r.fresh and r.accepted
    names = {c.name: c.ok for c in r.checks}
    assert names["freshness"] and names["same guest"], r.checks
    assert len(r.claims["nonce"]) == 64


def test_the_policy_comes_as_a_path_an_object_or_toml(guest):
    text = pathlib.Path(guest.policy).read_text()
    for kwargs in (
        {"policy": pathlib.Path(guest.policy)},
        {"policy": ciel.Policy.load(guest.policy)},
        {"policy_toml": text},
    ):
        assert ciel.verify(guest.url, **kwargs).accepted, kwargs
    with pytest.raises(TypeError, match="exactly one"):
        ciel.verify(guest.url, guest.policy, policy_toml=text)
    with pytest.raises(TypeError, match="exactly one"):
        ciel.verify(guest.url)


def test_bad_policies_are_errors_that_name_what_is_wrong(tmp_path):
    missing = tmp_path / "absent.toml"
    with pytest.raises(PolicyError) as e:
        ciel.Policy.load(missing)
    assert e.value.path == str(missing) and "cannot read" in str(e.value)
    bad = tmp_path / "bad.toml"
    bad.write_text("[snp\n")
    with pytest.raises(PolicyError, match="bad.toml"):
        ciel.Policy.load(bad)
    with pytest.raises(PolicyError, match="policy TOML"):
        ciel.Policy.from_toml("measurements = 7")
    assert isinstance(PolicyError("x"), ValueError)


def test_a_collateral_bundle_is_taken_and_a_bad_one_named(guest, tmp_path):
    # A bundle with nothing in it: this SNP guest's evidence carries its own
    # VCEK, so verification passes with it as without it.
    empty = tmp_path / "empty.json"
    empty.write_text('{"format": "ciel-collateral-bundle/1", "created_at": 0, "items": []}')
    report = ciel.verify(guest.url, guest.policy, collateral_bundle=empty)
    assert report.accepted
    with pytest.raises(OSError, match="absent.json"):
        ciel.verify(guest.url, guest.policy, collateral_bundle=tmp_path / "absent.json")
    other = tmp_path / "other.json"
    other.write_text('{"format": "something-else", "created_at": 0, "items": []}')
    with pytest.raises(ValueError, match="other.json.*format"):
        ciel.AttestedTransport(guest.policy, collateral_bundle=other)
    with pytest.raises(TypeError, match="collateral_bundle"):
        ciel.verify(guest.url, guest.policy, collateral_bundle=7)


def test_a_guest_the_policy_does_not_allow_is_refused(guest, refusing_policy, refused_on_evidence):
    with pytest.raises(AttestationRefused) as e:
        ciel.verify(guest.url, refusing_policy)
    refused = e.value
    assert not refused.report.accepted
    assert refused_on_evidence(refused.failed), refused.failed
    assert "root" in refused.failed[0].detail
    assert refused.address in guest.url
    assert "attestation refused" in str(refused)


def test_an_impostor_with_the_genuine_evidence_and_another_key_is_refused(guest):
    with pytest.raises(AttestationRefused) as e:
        ciel.verify(guest.impostor, guest.policy)
    checks = {c.name: c.ok for c in e.value.checks}
    assert checks["evidence"] is True, "the impostor serves the guest's genuine evidence"
    assert [c.name for c in e.value.failed] == ["tls binding"]


def test_unreachable_and_malformed_addresses(guest):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConnectionFailed) as e:
        ciel.verify(f"https://127.0.0.1:{port}", guest.policy)
    assert e.value.address == f"127.0.0.1:{port}"
    with pytest.raises(ValueError, match="https://HOST:PORT"):
        ciel.verify("http://127.0.0.1:1", guest.policy)
    with pytest.raises(ValueError, match="seconds"):
        ciel.verify(guest.url, guest.policy, timeout=-1.0)
