//! The guest's settings from init-data: in a Kata Confidential Containers
//! pod the broker URL, its CA and the model to fetch come in init-data's
//! `ciel.toml` entry ([`ciel_protocol::initdata::CIEL_ENTRY`]), whose
//! digest the hardware binds — so the untrusted host that launches the pod
//! cannot point the guest at another broker or CA without the evidence
//! showing it. Command-line values may repeat an init-data value but never
//! contradict it (that is an error naming both), and fill only what it
//! leaves unset.

use ciel_protocol::initdata::{CIEL_ENTRY, InitData};
use serde::Deserialize;

/// What `ciel.toml` may set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestSettings {
    /// Key broker URL (`https://HOST:PORT`).
    pub kbs: Option<String>,
    /// The broker's CA certificate, PEM.
    pub kbs_ca: Option<String>,
    /// Where the sealed model comes from: a transport address (the host's
    /// blob service), an `http(s)://` object store, or `file:DIR` (a volume).
    pub model_from: Option<String>,
    /// The sealed model's blob name at `model_from`.
    pub model_blob: Option<String>,
    /// The CA (PEM) of an `https://` object store's certificate.
    pub model_ca: Option<String>,
}

/// Why the settings could not be read or merged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    #[error("init-data entry {CIEL_ENTRY:?}: {0}")]
    Entry(String),
    #[error(
        "--{flag} is {given:?} but the init-data's {CIEL_ENTRY:?} sets {field} = {bound:?}; the attested value wins, drop the flag or fix the init-data"
    )]
    Conflict {
        flag: &'static str,
        field: &'static str,
        given: String,
        bound: String,
    },
    #[error("--{flag} is required (or `{field}` in the init-data's {CIEL_ENTRY:?})")]
    Missing {
        flag: &'static str,
        field: &'static str,
    },
}

impl GuestSettings {
    /// The settings in `init`'s `ciel.toml` entry (none if it has none).
    pub fn from_init_data(init: &InitData) -> Result<Self, SettingsError> {
        match init.entry(CIEL_ENTRY) {
            None => Ok(GuestSettings::default()),
            Some(text) => toml::from_str(text).map_err(|e| SettingsError::Entry(e.to_string())),
        }
    }

    /// One setting: the init-data's value, or the flag's where it has none.
    pub fn pick(
        bound: Option<&str>,
        given: Option<&str>,
        flag: &'static str,
        field: &'static str,
    ) -> Result<String, SettingsError> {
        match (bound, given) {
            (Some(b), Some(g)) if b.trim() != g.trim() => Err(SettingsError::Conflict {
                flag,
                field,
                given: g.to_string(),
                bound: b.to_string(),
            }),
            (Some(b), _) => Ok(b.to_string()),
            (None, Some(g)) => Ok(g.to_string()),
            (None, None) => Err(SettingsError::Missing { flag, field }),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn init(entry: &str) -> InitData {
        InitData::parse(&format!(
            "version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n\"ciel.toml\" = '''\n{entry}'''\n"
        ))
        .unwrap()
    }

    #[test]
    fn init_data_values_win_and_conflicts_are_named() {
        let s = GuestSettings::from_init_data(&init("kbs = \"https://kbs:8443\"\n")).unwrap();
        assert_eq!(s.kbs.as_deref(), Some("https://kbs:8443"));
        let pick = |given| GuestSettings::pick(s.kbs.as_deref(), given, "kbs", "kbs");
        assert_eq!(pick(None).unwrap(), "https://kbs:8443");
        assert_eq!(pick(Some("https://kbs:8443")).unwrap(), "https://kbs:8443");
        let e = pick(Some("https://elsewhere:8443")).unwrap_err();
        assert!(e.to_string().contains("elsewhere"), "{e}");
        assert!(matches!(
            GuestSettings::pick(None, None, "kbs-ca", "kbs_ca"),
            Err(SettingsError::Missing { flag: "kbs-ca", .. })
        ));
        assert!(matches!(
            GuestSettings::from_init_data(&init("broker = \"x\"\n")),
            Err(SettingsError::Entry(_))
        ));
    }
}
