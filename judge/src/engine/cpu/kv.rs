//! Per-sequence key/value caches of the CPU backend, built from shareable segments.
//!
//! Each sequence owns its cache, so sequences at different positions share one forward pass.
//! A cache is a chain of frozen segments (reference-counted, shared with other sequences and
//! with the prefix cache) followed by the sequence's own growing segment. Freezing a prompt
//! after prefill costs nothing (the segment moves behind an `Arc`), and a later request whose
//! prompt starts with the same tokens attends to the same memory instead of recomputing it.

use std::sync::Arc;

use half::f16;
use half::slice::HalfFloatSliceExt;

use crate::engine::scheduler::limits::{KvType, Q8_BLOCK, Q8_BLOCK_BYTES};

/// One layer's cached rows in the cache's element type.
#[derive(Debug, Clone)]
enum Rows {
    F16(Vec<f16>),
    F32(Vec<f32>),
    /// [`Q8_BLOCK_BYTES`]-byte blocks, as `i8` (the scale's bytes included).
    Q8(Vec<i8>),
}

impl Rows {
    fn new(kind: KvType) -> Self {
        match kind {
            KvType::F16 => Self::F16(Vec::new()),
            KvType::F32 => Self::F32(Vec::new()),
            KvType::Q8 => Self::Q8(Vec::new()),
        }
    }

    /// Stored elements (bytes for `Q8`).
    fn len(&self) -> usize {
        match self {
            Self::F16(v) => v.len(),
            Self::F32(v) => v.len(),
            Self::Q8(v) => v.len(),
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Self::F16(v) => v.len() * 2,
            Self::F32(v) => v.len() * 4,
            Self::Q8(v) => v.len(),
        }
    }

    fn f16(&self) -> Option<&[f16]> {
        match self {
            Self::F16(v) => Some(v),
            _ => None,
        }
    }

    fn f32(&self) -> Option<&[f32]> {
        match self {
            Self::F32(v) => Some(v),
            _ => None,
        }
    }

    fn q8(&self) -> Option<&[i8]> {
        match self {
            Self::Q8(v) => Some(v),
            _ => None,
        }
    }

    fn extend(&mut self, x: &[f32]) {
        match self {
            Self::F16(v) => {
                // The whole slice at once (F16C eight values per instruction where the CPU
                // has it); one call per value was 2% of a batched decode step.
                let at = v.len();
                v.resize(at + x.len(), f16::ZERO);
                v[at..].convert_from_f32_slice(x);
            }
            Self::F32(v) => v.extend_from_slice(x),
            Self::Q8(v) => quantize_q8(x, v),
        }
    }
}

/// Appends `x` (a whole number of [`Q8_BLOCK`]s) as blocks of rounded `x / scale` then the
/// scale's little-endian bytes, `scale = max |x| / 127` (0 for an all-zero block).
fn quantize_q8(x: &[f32], out: &mut Vec<i8>) {
    assert!(
        x.len().is_multiple_of(Q8_BLOCK),
        "q8 cache rows must be whole blocks"
    );
    out.reserve(x.len() / Q8_BLOCK * Q8_BLOCK_BYTES);
    for block in x.chunks_exact(Q8_BLOCK) {
        let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
        let scale = amax / 127.0;
        let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
        out.extend(block.iter().map(|v| (v * inv).round() as i8));
        out.extend(scale.to_le_bytes().map(|b| b as i8));
    }
}

/// Keys and values of consecutive positions for every layer, `[position][kv_heads * head_dim]`.
#[derive(Debug, Clone)]
pub struct Segment {
    k: Vec<Rows>,
    v: Vec<Rows>,
    width: usize,
    kind: KvType,
}

impl Segment {
    fn new(layers: usize, width: usize, kind: KvType) -> Self {
        Self {
            k: vec![Rows::new(kind); layers],
            v: vec![Rows::new(kind); layers],
            width,
            kind,
        }
    }

    /// Stored elements per position (bytes for `Q8`, values otherwise).
    fn stored(&self) -> usize {
        match self.kind {
            KvType::Q8 => self.kind.bytes_for(self.width),
            KvType::F16 | KvType::F32 => self.width,
        }
    }

    /// Positions held (as written to the last layer, i.e. complete positions).
    fn len(&self) -> usize {
        self.k.last().map_or(0, |k| k.len() / self.stored())
    }

    fn bytes(&self) -> usize {
        self.k.iter().chain(&self.v).map(Rows::bytes).sum()
    }
}

/// A frozen segment and how many of its positions a chain uses.
pub type Link = (Arc<Segment>, usize);

/// One sequence's key/value cache.
#[derive(Debug, Clone)]
pub struct SeqKv {
    chain: Vec<Link>,
    own: Segment,
}

/// One contiguous run of cached positions of one layer: keys, values, position count.
pub type Run<'a, T> = (&'a [T], &'a [T], usize);

/// A layer's runs, oldest first, in the cache's element type.
pub enum Runs<'a> {
    /// Half-precision caches.
    F16(Vec<Run<'a, f16>>),
    /// Single-precision caches.
    F32(Vec<Run<'a, f32>>),
    /// 8-bit caches (blocks of values and scale bytes).
    Q8(Vec<Run<'a, i8>>),
    /// A chain whose segments differ in type (the engine never builds one; reading it is
    /// an internal error rather than a silently shorter cache).
    Mixed,
}

impl<'a> Runs<'a> {
    /// The runs, when they are half precision.
    pub fn f16(&self) -> Option<&[Run<'a, f16>]> {
        match self {
            Self::F16(r) => Some(r),
            _ => None,
        }
    }

    /// The runs, when they are single precision.
    pub fn f32(&self) -> Option<&[Run<'a, f32>]> {
        match self {
            Self::F32(r) => Some(r),
            _ => None,
        }
    }

    /// The runs, when they are 8-bit.
    pub fn q8(&self) -> Option<&[Run<'a, i8>]> {
        match self {
            Self::Q8(r) => Some(r),
            _ => None,
        }
    }
}

impl SeqKv {
    /// An empty cache for a model with `layers` layers and `width` = kv heads × head size.
    pub fn new(layers: usize, width: usize, kind: KvType) -> Self {
        Self {
            chain: Vec::new(),
            own: Segment::new(layers, width, kind),
        }
    }

    /// A cache that starts with shared positions (from the prefix cache, whose segments
    /// were made by caches of the same type).
    pub fn with_prefix(layers: usize, width: usize, kind: KvType, chain: Vec<Link>) -> Self {
        Self {
            chain,
            own: Segment::new(layers, width, kind),
        }
    }

    /// Positions cached.
    pub fn len(&self) -> usize {
        self.chain.iter().map(|(_, n)| n).sum::<usize>() + self.own.len()
    }

    /// True before anything is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes this sequence holds alone (its own segment; frozen ones are shared).
    pub fn own_bytes(&self) -> usize {
        self.own.bytes()
    }

    /// Appends positions to one layer; every layer receives the same count in one forward.
    pub fn append(&mut self, layer: usize, k: &[f32], v: &[f32]) {
        self.own.k[layer].extend(k);
        self.own.v[layer].extend(v);
    }

    /// The runs of one layer, oldest first.
    pub fn runs(&self, layer: usize) -> Runs<'_> {
        let w = self.own.stored();
        let segments = self
            .chain
            .iter()
            .map(|(s, n)| (&**s, *n))
            .chain(std::iter::once((&self.own, self.own.k[layer].len() / w)))
            .filter(|(_, n)| *n > 0);
        let runs = match self.own.kind {
            KvType::F16 => layer_runs(segments, layer, w, Rows::f16).map(Runs::F16),
            KvType::F32 => layer_runs(segments, layer, w, Rows::f32).map(Runs::F32),
            KvType::Q8 => layer_runs(segments, layer, w, Rows::q8).map(Runs::Q8),
        };
        runs.unwrap_or(Runs::Mixed)
    }

    /// Freezes the own segment so it can be shared; later positions go to a new one.
    pub fn freeze(&mut self) {
        let n = self.own.len();
        if n == 0 {
            return;
        }
        let fresh = Segment::new(self.own.k.len(), self.own.width, self.own.kind);
        let seg = std::mem::replace(&mut self.own, fresh);
        self.chain.push((Arc::new(seg), n));
    }

    /// The frozen links covering the first `upto` positions (freeze first to include the
    /// newest ones).
    pub fn prefix(&self, upto: usize) -> Vec<Link> {
        take_prefix(&self.chain, upto)
    }

    /// Drops everything cached and starts again from shared positions (from the prefix
    /// cache, whose segments were made by caches of the same type).
    pub fn reseed(&mut self, chain: Vec<Link>) {
        *self = Self::with_prefix(self.own.k.len(), self.own.width, self.own.kind, chain);
    }

    /// A new cache sharing the first `upto` positions of this one.
    pub fn fork(&mut self, upto: usize) -> Self {
        self.freeze();
        Self::with_prefix(
            self.own.k.len(),
            self.own.width,
            self.own.kind,
            self.prefix(upto),
        )
    }
}

/// One layer's runs of `segments` (with the positions each contributes), read as `T` by
/// `get`; `None` when a segment holds another type.
fn layer_runs<'a, T>(
    segments: impl Iterator<Item = (&'a Segment, usize)>,
    layer: usize,
    w: usize,
    get: fn(&Rows) -> Option<&[T]>,
) -> Option<Vec<Run<'a, T>>> {
    segments
        .map(|(s, n)| Some((&get(&s.k[layer])?[..n * w], &get(&s.v[layer])?[..n * w], n)))
        .collect()
}

/// The links of `chain` covering its first `upto` positions.
pub(super) fn take_prefix(chain: &[Link], upto: usize) -> Vec<Link> {
    let mut left = upto;
    let mut out = Vec::new();
    for (seg, n) in chain {
        if left == 0 {
            break;
        }
        let take = (*n).min(left);
        out.push((seg.clone(), take));
        left -= take;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::scheduler::prefix::PrefixCache;

    fn filled(n: usize, base: f32) -> SeqKv {
        let mut kv = SeqKv::new(2, 2, KvType::F32);
        for layer in 0..2 {
            let k: Vec<f32> = (0..n * 2).map(|i| base + i as f32).collect();
            kv.append(layer, &k, &k);
        }
        kv
    }

    #[test]
    fn fork_shares_a_prefix_and_grows_apart() {
        let mut a = filled(3, 0.0);
        let mut b = a.fork(2);
        assert_eq!(a.len(), 3);
        assert_eq!(b.len(), 2);
        b.append(0, &[9.0, 9.0], &[9.0, 9.0]);
        b.append(1, &[9.0, 9.0], &[9.0, 9.0]);
        assert_eq!(b.len(), 3);
        let Runs::F32(runs) = b.runs(0) else {
            panic!("an f32 cache gives f32 runs");
        };
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].0, &[0.0, 1.0, 2.0, 3.0]);
        assert_eq!(runs[1].0, &[9.0, 9.0]);
        // The original still sees its own third position.
        let Runs::F32(runs) = a.runs(0) else {
            panic!("an f32 cache gives f32 runs");
        };
        assert_eq!(runs.iter().map(|r| r.2).sum::<usize>(), 3);
        a.freeze();
        assert_eq!(a.own_bytes(), 0);
    }

    #[test]
    fn a_chain_of_mixed_types_is_reported_not_shortened() {
        let mut half = SeqKv::new(2, 2, KvType::F16);
        for layer in 0..2 {
            half.append(layer, &[1.0, 2.0], &[3.0, 4.0]);
        }
        let same = half.fork(1);
        assert!(matches!(same.runs(0), Runs::F16(r) if r.len() == 1));
        let mixed = SeqKv::with_prefix(2, 2, KvType::F32, half.prefix(1));
        assert!(matches!(mixed.runs(0), Runs::Mixed));
    }

    #[test]
    fn prefix_cache_serves_longest_common_prefix() {
        let mut cache: PrefixCache<Vec<Link>> = PrefixCache::new(100);
        let mut kv = filled(4, 0.0);
        kv.freeze();
        cache.insert(vec![1, 2, 3, 4], kv.prefix(4));
        let (n, chain) = cache.lookup(&[1, 2, 9, 9, 9]);
        assert_eq!(n, 2);
        assert_eq!(chain.iter().map(|l| l.1).sum::<usize>(), 2);
        // The same prompt again reuses all but the last token.
        assert_eq!(cache.lookup(&[1, 2, 3, 4]).0, 3);
        assert_eq!(cache.lookup(&[7, 8]).0, 0);
        assert_eq!(cache.hit_tokens, 5);
    }

    #[test]
    fn prefix_cache_evicts_least_recent_and_drops_extended_entries() {
        let mut cache: PrefixCache<Vec<Link>> = PrefixCache::new(6);
        cache.insert(vec![1, 2], Vec::new());
        cache.insert(vec![1, 2, 3], Vec::new());
        assert_eq!(cache.len(), 1, "the shorter entry is subsumed");
        cache.insert(vec![5, 6, 7], Vec::new());
        cache.lookup(&[1, 2, 3, 0]);
        cache.insert(vec![8, 9], Vec::new());
        assert_eq!(cache.len(), 2);
        assert_eq!(
            cache.lookup(&[5, 6, 7, 0]).0,
            0,
            "least recently used went first"
        );
        assert_eq!(PrefixCache::<Vec<Link>>::new(0).lookup(&[1, 2]).0, 0);
    }

    #[test]
    fn prefix_cache_says_beforehand_what_it_would_keep() {
        let mut cache: PrefixCache<Vec<Link>> = PrefixCache::new(4);
        assert!(cache.accepts(&[1, 2, 3]));
        cache.insert(vec![1, 2, 3], Vec::new());
        assert!(!cache.accepts(&[1, 2]), "covered by an entry");
        assert!(cache.accepts(&[1, 2, 3, 4]), "extends an entry");
        assert!(!cache.accepts(&[1, 2, 3, 4, 5]), "longer than the cache");
        assert!(!PrefixCache::<Vec<Link>>::new(0).accepts(&[1]), "cache off");
    }
}
