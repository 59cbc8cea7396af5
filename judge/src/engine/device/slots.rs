//! The device backend's key/value memory: per layer one preallocated key buffer and one value
//! buffer `[slots, kv_heads, max_len, head_dim]`, a pool of slots (each running sequence
//! holds one and gives it back when dropped: finished, cancelled or failed), the sequence
//! cache that names its slot and length, and the prefix cache's copies of prompt positions.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};

use candle_core::{DType, Device, Tensor};

use crate::engine::scheduler::{SeqCache, SharedPrefix};
use crate::error::{JudgeError, Result};

/// The key/value buffers of every layer and the pool of their slots.
pub struct KvStore {
    /// Per layer, `[slots, kv_heads, max_len, head_dim]`.
    pub(super) k: Vec<Tensor>,
    /// Per layer, like `k`.
    pub(super) v: Vec<Tensor>,
    /// Positions one slot holds.
    pub(super) max_len: usize,
    slots: usize,
    /// Slots no sequence holds; the lowest is leased first so the occupied ones stay
    /// together at the front (decode attention runs over the range they span).
    free: Arc<Mutex<BTreeSet<usize>>>,
}

/// The sizes of a store.
#[derive(Debug, Clone, Copy)]
pub struct StoreSize {
    /// Transformer blocks.
    pub layers: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Size of one head.
    pub head_dim: usize,
    /// Sequences held at once.
    pub slots: usize,
    /// Positions per sequence.
    pub max_len: usize,
}

impl KvStore {
    /// Allocates zeroed buffers (zeros: a padded row of decode attention reads finite values).
    pub fn new(size: StoreSize, dtype: DType, device: &Device) -> Result<Self> {
        let shape = (size.slots, size.kv_heads, size.max_len, size.head_dim);
        let alloc = || -> Result<Vec<Tensor>> {
            (0..size.layers)
                .map(|_| Ok(Tensor::zeros(shape, dtype, device)?))
                .collect()
        };
        Ok(Self {
            k: alloc()?,
            v: alloc()?,
            max_len: size.max_len,
            slots: size.slots,
            free: Arc::new(Mutex::new((0..size.slots).collect())),
        })
    }

    /// Slots in the store.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Slots held by sequences now.
    pub fn in_use(&self) -> usize {
        self.slots
            - self
                .free
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .len()
    }

    /// The lowest free slot, held until the returned value is dropped.
    fn lease(&self) -> Option<Slot> {
        let id = self
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_first()?;
        Some(Slot {
            id,
            free: self.free.clone(),
        })
    }

    /// One layer's key or value buffer narrowed to one slot: `[1, kv_heads, max_len, d]`,
    /// contiguous, sharing the buffer's memory.
    fn slot_view(buf: &Tensor, slot: usize) -> Result<Tensor> {
        Ok(buf.narrow(0, slot, 1)?)
    }
}

/// A slot held by one sequence; dropping it returns the slot to the pool.
#[derive(Debug)]
struct Slot {
    id: usize,
    free: Arc<Mutex<BTreeSet<usize>>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(self.id);
    }
}

/// One sequence's cache on the device: its slot of the store and how many positions of it
/// are filled.
pub struct DeviceKv {
    slot: Slot,
    len: usize,
    store: Arc<KvStore>,
}

impl std::fmt::Debug for DeviceKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceKv")
            .field("slot", &self.slot.id)
            .field("len", &self.len)
            .finish()
    }
}

impl DeviceKv {
    /// A cache on the lowest free slot, or an error when every slot is held (the scheduler
    /// admits no more sequences than there are slots, so this is an internal error).
    pub(super) fn lease(store: &Arc<KvStore>) -> Result<Self> {
        let slot = store.lease().ok_or_else(|| -> JudgeError {
            candle_core::Error::Msg("every key/value slot is held".into()).into()
        })?;
        Ok(Self {
            slot,
            len: 0,
            store: store.clone(),
        })
    }

    /// The slot this sequence writes to.
    pub fn slot(&self) -> usize {
        self.slot.id
    }

    /// Positions the slot holds at most.
    pub fn capacity(&self) -> usize {
        self.store.max_len
    }

    /// Records that `n` more positions were written by a step.
    pub(super) fn advance(&mut self, n: usize) {
        self.len += n;
    }

    /// Forgets positions from `len` on (they were scratch, e.g. scored continuations).
    pub(super) fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
}

/// Copies of a prompt's first positions, per layer `[1, kv_heads, len, head_dim]`.
#[derive(Debug)]
pub struct Segment {
    k: Vec<Tensor>,
    v: Vec<Tensor>,
}

/// What the prefix cache keeps of a prompt on the device: a shared copy and how many of its
/// positions are used.
#[derive(Debug, Clone, Default)]
pub struct DevicePrefix {
    seg: Option<Arc<Segment>>,
    n: usize,
}

impl SharedPrefix for DevicePrefix {
    fn take(&self, n: usize) -> Self {
        Self {
            seg: self.seg.clone(),
            n: n.min(self.n),
        }
    }
}

impl SeqCache for DeviceKv {
    type Prefix = DevicePrefix;

    fn len(&self) -> usize {
        self.len
    }

    /// Nothing to do: positions in a slot never move.
    fn freeze(&mut self) {}

    /// Copies the first `upto` positions out of the slot (the slot is reused later, so the
    /// prefix cache keeps its own copy).
    fn prefix(&self, upto: usize) -> Result<DevicePrefix> {
        let upto = upto.min(self.len);
        if upto == 0 {
            return Ok(DevicePrefix::default());
        }
        let copy = |bufs: &[Tensor]| -> Result<Vec<Tensor>> {
            bufs.iter()
                .map(|b| {
                    let view = KvStore::slot_view(b, self.slot.id)?.narrow(2, 0, upto)?;
                    Ok(view.force_contiguous()?)
                })
                .collect()
        };
        let seg = Segment {
            k: copy(&self.store.k)?,
            v: copy(&self.store.v)?,
        };
        Ok(DevicePrefix {
            seg: Some(Arc::new(seg)),
            n: upto,
        })
    }

    /// Copies the prefix's positions into the front of this sequence's slot.
    fn seed(&mut self, prefix: DevicePrefix) -> Result<()> {
        let Some(seg) = prefix.seg.filter(|_| prefix.n > 0) else {
            self.len = 0;
            return Ok(());
        };
        let n = prefix.n.min(self.store.max_len);
        let put = |bufs: &[Tensor], src: &[Tensor]| -> Result<()> {
            for (buf, src) in bufs.iter().zip(src) {
                let src = if src.dim(2)? == n {
                    src.clone()
                } else {
                    src.narrow(2, 0, n)?.force_contiguous()?
                };
                KvStore::slot_view(buf, self.slot.id)?.slice_set(&src, 2, 0)?;
            }
            Ok(())
        };
        put(&self.store.k, &seg.k)?;
        put(&self.store.v, &seg.v)?;
        self.len = n;
        Ok(())
    }
}
