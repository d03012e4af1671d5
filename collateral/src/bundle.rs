//! A collateral bundle: every item a hub's verifiers need, in one file, for
//! clients and brokers with no network (`ciel collateral bundle`). Each item
//! keeps when it was fetched; its signatures are checked by whoever uses it,
//! and how old it may be is each policy's `max_collateral_age_seconds`.

use crate::entry::{Entry, StoredEntry};
use crate::item::Item;
use ciel_attestation::UnixTime;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The format's name and version, the first field of every bundle.
pub const FORMAT: &str = "ciel-collateral-bundle/1";

/// Why a bundle could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    #[error("collateral bundle: {0}")]
    Json(serde_json::Error),
    #[error("collateral bundle: format {found:?}, expected {FORMAT:?}")]
    Format { found: String },
    #[error("collateral bundle: items[{index}]: {message}")]
    Item { index: usize, message: String },
    #[error("collateral bundle: items[{index}] repeats {item}")]
    Duplicate { index: usize, item: String },
}

/// A bundle in memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bundle {
    pub created_at: UnixTime,
    entries: BTreeMap<Item, Entry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredBundle {
    format: String,
    created_at: u64,
    items: Vec<StoredEntry>,
}

impl Bundle {
    pub fn new(created_at: UnixTime, entries: impl IntoIterator<Item = Entry>) -> Bundle {
        Bundle {
            created_at,
            entries: entries.into_iter().map(|e| (e.item.clone(), e)).collect(),
        }
    }

    /// Reads a bundle, checking every item's shape.
    pub fn from_json(bytes: &[u8]) -> Result<Bundle, BundleError> {
        let stored: StoredBundle = serde_json::from_slice(bytes).map_err(BundleError::Json)?;
        if stored.format != FORMAT {
            return Err(BundleError::Format {
                found: stored.format,
            });
        }
        let mut entries = BTreeMap::new();
        for (index, s) in stored.items.into_iter().enumerate() {
            let entry =
                Entry::from_stored(s).map_err(|message| BundleError::Item { index, message })?;
            if entries.contains_key(&entry.item) {
                return Err(BundleError::Duplicate {
                    index,
                    item: entry.item.to_string(),
                });
            }
            entries.insert(entry.item.clone(), entry);
        }
        Ok(Bundle {
            created_at: UnixTime(stored.created_at),
            entries,
        })
    }

    pub fn to_json(&self) -> Vec<u8> {
        let stored = StoredBundle {
            format: FORMAT.to_string(),
            created_at: self.created_at.secs(),
            items: self.entries.values().map(Entry::to_stored).collect(),
        };
        let mut out = serde_json::to_vec_pretty(&stored).unwrap_or_default();
        out.push(b'\n');
        out
    }

    pub fn get(&self, item: &Item) -> Option<&Entry> {
        self.entries.get(item)
    }

    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
