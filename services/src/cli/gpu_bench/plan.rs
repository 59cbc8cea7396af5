//! Sizing the model steps to the card before anything is allocated: weights, key/value
//! slots, the prefix cache's device copies and the working memory of the largest step are
//! added up against the device's memory, so `decode` and `grpc` fit an 80 GB H100 as well
//! as a 141 GB H200 instead of running out of memory before they measure.
//!
//! [`plan`] is the one place the bytes are added up, a pure function of the shape, the
//! memory and what the step wants. The steps call it with the device's free memory (or
//! `--gpu-memory-gib`) and report the plan in their JSON; `gpu-bench plan` calls the same
//! sizing for a card of a given size without opening a device, which is what
//! `scripts/gpu-check` prints (on a dry run too).

use autoj_judge::engine::device::DeviceShape;
use clap::Args;
use serde::Serialize;
use serde_json::{json, Value};

use crate::config::ConfigError;
use crate::gpu::memory_info;

/// Bytes in a GiB.
pub(super) const GIB: u64 = 1 << 30;

/// Memory that does not grow with the model: the CUDA context, cuBLAS's handle and
/// workspace, candle's loaded kernel modules.
pub const CONTEXT_RESERVE_BYTES: u64 = GIB;

/// Part of the memory, in thousandths, left out of every plan: the allocator's rounding and
/// fragmentation, and whatever the working-memory estimate misses.
pub const MARGIN_PER_MILLE: u64 = 50;

/// Copies of a row of attention scores a step holds at once: the product in the working
/// dtype, then in f32 scaled, masked and softmaxed (counted as f32 each).
const SCORE_COPIES: u64 = 4;

/// What a step would run with memory to spare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wanted {
    /// Sequences that decode together, at most (one slot each).
    pub sequences: usize,
    /// Slots beside them (prompts that arrive while they decode).
    pub spare_slots: usize,
    /// Context positions of a slot (a prompt); may shrink down to `min_context`.
    pub context: usize,
    /// The shortest context worth running; `context` when it must not shrink.
    pub min_context: usize,
    /// Positions a slot holds beyond its context (decode steps, new tokens, template).
    pub tail: usize,
    /// Key/value positions held beside the slots (the prefix cache's device copies).
    pub prefix_positions: usize,
    /// Rows of the largest step (decode tokens plus a prompt chunk, or a whole prompt).
    pub step_rows: usize,
    /// Tokens of the longest prompt piece one step attends (a chunk or a whole prompt).
    pub chunk: usize,
}

/// What a step runs, and what it takes of the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MemoryPlan {
    /// Memory planned against (the card's, or its free part); `None`: no bound (the CPU).
    pub memory_bytes: Option<u64>,
    /// The weights in the serving dtype.
    pub weight_bytes: u64,
    /// Key/value bytes of one position (keys and values of every layer).
    pub kv_bytes_per_position: u64,
    /// Key/value slots allocated.
    pub slots: usize,
    /// Sequences that decode together (the slots less the spare ones).
    pub sequences: usize,
    /// Context positions of a slot.
    pub context: usize,
    /// Positions of a slot: the context and the tail.
    pub slot_len: usize,
    /// `slots x slot_len x kv_bytes_per_position`.
    pub kv_store_bytes: u64,
    /// The prefix cache's device copies.
    pub prefix_cache_bytes: u64,
    /// Working memory of the largest step, and the context's reserve.
    pub workspace_bytes: u64,
    /// Everything above: what the step takes at most.
    pub planned_bytes: u64,
    /// True when the memory made the plan smaller than wanted.
    pub shrunk: bool,
}

impl Wanted {
    /// Positions of a slot of `context` positions.
    fn slot_len(&self, context: usize) -> usize {
        context + self.tail
    }

    /// A clear error for sizes nothing can be planned for.
    fn check(&self) -> Result<(), ConfigError> {
        let bad = |what: &str| Err(ConfigError::Range(format!("nothing to plan: {what}")));
        if self.sequences == 0 {
            return bad("no sequence decodes (concurrency 0)");
        }
        if self.context == 0 || self.min_context == 0 {
            return bad("prompts of 0 tokens");
        }
        if self.min_context > self.context {
            return bad("the shortest context is longer than the context");
        }
        Ok(())
    }
}

/// Working memory of the largest step `wanted` allows, on top of the weights and the
/// key/value store: the packed rows through one layer (norms, Q/K/V, attention output,
/// gate/up and the activation), the attention of every slot's decode row (a contiguous
/// copy of the keys and values it reads, should a strided batched product need one, and
/// its scores) and of the longest prompt piece, the logits read back, and the CUDA
/// context's reserve. An upper bound: steps free it as each layer ends.
pub fn workspace_bytes(shape: &DeviceShape, wanted: &Wanted) -> u64 {
    let b = shape.dtype.size_in_bytes() as u64;
    let slots = (wanted.sequences + wanted.spare_slots) as u64;
    let len = wanted.slot_len(wanted.context) as u64;
    let rows = (wanted.step_rows as u64).max(slots);
    let (hidden, ffn, heads) = (shape.hidden as u64, shape.ffn as u64, shape.heads as u64);
    let qkv = ((shape.heads + 2 * shape.kv_heads) * shape.head_dim) as u64;
    let kv_width = (shape.kv_heads * shape.head_dim) as u64;
    let activations = rows * (4 * hidden + qkv + 3 * ffn) * b;
    let scores = SCORE_COPIES * heads * 4;
    let decode = slots * len * (2 * kv_width * b + scores);
    let chunk = len * (wanted.chunk as u64 * scores + 2 * kv_width * b);
    let logits = rows * shape.vocab as u64 * (b + 4);
    CONTEXT_RESERVE_BYTES + activations + decode + chunk + logits
}

/// Sizes a step to `memory` bytes (`None`: no bound). What the step wants when it fits in
/// the memory less [`MARGIN_PER_MILLE`]; else every slot with a shorter context, as long as
/// it stays at least `min_context`; else slots of `min_context` positions, as many as fit.
/// Errors when not even the spare slots and one sequence fit, naming the memory needed.
pub fn plan(
    shape: &DeviceShape,
    memory: Option<u64>,
    wanted: &Wanted,
) -> Result<MemoryPlan, ConfigError> {
    wanted.check()?;
    let per_position = (shape.kv_bytes_per_token() as u64).max(1);
    let prefix = wanted.prefix_positions as u64 * per_position;
    let base = MemoryPlan {
        memory_bytes: memory,
        weight_bytes: shape.weight_bytes() as u64,
        kv_bytes_per_position: per_position,
        slots: 0,
        sequences: 0,
        context: 0,
        slot_len: 0,
        kv_store_bytes: 0,
        prefix_cache_bytes: prefix,
        workspace_bytes: workspace_bytes(shape, wanted),
        planned_bytes: 0,
        shrunk: false,
    };
    let fixed = base.weight_bytes + prefix + base.workspace_bytes;
    let sized = |slots: usize, context: usize| {
        let slot_len = wanted.slot_len(context);
        let kv = slots as u64 * slot_len as u64 * per_position;
        MemoryPlan {
            slots,
            sequences: slots - wanted.spare_slots,
            context,
            slot_len,
            kv_store_bytes: kv,
            planned_bytes: fixed + kv,
            shrunk: slots < wanted.sequences + wanted.spare_slots || context < wanted.context,
            ..base
        }
    };
    let all = wanted.sequences + wanted.spare_slots;
    let full = sized(all, wanted.context);
    let Some(memory) = memory else {
        return Ok(full);
    };
    let usable = memory / 1000 * (1000 - MARGIN_PER_MILLE);
    if full.planned_bytes <= usable {
        return Ok(full);
    }
    let room = usable.saturating_sub(fixed);
    let positions = (room / (per_position * all as u64)) as usize;
    if positions >= wanted.slot_len(wanted.min_context) {
        return Ok(sized(all, positions - wanted.tail));
    }
    let shortest = wanted.slot_len(wanted.min_context) as u64 * per_position;
    let fit = (room / shortest) as usize;
    if fit > wanted.spare_slots {
        return Ok(sized(fit.min(all), wanted.min_context));
    }
    // The card that holds it with the margin, rounded up to a tenth of a GiB.
    let needed = fixed + (wanted.spare_slots as u64 + 1) * shortest;
    let card = (needed / (1000 - MARGIN_PER_MILLE) + 1) * 1000 + (1 << 20);
    let card_gib = (gib(card) * 10.0).ceil() / 10.0;
    Err(ConfigError::Range(format!(
        "{:.1} GiB of device memory is too little: weights of {:.1} GiB, working memory of \
         {:.1} GiB and {} slot(s) of {} positions need a card of at least {:.1} GiB",
        gib(memory),
        gib(base.weight_bytes),
        gib(base.workspace_bytes),
        wanted.spare_slots + 1,
        wanted.slot_len(wanted.min_context),
        card_gib,
    )))
}

/// `bytes` in GiB.
pub fn gib(bytes: u64) -> f64 {
    bytes as f64 / GIB as f64
}

/// A `--gpu-memory-gib` value: a positive number of GiB, fractions allowed.
pub fn parse_gib(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 1e6 => Ok(v),
        _ => Err(format!(
            "`{s}` is not a size in GiB: give a positive number, such as 80 (an H100) or 141 \
             (an H200)"
        )),
    }
}

/// The memory a step sizes itself to.
#[derive(Debug, Clone, Args)]
pub struct MemoryArgs {
    /// Plan against this much device memory, in GiB, instead of the device's free memory
    /// (80: an H100's, 141: an H200's); on the CPU without it nothing bounds the sizes.
    #[arg(long, env = "AUTOJ_GPU_MEMORY_GIB", value_parser = parse_gib)]
    pub gpu_memory_gib: Option<f64>,
}

impl MemoryArgs {
    /// Bytes to plan against: `--gpu-memory-gib`, else the device's free memory (read from
    /// the device before the step allocates), else `None` (the CPU).
    pub fn budget(&self, device: &candle_core::Device) -> anyhow::Result<Option<u64>> {
        if let Some(g) = self.gpu_memory_gib {
            return Ok(Some((g * GIB as f64) as u64));
        }
        Ok(memory_info(device)?.map(|m| m.free))
    }
}

/// `v` rounded down to a tenth, so a rounded figure never exceeds the exact one.
pub fn round1(v: f64) -> f64 {
    (v * 10.0).floor() / 10.0
}

/// A plan's figures for a step's JSON: every field, and the byte counts in GiB.
pub fn plan_json(plan: &MemoryPlan) -> Value {
    let mut v = serde_json::to_value(plan).unwrap_or(Value::Null);
    v["weight_gib"] = json!(round1(gib(plan.weight_bytes)));
    v["kv_store_gib"] = json!(round1(gib(plan.kv_store_bytes)));
    v["planned_gib"] = json!(round1(gib(plan.planned_bytes)));
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    /// LLaMA-2-13B in bf16 with LLaMA-2's vocabulary.
    fn llama13b() -> DeviceShape {
        DeviceShape {
            dtype: DType::BF16,
            ..DeviceShape::llama2_13b(32_000)
        }
    }

    /// gRPC's workload: 64 sequences of 1000 prompt tokens and 400 new ones, which must
    /// not shrink, beside a 4096-position prefix cache.
    fn grpc_like() -> Wanted {
        Wanted {
            sequences: 64,
            spare_slots: 0,
            context: 1000,
            min_context: 1000,
            tail: 400 + 288,
            prefix_positions: 4096,
            step_rows: 512,
            chunk: 512,
        }
    }

    /// Decode's workload: 64 sequences and an arriving one, 1000-token contexts that may
    /// halve.
    fn decode_like() -> Wanted {
        Wanted {
            sequences: 64,
            spare_slots: 1,
            context: 1000,
            min_context: 500,
            tail: 153,
            prefix_positions: 0,
            step_rows: 1000,
            chunk: 1000,
        }
    }

    fn card(gib: u64) -> Option<u64> {
        Some(gib * GIB)
    }

    /// What a plan may take of a card of `gib` GiB: all of it but the margin.
    fn usable(gib: u64) -> u64 {
        gib * GIB / 1000 * (1000 - MARGIN_PER_MILLE)
    }

    #[test]
    fn a_position_of_13b_bf16_is_40_layers_of_keys_and_values_5120_wide() {
        let p = plan(&llama13b(), None, &grpc_like()).unwrap();
        assert_eq!(p.kv_bytes_per_position, 40 * 2 * 5120 * 2);
        assert_eq!(p.kv_store_bytes, 64 * 1688 * 819_200);
        assert_eq!(p.weight_bytes, llama13b().weight_bytes() as u64);
        assert_eq!(
            p.planned_bytes,
            p.weight_bytes + p.kv_store_bytes + p.prefix_cache_bytes + p.workspace_bytes
        );
        assert!(!p.shrunk);
    }

    #[test]
    fn what_is_wanted_when_it_fits_the_big_card() {
        for wanted in [grpc_like(), decode_like()] {
            let p = plan(&llama13b(), card(141), &wanted).unwrap();
            assert!(!p.shrunk, "{p:?}");
            assert_eq!(p.sequences, 64);
            assert_eq!(p.context, 1000);
            assert!(p.planned_bytes <= usable(141), "{p:?}");
        }
    }

    #[test]
    fn decode_keeps_its_sequences_with_shorter_contexts_on_80_gb() {
        let p = plan(&llama13b(), card(80), &decode_like()).unwrap();
        assert!(p.shrunk);
        assert_eq!((p.slots, p.sequences), (65, 64));
        assert!((500..1000).contains(&p.context), "{p:?}");
        assert_eq!(p.slot_len, p.context + 153);
        assert!(p.planned_bytes <= usable(80), "{p:?}");
        // The room is used: one position more per slot would not fit.
        let more = p.planned_bytes + 65 * p.kv_bytes_per_position;
        assert!(more > usable(80), "{p:?}");
    }

    #[test]
    fn grpc_keeps_its_lengths_with_fewer_slots_on_80_gb() {
        let p = plan(&llama13b(), card(80), &grpc_like()).unwrap();
        assert!(p.shrunk);
        assert_eq!((p.context, p.slot_len), (1000, 1688));
        assert!((16..64).contains(&p.slots), "{p:?}");
        assert_eq!(p.sequences, p.slots);
        assert!(p.planned_bytes <= usable(80), "{p:?}");
        let one_more = p.planned_bytes + 1688 * p.kv_bytes_per_position;
        assert!(one_more > usable(80), "{p:?}");
    }

    #[test]
    fn a_bigger_card_plans_more() {
        for wanted in [grpc_like(), decode_like()] {
            let small = plan(&llama13b(), card(80), &wanted).unwrap();
            let big = plan(&llama13b(), card(141), &wanted).unwrap();
            assert!(big.planned_bytes > small.planned_bytes);
            assert!(big.slots * big.slot_len > small.slots * small.slot_len);
        }
    }

    #[test]
    fn a_card_too_small_for_the_weights_is_an_error_naming_what_is_needed() {
        let e = plan(&llama13b(), card(24), &grpc_like()).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("24.0 GiB of device memory is too little"),
            "{text}"
        );
        assert!(text.contains("need a card of at least"), "{text}");
        // The size it names is enough.
        let need: f64 = text
            .rsplit("at least ")
            .next()
            .and_then(|t| t.trim_end_matches(" GiB").parse().ok())
            .unwrap();
        let p = plan(&llama13b(), Some((need * GIB as f64) as u64), &grpc_like()).unwrap();
        assert_eq!(p.slots, 1);
    }

    #[test]
    fn nothing_to_plan_is_an_error() {
        let none = Wanted {
            sequences: 0,
            ..grpc_like()
        };
        assert!(plan(&llama13b(), None, &none).is_err());
        let inverted = Wanted {
            min_context: 2000,
            ..grpc_like()
        };
        assert!(plan(&llama13b(), card(80), &inverted).is_err());
    }

    #[test]
    fn sizes_in_gib_are_checked() {
        assert_eq!(parse_gib("80"), Ok(80.0));
        assert_eq!(parse_gib("79.5"), Ok(79.5));
        for bad in ["0", "-1", "inf", "NaN", "eighty", ""] {
            assert!(parse_gib(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rounding_never_rounds_up() {
        assert_eq!(round1(79.99), 79.9);
        assert_eq!(round1(80.0), 80.0);
    }
}
