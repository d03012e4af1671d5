//! Trustee-style resource policies in Rego, run by regorus (Microsoft's
//! Rego interpreter), so that a policy written for Trustee's KBS runs here
//! unchanged beside (or instead of) ciel's TOML policy.
//!
//! The policy sees what Trustee's resource policies see:
//! - `input`: the claims of the session's attestation token (the EAR this
//!   broker signed at `/attest`: `input.submods.cpu0["ear.status"]`,
//!   `["ear.trustworthiness-vector"]`, `["ear.veraison.annotated-evidence"]`
//!   with the platform's parsed claims under its name, e.g. `.snp`);
//! - `data`: `{"resource-path": "REPO/TYPE/TAG", "plugin": "resource"}`;
//!
//! and the key is released only if `data.policy.allow` is `true` (a policy
//! without `package policy` and an `allow` rule is refused when loaded).
//! Both Rego syntaxes are read: v1, else v0 (Trustee's older policies).

use regorus::utils::limits::ExecutionTimerConfig;
use regorus::{Engine, Value};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The rule whose value decides.
const ALLOW: &str = "data.policy.allow";

/// An evaluation that runs longer is an error (and a refusal): policies are
/// the owner's, but a release must not hang on one.
const TIME_LIMIT: Duration = Duration::from_millis(500);

/// A loaded, parsed Rego policy.
pub struct RegoPolicy {
    path: PathBuf,
    engine: Engine,
}

impl std::fmt::Debug for RegoPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegoPolicy")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Why a policy could not be loaded, or did not decide.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegoError {
    #[error("Rego policy {}: {message}", .path.display())]
    Load { path: PathBuf, message: String },
    #[error("Rego policy {}: evaluation failed: {message}", .path.display())]
    Eval { path: PathBuf, message: String },
}

fn engine(v0: bool) -> Engine {
    let mut e = Engine::new();
    e.set_rego_v0(v0);
    e.set_execution_timer_config(ExecutionTimerConfig {
        limit: TIME_LIMIT,
        check_interval: NonZeroU32::MIN,
    });
    e
}

impl RegoPolicy {
    /// Reads and parses `path`; it must define `data.policy.allow`.
    pub fn load(path: &Path) -> Result<Self, RegoError> {
        let error = |message: String| RegoError::Load {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| error(format!("cannot read: {e}")))?;
        let name = path.display().to_string();
        let mut parsed = engine(false);
        if let Err(v1) = parsed.add_policy(name.clone(), text.clone()) {
            parsed = engine(true);
            parsed
                .add_policy(name, text)
                .map_err(|_| error(format!("{v1:#}")))?;
        }
        let packages = parsed.get_packages().map_err(|e| error(format!("{e:#}")))?;
        if !packages.iter().any(|p| p == "data.policy") {
            return Err(error(format!(
                "no `package policy` (found {}); Trustee's resource policies are `package policy` with an `allow` rule",
                if packages.is_empty() {
                    "none".to_string()
                } else {
                    packages.join(", ")
                }
            )));
        }
        // The rule must exist: evaluating it on empty input shows that
        // without deciding anything (regorus refuses an undeclared rule).
        decide(&parsed, &serde_json::json!({}), "check/the/rule").map_err(|m| {
            error(format!(
                "{m}: the policy must define `allow` in `package policy` ({ALLOW})"
            ))
        })?;
        Ok(RegoPolicy {
            path: path.to_path_buf(),
            engine: parsed,
        })
    }

    /// The policy's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the policy releases `resource_path` to a session whose token
    /// claims are `claims`.
    pub fn allows(
        &self,
        claims: &serde_json::Value,
        resource_path: &str,
    ) -> Result<bool, RegoError> {
        decide(&self.engine, claims, resource_path).map_err(|message| RegoError::Eval {
            path: self.path.clone(),
            message,
        })
    }
}

/// `data.policy.allow` for `claims` and `resource_path`, on a copy of the
/// loaded engine (each decision starts from the policy alone).
fn decide(
    engine: &Engine,
    claims: &serde_json::Value,
    resource_path: &str,
) -> Result<bool, String> {
    let mut e = engine.clone();
    e.set_input(Value::from(claims.clone()));
    let data = serde_json::json!({ "resource-path": resource_path, "plugin": "resource" });
    e.add_data(Value::from(data))
        .map_err(|e| format!("{e:#}"))?;
    match e.eval_rule(ALLOW.to_string()) {
        Ok(Value::Bool(true)) => Ok(true),
        // `false`, or undefined (no default): not allowed.
        Ok(Value::Bool(false) | Value::Undefined) => Ok(false),
        Ok(v) => Err(format!("{ALLOW} is {v}, not a boolean")),
        Err(e) => Err(format!("{e:#}")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Claims in the shape this broker's tokens have.
    fn claims(status: &str, hardware: u64, measurement: &str) -> serde_json::Value {
        json!({
            "eat_profile": crate::ear::EAR_PROFILE,
            "submods": {"cpu0": {
                "ear.status": status,
                "ear.trustworthiness-vector": {"hardware": hardware},
                "ear.veraison.annotated-evidence": {
                    "platform": "snp",
                    "snp": {"measurement": measurement, "vmpl": 0},
                },
            }},
        })
    }

    // Written in the style of Trustee's resource policies (v1 syntax): the
    // trust vector's hardware claim affirming (2..=31), the path's
    // repository checked, a claim of the parsed evidence read.
    const V1: &str = r#"package policy

import rego.v1

default allow := false

cpu := input.submods.cpu0

allow if {
    cpu["ear.status"] == "affirming"
    cpu["ear.trustworthiness-vector"].hardware >= 2
    cpu["ear.trustworthiness-vector"].hardware < 32
    split(data["resource-path"], "/")[0] == "default"
    data.plugin == "resource"
    startswith(cpu["ear.veraison.annotated-evidence"].snp.measurement, "c0ffee")
}
"#;

    #[test]
    fn a_trustee_style_policy_decides_on_the_claims_and_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = RegoPolicy::load(&write(&dir, "v1.rego", V1)).unwrap();
        let good = claims("affirming", 2, "c0ffee00");
        assert!(p.allows(&good, "default/model-key/m").unwrap());
        assert!(!p.allows(&good, "other/model-key/m").unwrap());
        assert!(
            !p.allows(&claims("contraindicated", 2, "c0ffee00"), "default/k/m")
                .unwrap()
        );
        assert!(
            !p.allows(&claims("affirming", 96, "c0ffee00"), "default/k/m")
                .unwrap()
        );
        assert!(
            !p.allows(&claims("affirming", 2, "deadbeef"), "default/k/m")
                .unwrap()
        );
        // Claims without the expected shape: undefined, so not allowed.
        assert!(!p.allows(&json!({}), "default/k/m").unwrap());
    }

    #[test]
    fn older_v0_policies_run_too() {
        let dir = tempfile::tempdir().unwrap();
        let v0 = "package policy\n\ndefault allow = false\n\nallow {\n    input.submods.cpu0[\"ear.status\"] == \"affirming\"\n}\n";
        let p = RegoPolicy::load(&write(&dir, "v0.rego", v0)).unwrap();
        assert!(p.allows(&claims("affirming", 2, ""), "a/b/c").unwrap());
        assert!(!p.allows(&claims("warning", 2, ""), "a/b/c").unwrap());
        // No default: an undefined allow is a refusal, not an error.
        let no_default = "package policy\n\nallow if input.x == 1\n";
        let p = RegoPolicy::load(&write(&dir, "nd.rego", no_default)).unwrap();
        assert!(!p.allows(&json!({}), "a/b/c").unwrap());
        assert!(p.allows(&json!({"x": 1}), "a/b/c").unwrap());
    }

    #[test]
    fn bad_policies_are_refused_when_loaded_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        for (name, text, needle) in [
            (
                "syntax.rego",
                "package policy\n\nallow if {\n",
                "syntax.rego",
            ),
            (
                "pkg.rego",
                "package other\n\ndefault allow := true\n",
                "no `package policy`",
            ),
            (
                "rule.rego",
                "package policy\n\nfoo := true\n",
                "must define `allow`",
            ),
        ] {
            let e = RegoPolicy::load(&write(&dir, name, text)).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains(name) && msg.contains(needle), "{msg}");
        }
        let e = RegoPolicy::load(&dir.path().join("absent.rego")).unwrap_err();
        assert!(e.to_string().contains("cannot read"), "{e}");
        // A non-boolean decision is an error at evaluation, never a release.
        let p = RegoPolicy::load(&write(
            &dir,
            "str.rego",
            "package policy\n\nallow := \"yes\"\n",
        ));
        let e = p.and_then(|p| p.allows(&json!({}), "a/b/c"));
        assert!(e.is_err(), "{e:?}");
    }

    #[test]
    fn a_runaway_policy_is_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let slow = "package policy\n\ndefault allow := false\n\nallow if {\n    input.go\n    count([1 | some x in numbers.range(1, 10000); some y in numbers.range(1, 10000)]) > 0\n}\n";
        let p = RegoPolicy::load(&write(&dir, "slow.rego", slow)).unwrap();
        let e = p.allows(&json!({"go": true}), "a/b/c").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("evaluation failed") && msg.contains("time"),
            "{msg}"
        );
    }
}
