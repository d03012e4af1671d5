//! The key store: data keys encrypted at rest under a master key
//! (AES-256-GCM, the resource path and version as associated data), in one
//! JSON file replaced atomically. Each resource keeps every version, so a
//! rotation never breaks a guest that still needs the old key.

use crate::master_key::{MasterKey, MasterKeyError};
use crate::resource::ResourcePath;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Why the key store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("key store {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key store {path}: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error(transparent)]
    MasterKey(#[from] MasterKeyError),
    #[error("key store {path}: the master key failed: {message}")]
    Sealing { path: PathBuf, message: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StoredKey {
    pub(crate) version: u32,
    pub(crate) nonce: String,
    pub(crate) ciphertext: String,
    /// Retired: kept (for audit) but never released again. Bound into the
    /// ciphertext's associated data, so editing the flag back makes the
    /// store refuse to open.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) retired: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreFile {
    format: u32,
    keys: BTreeMap<String, Vec<StoredKey>>,
}

/// A key and its version number.
pub type VersionedKey = (u32, Zeroizing<Vec<u8>>);

/// Encrypted key storage.
pub struct KeyStore {
    path: PathBuf,
    master: MasterKey,
    data: StoreFile,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore")
            .field("path", &self.path)
            .field("resources", &self.data.keys.len())
            .finish()
    }
}

fn aad(resource: &str, version: u32, retired: bool) -> Vec<u8> {
    if retired {
        format!("ciel-keystore-v1|{resource}|{version}|retired").into_bytes()
    } else {
        format!("ciel-keystore-v1|{resource}|{version}").into_bytes()
    }
}

/// Why a stored version did not open.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// Malformed, or does not decrypt (wrong master key, tampered).
    Corrupt(String),
    /// The master key itself failed (an HSM error).
    Sealing(String),
}

/// Opens one stored version of `resource` under `master`. Shared by the
/// file store and the PostgreSQL store: the same format in both.
pub(crate) fn open_version(
    master: &MasterKey,
    resource: &str,
    k: &StoredKey,
) -> Result<Zeroizing<Vec<u8>>, OpenError> {
    let corrupt = |m: &str| OpenError::Corrupt(format!("{resource} v{}: {m}", k.version));
    let nonce: [u8; 12] = hex::decode(&k.nonce)
        .ok()
        .and_then(|n| n.try_into().ok())
        .ok_or_else(|| corrupt("bad nonce"))?;
    let sealed = hex::decode(&k.ciphertext).map_err(|_| corrupt("bad ciphertext encoding"))?;
    master
        .open(nonce, &aad(resource, k.version, k.retired), &sealed)
        .map_err(OpenError::Sealing)?
        .ok_or_else(|| corrupt("does not decrypt (wrong master key or tampered store)"))
}

/// `key` sealed under `master` for `resource` version `version`, under a
/// fresh nonce.
pub(crate) fn seal_version(
    master: &MasterKey,
    resource: &str,
    version: u32,
    retired: bool,
    key: &[u8],
) -> Result<StoredKey, String> {
    let mut nonce = [0u8; 12];
    getrandom::fill(&mut nonce).map_err(|e| format!("random number generator: {e}"))?;
    let sealed = master.seal(nonce, &aad(resource, version, retired), key)?;
    Ok(StoredKey {
        version,
        nonce: hex::encode(nonce),
        ciphertext: hex::encode(&sealed),
        retired,
    })
}

/// Which stored version a release asks for: `version`, or the newest that
/// is not retired (a retired one only to name it in the refusal).
pub(crate) fn choose(versions: &[StoredKey], version: Option<u32>) -> Result<&StoredKey, Lookup> {
    let found = match version {
        Some(v) => versions.iter().find(|k| k.version == v),
        None => versions
            .iter()
            .filter(|k| !k.retired)
            .max_by_key(|k| k.version)
            .or_else(|| versions.iter().max_by_key(|k| k.version)),
    };
    match found {
        Some(k) if k.retired => Err(Lookup::Retired(k.version)),
        Some(k) => Ok(k),
        None => Err(Lookup::Missing),
    }
}

/// A version's state, for refusals that say why nothing is released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// No such resource or version.
    Missing,
    /// The version asked for (or, with none asked for, every version) is
    /// retired.
    Retired(u32),
}

impl KeyStore {
    /// Opens the store at `path` under a master key held in memory.
    pub fn open(path: &Path, master: &[u8; 32]) -> Result<Self, StoreError> {
        Self::open_with(path, MasterKey::from_bytes(master, path)?)
    }

    /// Opens the store at `path` (an absent file is an empty store).
    pub fn open_with(path: &Path, master: MasterKey) -> Result<Self, StoreError> {
        let data = match std::fs::read(path) {
            Ok(bytes) => {
                serde_json::from_slice::<StoreFile>(&bytes).map_err(|e| StoreError::Corrupt {
                    path: path.into(),
                    message: e.to_string(),
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => StoreFile {
                format: 1,
                keys: BTreeMap::new(),
            },
            Err(source) => {
                return Err(StoreError::Io {
                    path: path.into(),
                    source,
                });
            }
        };
        if data.format != 1 {
            return Err(StoreError::Corrupt {
                path: path.into(),
                message: format!("format {} (expected 1)", data.format),
            });
        }
        let store = KeyStore {
            path: path.into(),
            master,
            data,
        };
        // Decrypt everything once: a wrong master key or a tampered file is
        // found at start-up, not at the first release.
        for (res, versions) in &store.data.keys {
            for v in versions {
                store.decrypt(res, v)?;
            }
        }
        Ok(store)
    }

    fn decrypt(&self, resource: &str, k: &StoredKey) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        open_version(&self.master, resource, k).map_err(|e| match e {
            OpenError::Corrupt(message) => StoreError::Corrupt {
                path: self.path.clone(),
                message,
            },
            OpenError::Sealing(message) => StoreError::Sealing {
                path: self.path.clone(),
                message,
            },
        })
    }

    /// The newest version of `resource` that is not retired, or a given
    /// version unless it is retired.
    pub fn get(
        &self,
        resource: &ResourcePath,
        version: Option<u32>,
    ) -> Result<Result<VersionedKey, Lookup>, StoreError> {
        let Some(versions) = self.data.keys.get(&resource.to_string()) else {
            return Ok(Err(Lookup::Missing));
        };
        match choose(versions, version) {
            Ok(k) => Ok(Ok((k.version, self.decrypt(&resource.to_string(), k)?))),
            Err(lookup) => Ok(Err(lookup)),
        }
    }

    /// Whether `resource` has any version (retired ones included).
    pub fn contains(&self, resource: &ResourcePath) -> bool {
        self.data.keys.contains_key(&resource.to_string())
    }

    /// Retires `version` of `resource`: kept, never released again. The
    /// key is sealed again under the retired associated data. `Ok(false)`:
    /// no such version; retiring a retired version changes nothing.
    pub fn retire(&mut self, resource: &ResourcePath, version: u32) -> Result<bool, StoreError> {
        let name = resource.to_string();
        let Some(k) = self.stored(&name, version) else {
            return Ok(false);
        };
        if k.retired {
            return Ok(true);
        }
        let sealed = self.seal(&name, version, true, &self.decrypt(&name, k)?)?;
        let Some(slot) = self.stored_mut(&name, version) else {
            return Ok(false);
        };
        let before = std::mem::replace(slot, sealed);
        if let Err(e) = self.save() {
            // Not retired on disk: not retired here either.
            if let Some(slot) = self.stored_mut(&name, version) {
                *slot = before;
            }
            return Err(e);
        }
        Ok(true)
    }

    fn stored(&self, name: &str, version: u32) -> Option<&StoredKey> {
        self.data
            .keys
            .get(name)?
            .iter()
            .find(|k| k.version == version)
    }

    fn stored_mut(&mut self, name: &str, version: u32) -> Option<&mut StoredKey> {
        self.data
            .keys
            .get_mut(name)?
            .iter_mut()
            .find(|k| k.version == version)
    }

    fn seal(
        &self,
        resource: &str,
        version: u32,
        retired: bool,
        key: &[u8],
    ) -> Result<StoredKey, StoreError> {
        seal_version(&self.master, resource, version, retired, key).map_err(|message| {
            StoreError::Sealing {
                path: self.path.clone(),
                message,
            }
        })
    }

    /// Adds a new version of `resource` holding `key`; returns its number.
    /// The file is written to a temporary name and renamed.
    pub fn put(&mut self, resource: &ResourcePath, key: &[u8]) -> Result<u32, StoreError> {
        let name = resource.to_string();
        let version = self
            .data
            .keys
            .get(&name)
            .and_then(|v| v.iter().map(|k| k.version).max())
            .unwrap_or(0)
            .saturating_add(1);
        let sealed = self.seal(&name, version, false, key)?;
        self.data.keys.entry(name.clone()).or_default().push(sealed);
        if let Err(e) = self.save() {
            // Not on disk, so not in the store: a key the broker would lose
            // at its next restart must never be released.
            if let Some(versions) = self.data.keys.get_mut(&name) {
                versions.pop();
                if versions.is_empty() {
                    self.data.keys.remove(&name);
                }
            }
            return Err(e);
        }
        Ok(version)
    }

    fn save(&self) -> Result<(), StoreError> {
        let io = |source| StoreError::Io {
            path: self.path.clone(),
            source,
        };
        let bytes =
            serde_json::to_vec_pretty(&self.data).map_err(|e| io(std::io::Error::other(e)))?;
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io)?;
            f.write_all(&bytes).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, &self.path).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_persist_and_tampering_is_found_at_open() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("keys.json");
        let r = ResourcePath::parse("default/model-key/demo").unwrap_or_else(|e| panic!("{e}"));
        {
            let mut s = KeyStore::open(&path, &[1; 32]).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(s.put(&r, &[7; 32]).ok(), Some(1));
            assert_eq!(s.put(&r, &[8; 32]).ok(), Some(2));
        }
        let s = KeyStore::open(&path, &[1; 32]).unwrap_or_else(|e| panic!("{e}"));
        let (v, k) = s
            .get(&r, None)
            .ok()
            .and_then(Result::ok)
            .unwrap_or_else(|| panic!("latest"));
        assert_eq!((v, k.as_slice()), (2, &[8u8; 32][..]));
        let (v, k) = s
            .get(&r, Some(1))
            .ok()
            .and_then(Result::ok)
            .unwrap_or_else(|| panic!("v1"));
        assert_eq!((v, k.as_slice()), (1, &[7u8; 32][..]));
        assert!(s.get(&r, Some(3)).ok().and_then(Result::ok).is_none());
        // The file holds no plaintext key.
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(!text.contains(&hex::encode([7u8; 32])));
        // Wrong master key, or a swapped ciphertext, is refused at open.
        assert!(matches!(
            KeyStore::open(&path, &[2; 32]),
            Err(StoreError::Corrupt { .. })
        ));
        // A write that fails (here: the temporary file's name is taken by a
        // directory) leaves the store as it was, in memory and on disk.
        let mut s = s;
        let tmp = dir.path().join("keys.json.tmp");
        std::fs::create_dir(&tmp).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(s.put(&r, &[9; 32]), Err(StoreError::Io { .. })));
        assert_eq!(
            s.get(&r, None).ok().and_then(Result::ok).map(|(v, _)| v),
            Some(2)
        );
        let other =
            ResourcePath::parse("default/model-key/other").unwrap_or_else(|e| panic!("{e}"));
        assert!(s.put(&other, &[9; 32]).is_err());
        assert!(s.get(&other, None).ok().and_then(Result::ok).is_none());
        assert_eq!(std::fs::read_to_string(&path).unwrap_or_default(), text);
        std::fs::remove_dir(&tmp).unwrap_or_else(|e| panic!("{e}"));
        let swapped = text.replacen("\"version\": 1", "\"version\": 3", 1);
        std::fs::write(&path, swapped).unwrap_or_default();
        assert!(matches!(
            KeyStore::open(&path, &[1; 32]),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn retired_versions_are_kept_never_released_and_cannot_be_unretired_by_editing() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("keys.json");
        let r = ResourcePath::parse("default/model-key/demo").unwrap_or_else(|e| panic!("{e}"));
        let mut s = KeyStore::open(&path, &[1; 32]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.put(&r, &[7; 32]).ok(), Some(1));
        assert_eq!(s.put(&r, &[8; 32]).ok(), Some(2));
        assert_eq!(s.retire(&r, 2).ok(), Some(true));
        assert_eq!(s.retire(&r, 9).ok(), Some(false));
        // The newest live version is released; the retired one is named.
        let latest = s.get(&r, None).ok().and_then(Result::ok).map(|(v, _)| v);
        assert_eq!(latest, Some(1));
        assert!(matches!(s.get(&r, Some(2)), Ok(Err(Lookup::Retired(2)))));
        // It survives a restart, kept in the file.
        let s = KeyStore::open(&path, &[1; 32]).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(s.get(&r, Some(2)), Ok(Err(Lookup::Retired(2)))));
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(text.matches("\"retired\": true").count(), 1, "{text}");
        // With every version retired, nothing is released and the reason says so.
        let mut s = s;
        assert_eq!(s.retire(&r, 1).ok(), Some(true));
        assert!(matches!(s.get(&r, None), Ok(Err(Lookup::Retired(2)))));
        assert!(s.contains(&r));
        // Editing the flag away makes the store refuse to open.
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let edited = text.replacen("\"retired\": true", "\"retired\": false", 1);
        assert_ne!(edited, text, "{text}");
        std::fs::write(&path, edited).unwrap_or_default();
        assert!(matches!(
            KeyStore::open(&path, &[1; 32]),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
