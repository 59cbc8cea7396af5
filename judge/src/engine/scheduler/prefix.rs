//! The prefix cache: prompts whose caches are kept so a later prompt that starts with the same
//! tokens computes only what differs. Generic over what a backend keeps of a prompt
//! ([`SharedPrefix`]): chains of shared segments on the CPU, copies of positions on a device.

use super::backend::SharedPrefix;

/// Prompts whose caches are kept for reuse, least recently used evicted first. `P` is what a
/// backend keeps of a prompt's cache: chains of shared segments on the CPU, copies of the
/// positions on a device.
#[derive(Debug)]
pub struct PrefixCache<P> {
    entries: Vec<Entry<P>>,
    capacity_tokens: usize,
    clock: u64,
    /// Prompt positions served from the cache (for statistics).
    pub hit_tokens: u64,
    /// Prompt positions computed.
    pub miss_tokens: u64,
}

#[derive(Debug)]
struct Entry<P> {
    tokens: Vec<u32>,
    chain: P,
    used: u64,
}

impl<P: SharedPrefix> PrefixCache<P> {
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
    pub fn lookup(&mut self, prompt: &[u32]) -> (usize, P) {
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
                let chain = e.chain.take(n);
                self.hit_tokens += n as u64;
                self.miss_tokens += (prompt.len() - n) as u64;
                (n, chain)
            }
            _ => {
                self.miss_tokens += prompt.len() as u64;
                (0, P::default())
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

    /// Whether [`PrefixCache::insert`] would keep `tokens` (asked first where handing over
    /// a prompt's cache costs a copy): the cache is on, the prompt fits it, and no entry
    /// already covers it.
    pub fn accepts(&self, tokens: &[u32]) -> bool {
        self.capacity_tokens > 0
            && tokens.len() <= self.capacity_tokens
            && !self
                .entries
                .iter()
                .any(|e| e.tokens.len() >= tokens.len() && e.tokens.starts_with(tokens))
    }

    /// Remembers a prompt and its frozen cache.
    pub fn insert(&mut self, tokens: Vec<u32>, chain: P) {
        if !self.accepts(&tokens) {
            return;
        }
        self.clock += 1;
        // An entry this one extends is no longer needed: every lookup it served, this serves.
        self.entries
            .retain(|e| !(e.tokens.len() <= tokens.len() && tokens.starts_with(&e.tokens)));
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
