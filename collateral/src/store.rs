//! The host's on-disk cache: one JSON file an item (named by the SHA-256 of
//! its canonical request), written whole to a temporary file and renamed,
//! so a crash leaves the old copy or the new one, never half of either.

use crate::entry::{Entry, StoredEntry};
use crate::item::Item;
use sha2::Digest;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

/// Why the cache could not be opened or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("collateral cache {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// The cache: every entry in memory, each also on disk.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    entries: RwLock<BTreeMap<Item, Entry>>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl Store {
    /// Opens (creating) `dir` and reads what it holds. A file that does not
    /// read back as an item is left where it is and named in the log.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut entries = BTreeMap::new();
        for e in std::fs::read_dir(dir).map_err(io(dir))? {
            let path = e.map_err(io(dir))?.path();
            if path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            match read_entry(&path) {
                Ok(entry) => {
                    entries.insert(entry.item.clone(), entry);
                }
                Err(why) => {
                    tracing::warn!(path = %path.display(), %why, "collateral cache file ignored")
                }
            }
        }
        Ok(Store {
            dir: dir.to_path_buf(),
            entries: RwLock::new(entries),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn get(&self, item: &Item) -> Option<Entry> {
        self.read().get(item).cloned()
    }

    /// How many entries of a kind ([`Item::kind`]) it holds.
    pub fn count(&self, kind: &str) -> usize {
        self.read().keys().filter(|i| i.kind() == kind).count()
    }

    /// Every entry, in item order.
    pub fn entries(&self) -> Vec<Entry> {
        self.read().values().cloned().collect()
    }

    /// Keeps `entry`, on disk first.
    pub fn put(&self, entry: Entry) -> Result<(), StoreError> {
        let path = self.path_of(&entry.item);
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(&entry.to_stored()).map_err(|e| StoreError::Io {
            path: path.display().to_string(),
            source: std::io::Error::other(e),
        })?;
        std::fs::write(&tmp, text).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        self.entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(entry.item.clone(), entry);
        Ok(())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<Item, Entry>> {
        self.entries
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn path_of(&self, item: &Item) -> PathBuf {
        let digest = sha2::Sha256::digest(item.to_string().as_bytes());
        self.dir.join(format!(
            "{}-{}.json",
            item.kind(),
            hex::encode(&digest[..16])
        ))
    }
}

fn read_entry(path: &Path) -> Result<Entry, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let stored: StoredEntry = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    Entry::from_stored(stored)
}
