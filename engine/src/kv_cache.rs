//! The key/value cache in fixed-size blocks (paged, as vLLM's): a
//! sequence's keys and values live in the blocks of its block table, so
//! sequences of any length share one memory budget without fragmenting it,
//! and a block of a prompt's prefix can serve every sequence that starts
//! with that prefix.
//!
//! [`BlockPool`] is the bookkeeping (which blocks are free, who holds them,
//! which full blocks hold which prefix); [`KvStore`] holds the numbers. The
//! scheduler owns the first, the model the second.

use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};

/// Positions per block.
pub const BLOCK_TOKENS: usize = 16;

/// A block's index in the pool.
pub type BlockId = u32;

/// The identity of a full block's contents: SHA-256 over the previous
/// block's identity and this block's tokens, so it names the whole prefix
/// up to the block's end (a block's keys depend on every token before it).
/// A cryptographic hash, so that no two prefixes share an identity: a
/// collision would hand one client keys computed from another's prompt.
pub type PrefixHash = [u8; 32];

/// The identity of the block holding `tokens` (exactly [`BLOCK_TOKENS`] of
/// them) after the prefix `previous` (`None` for a sequence's first block).
pub fn prefix_hash(previous: Option<&PrefixHash>, tokens: &[u32]) -> PrefixHash {
    let mut h = Sha256::new();
    h.update(previous.unwrap_or(&[0u8; 32]));
    for t in tokens {
        h.update(t.to_le_bytes());
    }
    h.finalize().into()
}

#[derive(Debug, Clone, Default)]
struct BlockState {
    /// Sequences holding the block.
    refs: u32,
    /// The prefix it holds, once full and registered.
    hash: Option<PrefixHash>,
    /// Its key in `evictable` while it has no holder but a prefix.
    since: u64,
}

/// Which blocks are free, held or cached. A block nobody holds that holds
/// a registered prefix stays cached until its room is needed, least
/// recently released first.
#[derive(Debug)]
pub struct BlockPool {
    capacity: usize,
    states: Vec<BlockState>,
    /// Never-handed-out ids are `states.len()..capacity`; these were freed.
    free: Vec<BlockId>,
    cached: HashMap<PrefixHash, BlockId>,
    /// Unheld cached blocks by release time (the least recent first).
    evictable: BTreeMap<u64, BlockId>,
    clock: u64,
    caching: bool,
}

impl BlockPool {
    /// A pool of `capacity` blocks; with `caching`, full prefix blocks are
    /// kept for reuse ([`Self::lookup`]).
    pub fn new(capacity: usize, caching: bool) -> Self {
        BlockPool {
            capacity,
            states: Vec::new(),
            free: Vec::new(),
            cached: HashMap::new(),
            evictable: BTreeMap::new(),
            clock: 0,
            caching,
        }
    }

    /// Blocks in all.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Blocks that [`Self::allocate`] can still hand out (cached blocks
    /// nobody holds included: they are given up when needed).
    pub fn available(&self) -> usize {
        self.free.len() + (self.capacity - self.states.len()) + self.evictable.len()
    }

    /// Blocks held by some sequence.
    pub fn held(&self) -> usize {
        self.capacity - self.available()
    }

    /// Unheld blocks kept for their prefix.
    pub fn cached_unheld(&self) -> usize {
        self.evictable.len()
    }

    /// A block for one holder, or `None` when every block is held.
    pub fn allocate(&mut self) -> Option<BlockId> {
        let id = if let Some(id) = self.free.pop() {
            id
        } else if self.states.len() < self.capacity {
            self.states.push(BlockState::default());
            BlockId::try_from(self.states.len() - 1).ok()?
        } else {
            // The least recently released cached block gives up its prefix.
            let (_, id) = self.evictable.pop_first()?;
            let state = self.states.get_mut(id as usize)?;
            if let Some(h) = state.hash.take() {
                self.cached.remove(&h);
            }
            id
        };
        if let Some(s) = self.states.get_mut(id as usize) {
            s.refs = 1;
        }
        Some(id)
    }

    /// The cached block holding the prefix `hash`, now held once more.
    pub fn lookup(&mut self, hash: &PrefixHash) -> Option<BlockId> {
        let id = *self.cached.get(hash)?;
        let state = self.states.get_mut(id as usize)?;
        if state.refs == 0 {
            self.evictable.remove(&state.since);
        }
        state.refs += 1;
        Some(id)
    }

    /// Records that the held block `id` is full and holds the prefix
    /// `hash`. The first block registered for a prefix is the one kept (two
    /// sequences may compute the same prefix at once).
    pub fn register(&mut self, id: BlockId, hash: PrefixHash) {
        if !self.caching || self.cached.contains_key(&hash) {
            return;
        }
        if let Some(state) = self.states.get_mut(id as usize)
            && state.hash.is_none()
        {
            state.hash = Some(hash);
            self.cached.insert(hash, id);
        }
    }

    /// One holder lets go of `id`.
    pub fn release(&mut self, id: BlockId) {
        let Some(state) = self.states.get_mut(id as usize) else {
            return;
        };
        if state.refs == 0 {
            return;
        }
        state.refs -= 1;
        if state.refs > 0 {
            return;
        }
        if state.hash.is_some() {
            self.clock += 1;
            state.since = self.clock;
            self.evictable.insert(self.clock, id);
        } else {
            self.free.push(id);
        }
    }
}

/// Why the store could not take a block.
#[derive(Debug, thiserror::Error)]
#[error("K/V cache: {0}")]
pub struct KvError(String);

/// The keys and values: per block, every layer's `BLOCK_TOKENS` rows of
/// `width` (KV heads × head size) values each, keys and values apart.
/// Blocks get memory when first written, so a budget costs only what is
/// used.
#[derive(Debug)]
pub struct KvStore {
    layers: usize,
    width: usize,
    blocks: Vec<Option<StoredBlock>>,
}

#[derive(Debug)]
struct StoredBlock {
    k: Vec<f32>,
    v: Vec<f32>,
}

impl KvStore {
    pub fn new(layers: usize, width: usize) -> Self {
        KvStore {
            layers,
            width,
            blocks: Vec::new(),
        }
    }

    /// Values in one position's key (or value) row.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Gives block `id` its memory if it has none (an allocation failure is
    /// an error, not an abort).
    pub fn ensure(&mut self, id: BlockId) -> Result<(), KvError> {
        let i = id as usize;
        if self.blocks.len() <= i {
            self.blocks.resize_with(i + 1, || None);
        }
        if self.blocks[i].is_none() {
            let n = self.layers * BLOCK_TOKENS * self.width;
            let zeros = || -> Result<Vec<f32>, KvError> {
                let mut v = Vec::new();
                v.try_reserve_exact(n)
                    .map_err(|e| KvError(format!("{} bytes for block {id}: {e}", n * 4)))?;
                v.resize(n, 0.0);
                Ok(v)
            };
            self.blocks[i] = Some(StoredBlock {
                k: zeros()?,
                v: zeros()?,
            });
        }
        Ok(())
    }

    fn offset(&self, layer: usize, slot: usize) -> usize {
        (layer * BLOCK_TOKENS + slot) * self.width
    }

    /// Writes one position's key and value rows of `layer`.
    pub fn write(
        &mut self,
        id: BlockId,
        layer: usize,
        slot: usize,
        k: &[f32],
        v: &[f32],
    ) -> Result<(), KvError> {
        let at = self.offset(layer, slot);
        let width = self.width;
        let b = self
            .blocks
            .get_mut(id as usize)
            .and_then(Option::as_mut)
            .ok_or_else(|| KvError(format!("block {id} was never given memory")))?;
        b.k[at..at + width].copy_from_slice(k);
        b.v[at..at + width].copy_from_slice(v);
        Ok(())
    }

    /// All `BLOCK_TOKENS` key and value rows of `layer` in block `id`.
    pub fn layer_block(&self, id: BlockId, layer: usize) -> Option<(&[f32], &[f32])> {
        let (at, len) = (self.offset(layer, 0), BLOCK_TOKENS * self.width);
        let b = self.blocks.get(id as usize)?.as_ref()?;
        Some((b.k.get(at..at + len)?, b.v.get(at..at + len)?))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_handed_out_until_every_one_is_held() {
        let mut p = BlockPool::new(3, true);
        let ids: Vec<_> = (0..3).map(|_| p.allocate().unwrap()).collect();
        assert_eq!(ids, vec![0, 1, 2]);
        assert_eq!((p.available(), p.allocate()), (0, None));
        p.release(1);
        assert_eq!((p.available(), p.allocate()), (1, Some(1)));
    }

    #[test]
    fn a_registered_prefix_is_shared_kept_and_evicted_least_recent_first() {
        let mut p = BlockPool::new(2, true);
        let (a, b) = (p.allocate().unwrap(), p.allocate().unwrap());
        let ha = prefix_hash(None, &[1; BLOCK_TOKENS]);
        let hb = prefix_hash(Some(&ha), &[2; BLOCK_TOKENS]);
        p.register(a, ha);
        p.register(b, hb);
        // Shared while held: a second holder, released twice.
        assert_eq!(p.lookup(&ha), Some(a));
        p.release(a);
        p.release(a);
        p.release(b);
        // Both cached, unheld, and still available for new sequences.
        assert_eq!((p.cached_unheld(), p.available()), (2, 2));
        // Taken back from the cache, it is held again.
        assert_eq!(p.lookup(&hb), Some(b));
        assert_eq!(p.available(), 1);
        // Room is needed: `a`, the only unheld one, gives up its prefix.
        assert_eq!(p.allocate(), Some(a));
        assert_eq!(p.lookup(&ha), None);
        assert_eq!(p.lookup(&hb), Some(b));
    }

    #[test]
    fn without_caching_nothing_is_kept() {
        let mut p = BlockPool::new(1, false);
        let a = p.allocate().unwrap();
        let h = prefix_hash(None, &[7; BLOCK_TOKENS]);
        p.register(a, h);
        p.release(a);
        assert_eq!(
            (p.lookup(&h), p.cached_unheld(), p.available()),
            (None, 0, 1)
        );
    }

    #[test]
    fn the_prefix_hash_names_the_whole_prefix() {
        let first = prefix_hash(None, &[1; BLOCK_TOKENS]);
        let other_first = prefix_hash(None, &[2; BLOCK_TOKENS]);
        let tail = [3; BLOCK_TOKENS];
        assert_ne!(
            prefix_hash(Some(&first), &tail),
            prefix_hash(Some(&other_first), &tail)
        );
        assert_ne!(prefix_hash(None, &tail), prefix_hash(Some(&first), &tail));
    }

    #[test]
    fn the_store_keeps_each_position_apart() {
        let mut s = KvStore::new(2, 3);
        assert!(s.write(0, 0, 0, &[1.0; 3], &[2.0; 3]).is_err());
        s.ensure(1).unwrap();
        s.write(1, 1, 15, &[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0])
            .unwrap();
        let (k, v) = s.layer_block(1, 1).unwrap();
        assert_eq!(
            (&k[45..], &v[45..]),
            (&[1.0, 2.0, 3.0][..], &[4.0, 5.0, 6.0][..])
        );
        assert!(k[..45].iter().chain(&v[..45]).all(|x| *x == 0.0));
        assert!(s.layer_block(1, 0).unwrap().0.iter().all(|x| *x == 0.0));
        assert!(s.layer_block(0, 0).is_none());
    }
}
