//! One forward pass of the device backend over the step's items.
//!
//! Rows of every item are packed into one `[tokens, hidden]` matrix: generating sequences
//! (one token each) first, then prompt chunks and continuation trees. Linear layers run once
//! on the packed matrix. Keys and values are written into the slots before attention reads
//! them: the generating rows with one `scatter_set` over the range of slots they occupy
//! (rows of other slots in the range carry the index `u32::MAX`, which candle skips), each
//! chunk with one `slice_set`. Attention of the generating rows is one batched matmul over
//! that slot range narrowed to the longest sequence, with a length mask, or, when the range
//! is mostly slots that are not generating (idle, or reading a prompt), over the generating
//! slots' positions gathered into a tensor of their own ([`GATHER_SPAN`]); each chunk attends
//! alone with a causal (or tree) mask. Length and causal masks are built on the device from
//! one integer per row (a tree's mask, small, is built on the host).

use candle_core::{DType, Tensor};
use candle_nn::ops::{rms_norm, softmax_last_dim};
use candle_nn::rotary_emb::{rope, rope_i};

use super::{DeviceLayer, DeviceModel, DeviceRope};
use crate::engine::scheduler::{Answer, Ask, StepOut};
use crate::error::{JudgeError, Result};

/// One sequence's part of a device step.
pub(super) struct Item<'a> {
    /// The slot its keys and values live in.
    pub(super) slot: usize,
    /// Cache position of its first token (it is written there and onwards).
    pub(super) base: usize,
    /// Tokens to run.
    pub(super) tokens: &'a [u32],
    /// What comes back. For a continuation tree ([`Ask::Tree`]) each token sees the
    /// positions before `base` and its own branch so far, and its rotary position is `base`
    /// plus its depth in the branch.
    pub(super) ask: Ask<'a>,
}

impl Item<'_> {
    /// A generating sequence's single token, attended in the batched decode path.
    fn is_decode(&self) -> bool {
        self.tokens.len() == 1 && !matches!(self.ask, Ask::Tree { .. })
    }

    /// Index of the first token of token `i`'s branch (0 outside a tree).
    fn first(&self, i: usize) -> usize {
        match self.ask {
            Ask::Tree { branch, .. } => branch[i],
            _ => 0,
        }
    }

    /// Packed rows (from the item's first) whose output the ask reads.
    pub(super) fn out_rows(&self) -> std::ops::Range<usize> {
        let n = self.tokens.len();
        match (self.ask, n) {
            (_, 0) | (Ask::Nothing, _) => 0..0,
            (Ask::Tree { .. }, _) => 0..n,
            _ => n - 1..n,
        }
    }
}

/// Decode attention gathers the generating slots when their range spans more than this
/// many slots per generating sequence. Reading the range costs `span x len` positions per
/// layer; gathering reads and writes the generating slots' positions once more before
/// attention reads them (`3 x rows x len`), so it pays past three.
pub(super) const GATHER_SPAN: usize = 3;

/// How decode attention reads keys and values.
enum DecodeRead {
    /// The slot range narrowed to the longest sequence; mask `[span, 1, 1, len]`.
    Range { mask: Tensor },
    /// The generating slots' first `len` positions: `at` holds their flat row indices into a
    /// layer buffer seen as `[slots x kv_heads x max_len, head_dim]`, in packed order;
    /// mask `[rows, 1, 1, len]`.
    Gathered { at: Tensor, mask: Tensor },
}

/// The generating rows of a step: the slot range they span and what attention needs.
struct DecodeGroup {
    lo: usize,
    span: usize,
    /// Longest sequence of the group, counting its new token.
    len: usize,
    /// `[span]`: the packed row of each slot of the range (any row for slots not in it).
    pad_rows: Tensor,
    /// `[generating rows]`: each one's slot within the range, in packed order.
    out_rows: Tensor,
    /// `[span * kv_heads, 1, head_dim]`: the position each slot's new key is written to,
    /// `u32::MAX` (skipped) for slots not in the group.
    write_at: Tensor,
    /// Generating rows (the first rows of the packed matrix).
    rows: usize,
    /// Where attention reads, with its mask (0 where a row may attend, -inf elsewhere).
    read: DecodeRead,
}

/// A prompt chunk or continuation tree: one sequence's rows, attended alone.
struct Chunk {
    slot: usize,
    base: usize,
    /// First packed row.
    off: usize,
    n: usize,
    /// `[n, base + n]`.
    mask: Tensor,
}

/// What every layer of one step uses.
struct Plan {
    /// Packed row of each item's first token.
    offsets: Vec<usize>,
    total: usize,
    ids: Tensor,
    /// `[total, 1, head_dim / 2]` each: every row's rotary angles.
    cos: Tensor,
    sin: Tensor,
    decode: Option<DecodeGroup>,
    chunks: Vec<Chunk>,
}

impl DeviceModel {
    /// Runs the items through the model; per item, what it asked for (greedy picks among
    /// the first `producible` ids).
    pub(super) fn run_items(&self, items: &[Item<'_>], producible: usize) -> Result<StepOut> {
        if items.iter().all(|i| i.tokens.is_empty()) {
            return Ok(StepOut {
                answers: vec![Answer::default(); items.len()],
                host_bytes: 0,
            });
        }
        for i in items {
            if i.base + i.tokens.len() > self.store.max_len {
                return Err(JudgeError::ContextOverflow(format!(
                    "a sequence needs {} positions but a key/value slot holds {}",
                    i.base + i.tokens.len(),
                    self.store.max_len
                )));
            }
            if let Some(&id) = i.tokens.iter().find(|&&t| t as usize >= self.shape.vocab) {
                return Err(JudgeError::InvalidArgument(format!(
                    "token id {id} is outside the vocabulary"
                )));
            }
        }
        let plan = self.plan(items)?;
        let mut x = self.embed.index_select(&plan.ids, 0)?;
        for (l, layer) in self.layers.iter().enumerate() {
            x = self.layer(l, layer, &x, &plan)?;
        }
        self.answers(&x, items, &plan.offsets, producible)
    }

    /// Packs the items (generating ones first) and builds the step's shared tensors.
    fn plan(&self, items: &[Item<'_>]) -> Result<Plan> {
        let (decode, rest): (Vec<usize>, Vec<usize>) =
            (0..items.len()).partition(|&i| items[i].is_decode());
        let mut offsets = vec![0; items.len()];
        let (mut ids, mut positions) = (Vec::new(), Vec::new());
        for &i in decode.iter().chain(&rest) {
            let item = &items[i];
            offsets[i] = ids.len();
            ids.extend_from_slice(item.tokens);
            positions.extend((0..item.tokens.len()).map(|j| item.base + j - item.first(j)));
        }
        let total = ids.len();
        let (cos, sin) = self.angles(&positions)?;
        let dev = &self.device;
        let decode = if decode.is_empty() {
            None
        } else {
            Some(self.decode_group(items, &decode, &offsets)?)
        };
        let chunks = rest
            .iter()
            .filter(|&&i| !items[i].tokens.is_empty())
            .map(|&i| {
                let item = &items[i];
                Ok(Chunk {
                    slot: item.slot,
                    base: item.base,
                    off: offsets[i],
                    n: item.tokens.len(),
                    mask: chunk_mask(item, dev)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Plan {
            offsets,
            total,
            ids: Tensor::from_vec(ids, total, dev)?,
            cos,
            sin,
            decode,
            chunks,
        })
    }

    /// Every row's rotary cos and sin, `[rows, 1, head_dim / 2]` in the working dtype.
    fn angles(&self, positions: &[usize]) -> Result<(Tensor, Tensor)> {
        let half = self.inv_freq.len();
        let (mut cos, mut sin) = (Vec::new(), Vec::new());
        for &p in positions {
            for f in &self.inv_freq {
                let (s, c) = (p as f32 * f).sin_cos();
                cos.push(c);
                sin.push(s);
            }
        }
        let shape = (positions.len(), 1, half);
        let dt = self.shape.dtype;
        Ok((
            Tensor::from_vec(cos, shape, &self.device)?.to_dtype(dt)?,
            Tensor::from_vec(sin, shape, &self.device)?.to_dtype(dt)?,
        ))
    }

    /// The slot range, write positions and length mask of the generating items.
    fn decode_group(
        &self,
        items: &[Item<'_>],
        decode: &[usize],
        offsets: &[usize],
    ) -> Result<DecodeGroup> {
        let slots = decode.iter().map(|&i| items[i].slot);
        let lo = slots.clone().min().unwrap_or(0);
        let span = slots.max().unwrap_or(0) + 1 - lo;
        let len = decode.iter().map(|&i| items[i].base + 1).max().unwrap_or(1);
        let (kvh, d) = (self.shape.kv_heads, self.shape.head_dim);
        let mut pad_rows = vec![offsets[decode[0]] as u32; span];
        let mut write_at = vec![u32::MAX; span * kvh];
        // Positions each slot of the range may attend to: a slot outside the group attends
        // to its position 0 only (finite, and discarded).
        let mut seen = vec![1u32; span];
        let mut out_rows = Vec::with_capacity(decode.len());
        for &i in decode {
            let (s, base) = (items[i].slot - lo, items[i].base);
            pad_rows[s] = offsets[i] as u32;
            write_at[s * kvh..(s + 1) * kvh].fill(base as u32);
            seen[s] = (base + 1) as u32;
            out_rows.push(s as u32);
        }
        let dev = &self.device;
        let nd = out_rows.len();
        let read = self.decode_read(items, decode, (span, len), seen)?;
        Ok(DecodeGroup {
            lo,
            span,
            len,
            pad_rows: Tensor::from_vec(pad_rows, span, dev)?,
            out_rows: Tensor::from_vec(out_rows, nd, dev)?,
            write_at: Tensor::from_vec(write_at, (span * kvh, 1, 1), dev)?
                .broadcast_as((span * kvh, 1, d))?
                .contiguous()?,
            rows: nd,
            read,
        })
    }

    /// How the generating rows' attention reads: their slots gathered when the range is
    /// mostly other slots ([`GATHER_SPAN`]), else the range (`seen`: per slot of the range,
    /// the positions it may attend to).
    fn decode_read(
        &self,
        items: &[Item<'_>],
        decode: &[usize],
        (span, len): (usize, usize),
        seen: Vec<u32>,
    ) -> Result<DecodeRead> {
        let (dev, nd) = (&self.device, decode.len());
        if span <= GATHER_SPAN * nd {
            let mask = prefix_mask(seen, len, dev)?.reshape((span, 1, 1, len))?;
            return Ok(DecodeRead::Range { mask });
        }
        self.gathered_steps
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let per_slot = self.shape.kv_heads * self.store.max_len;
        let bases = decode
            .iter()
            .map(|&i| (items[i].slot * per_slot) as u32)
            .collect();
        let seen = decode.iter().map(|&i| (items[i].base + 1) as u32).collect();
        Ok(DecodeRead::Gathered {
            at: self.gather_rows(bases, len)?,
            mask: prefix_mask(seen, len, dev)?.reshape((nd, 1, 1, len))?,
        })
    }

    /// `[rows x kv_heads x len]`: the flat rows of a layer buffer (seen as
    /// `[slots x kv_heads x max_len, head_dim]`) holding each generating slot's first `len`
    /// positions, head by head; built on the device from one base per slot.
    fn gather_rows(&self, bases: Vec<u32>, len: usize) -> Result<Tensor> {
        let dev = &self.device;
        let (kvh, max_len) = (self.shape.kv_heads, self.store.max_len);
        let n = bases.len();
        let heads: Vec<u32> = (0..kvh).map(|h| (h * max_len) as u32).collect();
        let at = Tensor::from_vec(bases, (n, 1, 1), dev)?
            .broadcast_add(&Tensor::from_vec(heads, (1, kvh, 1), dev)?)?
            .broadcast_add(&Tensor::arange(0u32, len as u32, dev)?.reshape((1, 1, len))?)?;
        Ok(at.flatten_all()?)
    }

    /// One transformer block over the packed rows.
    fn layer(&self, l: usize, w: &DeviceLayer, x: &Tensor, plan: &Plan) -> Result<Tensor> {
        let s = &self.shape;
        let (qd, kd) = (s.heads * s.head_dim, s.kv_heads * s.head_dim);
        let h = rms_norm(x, &w.attn_norm, s.eps)?;
        let qkv = h.matmul(&w.qkv.t()?)?;
        let q = self.rotate(&qkv.narrow(1, 0, qd)?, s.heads, plan)?;
        let k = self.rotate(&qkv.narrow(1, qd, kd)?, s.kv_heads, plan)?;
        let v = qkv
            .narrow(1, qd + kd, kd)?
            .contiguous()?
            .reshape((plan.total, s.kv_heads, s.head_dim))?;
        self.write_kv(&self.store.k[l], &k, plan)?;
        self.write_kv(&self.store.v[l], &v, plan)?;
        let att = self.attention(l, &q, plan)?;
        let x = (x + att.matmul(&w.wo.t()?)?)?;
        let h = rms_norm(&x, &w.ffn_norm, s.eps)?;
        let gu = h.matmul(&w.gate_up.t()?)?;
        let a = (gu.narrow(1, 0, s.ffn)?.silu()? * gu.narrow(1, s.ffn, s.ffn)?)?;
        Ok((x + a.matmul(&w.down.t()?)?)?)
    }

    /// `[rows, heads * head_dim]` to `[rows, heads, head_dim]`, each row rotated by its angles.
    fn rotate(&self, x: &Tensor, heads: usize, plan: &Plan) -> Result<Tensor> {
        let d = self.shape.head_dim;
        let x = x.contiguous()?.reshape((plan.total, heads, 1, d))?;
        let y = match self.shape.rope {
            DeviceRope::Interleaved => rope_i(&x, &plan.cos, &plan.sin)?,
            DeviceRope::Halves => rope(&x, &plan.cos, &plan.sin)?,
        };
        Ok(y.reshape((plan.total, heads, d))?)
    }

    /// Writes the step's keys (or values), `[rows, kv_heads, head_dim]`, into one layer's
    /// buffer at each row's slot and position.
    fn write_kv(&self, buf: &Tensor, src: &Tensor, plan: &Plan) -> Result<()> {
        let (kvh, d) = (self.shape.kv_heads, self.shape.head_dim);
        if let Some(g) = &plan.decode {
            let rows = src
                .index_select(&g.pad_rows, 0)?
                .reshape((g.span * kvh, 1, d))?;
            let dst =
                buf.narrow(0, g.lo, g.span)?
                    .reshape((g.span * kvh, self.store.max_len, d))?;
            dst.scatter_set(&g.write_at, &rows, 1)?;
        }
        for c in &plan.chunks {
            let rows = src
                .narrow(0, c.off, c.n)?
                .transpose(0, 1)?
                .contiguous()?
                .unsqueeze(0)?;
            buf.narrow(0, c.slot, 1)?.slice_set(&rows, 2, c.base)?;
        }
        Ok(())
    }

    /// Every row's attention output, `[rows, heads * head_dim]` in packed order.
    fn attention(&self, l: usize, q: &Tensor, plan: &Plan) -> Result<Tensor> {
        let s = &self.shape;
        let (kvh, d) = (s.kv_heads, s.head_dim);
        let group = s.heads / kvh;
        let (kb, vb) = (&self.store.k[l], &self.store.v[l]);
        let mut parts = Vec::with_capacity(plan.chunks.len() + 1);
        if let Some(g) = &plan.decode {
            parts.push(self.decode_attention(l, q, g)?);
        }
        for c in &plan.chunks {
            let lc = c.base + c.n;
            let q = q
                .narrow(0, c.off, c.n)?
                .reshape((c.n, kvh, group, d))?
                .permute((1, 2, 0, 3))?
                .contiguous()?
                .reshape((1, kvh, group * c.n, d))?;
            let k = kb.narrow(0, c.slot, 1)?.narrow(2, 0, lc)?;
            let v = vb.narrow(0, c.slot, 1)?.narrow(2, 0, lc)?;
            let scores = q.matmul(&k.t()?)?.reshape((kvh, group, c.n, lc))?;
            let probs = self
                .probs(&scores, &c.mask)?
                .reshape((1, kvh, group * c.n, lc))?;
            let out = probs
                .matmul(&v)?
                .reshape((kvh, group, c.n, d))?
                .permute((2, 0, 1, 3))?
                .contiguous()?
                .reshape((c.n, s.heads * d))?;
            parts.push(out);
        }
        Ok(Tensor::cat(&parts, 0)?)
    }

    /// The generating rows' attention output, `[rows, heads * head_dim]` in packed order.
    fn decode_attention(&self, l: usize, q: &Tensor, g: &DecodeGroup) -> Result<Tensor> {
        let s = &self.shape;
        let (kvh, d) = (s.kv_heads, s.head_dim);
        let group = s.heads / kvh;
        let (kb, vb) = (&self.store.k[l], &self.store.v[l]);
        match &g.read {
            DecodeRead::Range { mask } => {
                let q = q
                    .index_select(&g.pad_rows, 0)?
                    .reshape((g.span, kvh, group, d))?;
                let k = kb.narrow(0, g.lo, g.span)?.narrow(2, 0, g.len)?;
                let v = vb.narrow(0, g.lo, g.span)?.narrow(2, 0, g.len)?;
                let probs = self.probs(&q.matmul(&k.t()?)?, mask)?;
                let out = probs.matmul(&v)?.reshape((g.span, s.heads * d))?;
                Ok(out.index_select(&g.out_rows, 0)?)
            }
            DecodeRead::Gathered { at, mask } => {
                let q = q.narrow(0, 0, g.rows)?.reshape((g.rows, kvh, group, d))?;
                let gather = |buf: &Tensor| -> Result<Tensor> {
                    let rows = buf.elem_count() / d;
                    Ok(buf
                        .reshape((rows, d))?
                        .index_select(at, 0)?
                        .reshape((g.rows, kvh, g.len, d))?)
                };
                let (k, v) = (gather(kb)?, gather(vb)?);
                let probs = self.probs(&q.matmul(&k.t()?)?, mask)?;
                Ok(probs.matmul(&v)?.reshape((g.rows, s.heads * d))?)
            }
        }
    }

    /// Scaled, masked softmax of attention scores, computed in f32 and returned in the
    /// working dtype.
    fn probs(&self, scores: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let scale = 1.0 / (self.shape.head_dim as f64).sqrt();
        let s = scores
            .to_dtype(DType::F32)?
            .affine(scale, 0.0)?
            .broadcast_add(mask)?;
        Ok(softmax_last_dim(&s)?.to_dtype(self.shape.dtype)?)
    }
}

/// Far below any attention score: adding it makes a position's weight exactly 0 after the
/// softmax, as minus infinity would, while staying finite for the arithmetic that builds it.
const MASKED: f64 = -1e30;

/// `[rows, cols]`: 0 where column `c < seen[row]`, [`MASKED`] elsewhere. Built on the device
/// from `rows + cols` integers, so a step uploads those instead of `rows x cols` floats (a
/// 512-token chunk at position 3,000 would be 7 MB).
fn prefix_mask(seen: Vec<u32>, cols: usize, dev: &candle_core::Device) -> Result<Tensor> {
    let rows = seen.len();
    let seen = Tensor::from_vec(seen, (rows, 1), dev)?;
    let at = Tensor::arange(0u32, cols as u32, dev)?.reshape((1, cols))?;
    let allowed = at.broadcast_lt(&seen)?.to_dtype(DType::F32)?;
    Ok(allowed.affine(-MASKED, MASKED)?)
}

/// `[n, base + n]`: token `i` sees every position before `base` and its own branch up to
/// itself (a plain chunk: everything up to itself, built on the device).
fn chunk_mask(item: &Item<'_>, dev: &candle_core::Device) -> Result<Tensor> {
    let (n, base) = (item.tokens.len(), item.base);
    let lc = base + n;
    if !matches!(item.ask, Ask::Tree { .. }) {
        let seen = (0..n).map(|i| (base + i + 1) as u32).collect();
        return prefix_mask(seen, lc, dev);
    }
    let mut mask = vec![f32::NEG_INFINITY; n * lc];
    for (i, row) in mask.chunks_exact_mut(lc).enumerate() {
        row[..base].fill(0.0);
        row[base + item.first(i)..=base + i].fill(0.0);
    }
    Ok(Tensor::from_vec(mask, (n, lc), dev)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_mask_opens_each_row_up_to_its_length_only() {
        let dev = candle_core::Device::Cpu;
        let mask = prefix_mask(vec![2, 1, 4], 4, &dev).unwrap();
        let rows = mask.to_vec2::<f32>().unwrap();
        let m = MASKED as f32;
        assert_eq!(
            rows,
            vec![vec![0.0, 0.0, m, m], vec![0.0, m, m, m], vec![0.0; 4]]
        );
        // Added to scores, a masked position weighs exactly nothing after the softmax.
        let scores = Tensor::new(&[[3.0f32, -2.0, 50.0, 7.0]], &dev).unwrap();
        let probs = softmax_last_dim(
            &scores
                .broadcast_add(&mask.narrow(0, 0, 1).unwrap())
                .unwrap(),
        )
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
        assert_eq!(probs[0][2..], [0.0, 0.0]);
        assert!((probs[0][0] + probs[0][1] - 1.0).abs() < 1e-6);
    }
}
