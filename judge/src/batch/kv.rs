//! Per-sequence key/value caches built from shareable segments, and the prefix cache.
//!
//! Each sequence owns its cache, so sequences at different positions share one forward pass.
//! A cache is a chain of frozen segments (reference-counted, shared with other sequences and
//! with the prefix cache) followed by the sequence's own growing segment. Freezing a prompt
//! after prefill costs nothing (the segment moves behind an `Arc`), and a later request whose
//! prompt starts with the same tokens attends to the same memory instead of recomputing it.

use std::sync::Arc;

/// Keys and values of consecutive positions for every layer, `[position][kv_heads * head_dim]`.
#[derive(Debug, Clone)]
pub struct Segment {
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    width: usize,
}

impl Segment {
    fn new(layers: usize, width: usize) -> Self {
        Self {
            k: vec![Vec::new(); layers],
            v: vec![Vec::new(); layers],
            width,
        }
    }

    /// Positions held (as written to the last layer, i.e. complete positions).
    fn len(&self) -> usize {
        self.k.last().map_or(0, |k| k.len() / self.width)
    }

    fn bytes(&self) -> usize {
        self.k.iter().chain(&self.v).map(|x| x.len() * 4).sum()
    }
}

/// A frozen segment and how many of its positions a chain uses.
type Link = (Arc<Segment>, usize);

/// One sequence's key/value cache.
#[derive(Debug, Clone)]
pub struct SeqKv {
    chain: Vec<Link>,
    own: Segment,
}

/// One contiguous run of cached positions of one layer: keys, values, position count.
pub type Run<'a> = (&'a [f32], &'a [f32], usize);

impl SeqKv {
    /// An empty cache for a model with `layers` layers and `width` = kv heads × head size.
    pub fn new(layers: usize, width: usize) -> Self {
        Self {
            chain: Vec::new(),
            own: Segment::new(layers, width),
        }
    }

    /// A cache that starts with shared positions (from the prefix cache).
    pub fn with_prefix(layers: usize, width: usize, chain: Vec<Link>) -> Self {
        Self {
            chain,
            own: Segment::new(layers, width),
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
        self.own.k[layer].extend_from_slice(k);
        self.own.v[layer].extend_from_slice(v);
    }

    /// The runs of one layer, oldest first.
    pub fn runs(&self, layer: usize) -> Vec<Run<'_>> {
        let w = self.own.width;
        let mut runs: Vec<Run<'_>> = self
            .chain
            .iter()
            .map(|(s, n)| (&s.k[layer][..n * w], &s.v[layer][..n * w], *n))
            .collect();
        let n = self.own.k[layer].len() / w;
        if n > 0 {
            runs.push((&self.own.k[layer], &self.own.v[layer], n));
        }
        runs
    }

    /// Freezes the own segment so it can be shared; later positions go to a new one.
    pub fn freeze(&mut self) {
        let n = self.own.len();
        if n == 0 {
            return;
        }
        let fresh = Segment::new(self.own.k.len(), self.own.width);
        let seg = std::mem::replace(&mut self.own, fresh);
        self.chain.push((Arc::new(seg), n));
    }

    /// The frozen links covering the first `upto` positions (freeze first to include the
    /// newest ones).
    pub fn prefix(&self, upto: usize) -> Vec<Link> {
        take_prefix(&self.chain, upto)
    }

    /// A new cache sharing the first `upto` positions of this one.
    pub fn fork(&mut self, upto: usize) -> Self {
        self.freeze();
        Self::with_prefix(self.own.k.len(), self.own.width, self.prefix(upto))
    }
}

/// Prompts whose caches are kept for reuse, least recently used evicted first.
#[derive(Debug)]
pub struct PrefixCache {
    entries: Vec<Entry>,
    capacity_tokens: usize,
    clock: u64,
    /// Prompt positions served from the cache (for statistics).
    pub hit_tokens: u64,
    /// Prompt positions computed.
    pub miss_tokens: u64,
}

#[derive(Debug)]
struct Entry {
    tokens: Vec<u32>,
    chain: Vec<Link>,
    used: u64,
}

impl PrefixCache {
    /// A cache of at most `capacity_tokens` positions (0 turns it off).
    pub fn new(capacity_tokens: usize) -> Self {
        Self {
            entries: Vec::new(),
            capacity_tokens,
            clock: 0,
            hit_tokens: 0,
            miss_tokens: 0,
        }
    }

    /// The longest cached prefix of `prompt` usable for it: at most `prompt.len() - 1`
    /// positions, so at least one token is computed and yields logits.
    pub fn lookup(&mut self, prompt: &[u32]) -> (usize, Vec<Link>) {
        self.clock += 1;
        let limit = prompt.len().saturating_sub(1);
        let best = self
            .entries
            .iter_mut()
            .map(|e| (common_prefix(&e.tokens, prompt).min(limit), e))
            .max_by_key(|(n, _)| *n);
        match best {
            Some((n, e)) if n > 0 => {
                e.used = self.clock;
                let chain = take_prefix(&e.chain, n);
                self.hit_tokens += n as u64;
                self.miss_tokens += (prompt.len() - n) as u64;
                (n, chain)
            }
            _ => {
                self.miss_tokens += prompt.len() as u64;
                (0, Vec::new())
            }
        }
    }

    /// How many positions [`PrefixCache::lookup`] would serve, without counting a use.
    pub fn peek(&self, prompt: &[u32]) -> usize {
        let limit = prompt.len().saturating_sub(1);
        self.entries
            .iter()
            .map(|e| common_prefix(&e.tokens, prompt))
            .max()
            .unwrap_or(0)
            .min(limit)
    }

    /// Remembers a prompt and its frozen cache.
    pub fn insert(&mut self, tokens: Vec<u32>, chain: Vec<Link>) {
        if self.capacity_tokens == 0 || tokens.len() > self.capacity_tokens {
            return;
        }
        self.clock += 1;
        // An entry this one extends is no longer needed: every lookup it served, this serves.
        self.entries
            .retain(|e| !(e.tokens.len() <= tokens.len() && tokens.starts_with(&e.tokens)));
        if self
            .entries
            .iter()
            .any(|e| e.tokens.len() >= tokens.len() && e.tokens.starts_with(&tokens))
        {
            return;
        }
        self.entries.push(Entry {
            tokens,
            chain,
            used: self.clock,
        });
        while self.entries.iter().map(|e| e.tokens.len()).sum::<usize>() > self.capacity_tokens {
            let oldest = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.used)
                .map(|(i, _)| i);
            match oldest {
                Some(i) => {
                    self.entries.swap_remove(i);
                }
                None => break,
            }
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Length of the common prefix of two token sequences.
pub fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

fn take_prefix(chain: &[Link], upto: usize) -> Vec<Link> {
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

    fn filled(n: usize, base: f32) -> SeqKv {
        let mut kv = SeqKv::new(2, 2);
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
        let runs = b.runs(0);
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].0, &[0.0, 1.0, 2.0, 3.0]);
        assert_eq!(runs[1].0, &[9.0, 9.0]);
        // The original still sees its own third position.
        let total: usize = a.runs(0).iter().map(|r| r.2).sum();
        assert_eq!(total, 3);
        a.freeze();
        assert_eq!(a.own_bytes(), 0);
    }

    #[test]
    fn prefix_cache_serves_longest_common_prefix() {
        let mut cache = PrefixCache::new(100);
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
        let mut cache = PrefixCache::new(6);
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
        assert_eq!(PrefixCache::new(0).lookup(&[1, 2]).0, 0);
    }
}
