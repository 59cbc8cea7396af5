//! Random-weight models of named LLaMA shapes, for measuring the device backend where no
//! model file can be carried (`autoj gpu-bench` on a GPU machine): the weights are drawn
//! from a seed, on the host for small reproducible models or on the device itself for
//! large ones (a 13B-shaped model in seconds, with no file and no download).

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use super::slots::{KvStore, StoreSize};
use super::{DeviceLayer, DeviceModel, DeviceRope, DeviceShape};
use crate::engine::checkpoint::rope_inv_freq;
use crate::error::{JudgeError, Result};

/// Rotary base of the LLaMA-2 family.
const ROPE_BASE: f32 = 10_000.0;

impl DeviceShape {
    /// A LLaMA-2 family shape with `heads` query and key/value heads of 128 dimensions, so
    /// every named shape is spelled the same way.
    fn llama(layers: usize, hidden: usize, heads: usize, ffn: usize, vocab: usize) -> Self {
        Self {
            layers,
            hidden,
            heads,
            kv_heads: heads,
            head_dim: hidden / heads,
            ffn,
            vocab,
            eps: 1e-5,
            dtype: DType::F32,
            rope: DeviceRope::Halves,
        }
    }

    /// LLaMA-2 13B (Auto-J's base): 40 layers, 5120 wide, 40 heads, feed-forward 13824.
    pub fn llama2_13b(vocab: usize) -> Self {
        Self::llama(40, 5120, 40, 13_824, vocab)
    }

    /// LLaMA-2 7B: 32 layers, 4096 wide, 32 heads, feed-forward 11008.
    pub fn llama2_7b(vocab: usize) -> Self {
        Self::llama(32, 4096, 32, 11_008, vocab)
    }

    /// A two-layer model, 256 wide with 4 query and 2 key/value heads (grouped-query
    /// attention is exercised), small enough to run on the CPU in tests and dry runs.
    pub fn tiny(vocab: usize) -> Self {
        Self {
            kv_heads: 2,
            ..Self::llama(2, 256, 4, 512, vocab)
        }
    }

    /// The shape called `name` (`llama2-13b`, `llama2-7b`, `tiny`), for command lines.
    pub fn named(name: &str, vocab: usize) -> Option<Self> {
        match name {
            "llama2-13b" => Some(Self::llama2_13b(vocab)),
            "llama2-7b" => Some(Self::llama2_7b(vocab)),
            "tiny" => Some(Self::tiny(vocab)),
            _ => None,
        }
    }

    /// Bytes of weights in `self.dtype`: what one decode step reads at least.
    pub fn weight_bytes(&self) -> usize {
        let qkv = (self.heads + 2 * self.kv_heads) * self.head_dim * self.hidden;
        let wo = self.hidden * self.heads * self.head_dim;
        let ffn = 3 * self.ffn * self.hidden;
        let per_layer = qkv + wo + ffn + 2 * self.hidden;
        let elems = self.layers * per_layer + 2 * self.vocab * self.hidden + self.hidden;
        elems * self.dtype.size_in_bytes()
    }
}

/// How many key/value slots a model gets and how long each is.
#[derive(Debug, Clone, Copy)]
pub struct SlotLayout {
    /// Sequences that can run at once.
    pub slots: usize,
    /// Positions each holds.
    pub slot_len: usize,
}

/// Draws weight tensors: on the CPU from a seeded generator of our own (the same numbers on
/// every machine), elsewhere with the device's own generator (fast for billions of values).
struct Draw {
    device: Device,
    dtype: DType,
    state: u64,
}

impl Draw {
    /// A `dims` tensor of normal values with standard deviation `std`.
    fn normal(&mut self, dims: &[usize], std: f64) -> Result<Tensor> {
        let t = if self.device.is_cpu() {
            let n = dims.iter().product();
            let values: Vec<f32> = (0..n).map(|_| self.next_normal() * std as f32).collect();
            Tensor::from_vec(values, dims, &Device::Cpu)?
        } else {
            Tensor::randn(0f32, std as f32, dims, &self.device)?
        };
        Ok(t.to_dtype(self.dtype)?)
    }

    /// A `[n]` tensor of ones (norm weights).
    fn ones(&self, n: usize) -> Result<Tensor> {
        Ok(Tensor::ones(n, self.dtype, &self.device)?)
    }

    /// splitmix64: a small, well-mixed generator with a 64-bit state.
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// One standard normal value (Box-Muller over two uniforms in (0, 1]).
    fn next_normal(&mut self) -> f32 {
        let u = |v: u64| ((v >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let (a, b) = (u(self.next_u64()), u(self.next_u64()));
        ((-2.0 * a.ln()).sqrt() * (std::f64::consts::TAU * b).cos()) as f32
    }
}

impl DeviceModel {
    /// A model of `shape` (its `dtype` is the working dtype) with random weights drawn from
    /// `seed` on `device`, and a key/value store of `layout`. Projections have standard
    /// deviation 1/sqrt(fan-in) so activations and logits stay near unit scale through the
    /// layers; norms are ones. On the CPU the weights are the same for the same seed on
    /// every machine; on CUDA they come from the device's generator seeded with `seed`.
    pub fn random(
        shape: &DeviceShape,
        layout: SlotLayout,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        check(shape)?;
        if !device.is_cpu() {
            device.set_seed(seed)?;
        }
        let mut draw = Draw {
            device: device.clone(),
            dtype: shape.dtype,
            state: seed,
        };
        let (h, hd) = (shape.hidden, shape.head_dim);
        let inv = |fan_in: usize| 1.0 / (fan_in as f64).sqrt();
        let layers = (0..shape.layers)
            .map(|_| {
                Ok(DeviceLayer {
                    attn_norm: draw.ones(h)?,
                    qkv: draw.normal(&[(shape.heads + 2 * shape.kv_heads) * hd, h], inv(h))?,
                    wo: draw.normal(&[h, shape.heads * hd], inv(shape.heads * hd))?,
                    ffn_norm: draw.ones(h)?,
                    gate_up: draw.normal(&[2 * shape.ffn, h], inv(h))?,
                    down: draw.normal(&[h, shape.ffn], inv(shape.ffn))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let embed = draw.normal(&[shape.vocab, h], 1.0)?;
        let lm_head = draw.normal(&[shape.vocab, h], inv(h))?;
        let norm = draw.ones(h)?;
        Self::assemble(
            shape.clone(),
            layers,
            [embed, norm, lm_head],
            layout,
            device,
        )
    }

    /// A copy of this model's weights on `device` in `dtype` (e.g. a CPU-built reference
    /// model copied to a GPU in its serving dtype), with a fresh key/value store of `layout`.
    pub fn copy_to(&self, device: &Device, dtype: DType, layout: SlotLayout) -> Result<Self> {
        let mv = |t: &Tensor| -> Result<Tensor> { Ok(t.to_device(device)?.to_dtype(dtype)?) };
        let layers = self
            .layers
            .iter()
            .map(|l| {
                Ok(DeviceLayer {
                    attn_norm: mv(&l.attn_norm)?,
                    qkv: mv(&l.qkv)?,
                    wo: mv(&l.wo)?,
                    ffn_norm: mv(&l.ffn_norm)?,
                    gate_up: mv(&l.gate_up)?,
                    down: mv(&l.down)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let shape = DeviceShape {
            dtype,
            ..self.shape.clone()
        };
        let outer = [mv(&self.embed)?, mv(&self.norm)?, mv(&self.lm_head)?];
        Self::assemble(shape, layers, outer, layout, device)
    }

    /// The model from its parts, with a zeroed key/value store of `layout`.
    fn assemble(
        shape: DeviceShape,
        layers: Vec<DeviceLayer>,
        [embed, norm, lm_head]: [Tensor; 3],
        layout: SlotLayout,
        device: &Device,
    ) -> Result<Self> {
        let size = StoreSize {
            layers: shape.layers,
            kv_heads: shape.kv_heads,
            head_dim: shape.head_dim,
            slots: layout.slots.max(1),
            max_len: layout.slot_len.max(1),
        };
        let store = KvStore::new(size, shape.dtype, device)?;
        Ok(Self {
            layers,
            embed,
            norm,
            lm_head,
            inv_freq: rope_inv_freq(shape.head_dim, ROPE_BASE),
            device: device.clone(),
            store: Arc::new(store),
            gathered_steps: Default::default(),
            shape,
        })
    }
}

/// Refuses shapes whose heads do not divide the width or whose query heads are not a
/// multiple of the key/value heads.
fn check(shape: &DeviceShape) -> Result<()> {
    let ok = shape.heads > 0
        && shape.kv_heads > 0
        && shape.heads.is_multiple_of(shape.kv_heads)
        && shape.head_dim * shape.heads == shape.hidden
        && shape.vocab > 0;
    if ok {
        Ok(())
    } else {
        Err(JudgeError::InvalidArgument(format!(
            "a random model cannot have this shape: {shape:?}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::scheduler::{Backend, StepInput, Want};

    const LAYOUT: SlotLayout = SlotLayout {
        slots: 2,
        slot_len: 32,
    };

    fn next_token_logits(model: &DeviceModel, prompt: &[u32]) -> Vec<f32> {
        let mut kv = model.new_kv().unwrap();
        let mut inputs = [StepInput {
            kv: &mut kv,
            tokens: prompt,
            want: Want::Last,
        }];
        model.forward(&mut inputs).unwrap().remove(0)
    }

    #[test]
    fn the_same_seed_gives_the_same_cpu_model_and_another_seed_another() {
        let shape = DeviceShape::tiny(300);
        let a = DeviceModel::random(&shape, LAYOUT, 7, &Device::Cpu).unwrap();
        let b = DeviceModel::random(&shape, LAYOUT, 7, &Device::Cpu).unwrap();
        let c = DeviceModel::random(&shape, LAYOUT, 8, &Device::Cpu).unwrap();
        let prompt = [1, 5, 9, 200];
        let (la, lb, lc) = (
            next_token_logits(&a, &prompt),
            next_token_logits(&b, &prompt),
            next_token_logits(&c, &prompt),
        );
        assert_eq!(la.len(), 300);
        assert_eq!(la, lb);
        assert_ne!(la, lc);
        assert!(la.iter().all(|v| v.is_finite()));
        let spread = la.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(
            spread > 0.1 && spread < 100.0,
            "logits near unit scale: {spread}"
        );
    }

    #[test]
    fn a_copy_computes_what_the_original_does() {
        let shape = DeviceShape::tiny(300);
        let a = DeviceModel::random(&shape, LAYOUT, 3, &Device::Cpu).unwrap();
        let b = a.copy_to(&Device::Cpu, DType::F32, LAYOUT).unwrap();
        let prompt = [4, 8, 15, 16, 23, 42];
        assert_eq!(
            next_token_logits(&a, &prompt),
            next_token_logits(&b, &prompt)
        );
        assert_eq!(b.slots(), 2);
        assert_eq!(b.slot_len(), 32);
    }

    #[test]
    fn named_shapes_and_their_weight_bytes() {
        let s = DeviceShape::named("llama2-13b", 32_000).unwrap();
        assert_eq!(
            (s.layers, s.hidden, s.heads, s.kv_heads, s.ffn),
            (40, 5120, 40, 40, 13_824)
        );
        // 13.0e9 parameters in f32.
        let params = s.weight_bytes() / 4;
        assert!(
            (13_000_000_000..13_100_000_000).contains(&params),
            "{params}"
        );
        // 800 KiB of keys and values per position in bf16.
        let bf16 = DeviceShape {
            dtype: DType::BF16,
            ..s
        };
        assert_eq!(bf16.kv_bytes_per_token(), 40 * 2 * 5120 * 2);
        assert!(DeviceShape::named("gpt-5", 10).is_none());
        let bad = DeviceShape {
            kv_heads: 3,
            ..DeviceShape::tiny(10)
        };
        assert!(DeviceModel::random(&bad, LAYOUT, 0, &Device::Cpu).is_err());
    }
}
