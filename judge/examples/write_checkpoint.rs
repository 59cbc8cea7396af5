//! Writes a random LLaMA checkpoint as Auto-J 13B is published: fp16 PyTorch `.bin` shards
//! (torch's zip format, through testkit's writer) with `pytorch_model.bin.index.json`,
//! `config.json`, the tiny LLaMA-style `tokenizer.json` of testkit (356 pieces;
//! embedding rows past it are padding rows, as Auto-J 13B has 128 of them) and a
//! `tokenizer_config.json`. For benchmarks and interop checks by hand (llama.cpp's
//! converter and quantizer, `autoj quantize`), not for CI.
//!
//! Weights are Gaussian from a fixed seed (each matrix N(0, 1/cols), the output N(0, 4/cols)
//! so the logits spread, norms 1 + N(0, 0.01)), generated in parallel in fixed chunks so
//! the same arguments give the same bytes on any machine. Tensors are generated shard by
//! shard: the writer holds one shard (plus one tensor's bytes) at a time, so a 7B-shaped
//! checkpoint of ~13.5 GB took 2.4 GB peak RSS with 7 shards (150 s on 2 cores).
//!
//! ```sh
//! # a small model for the llama.cpp interop checks
//! cargo run --release -p autoj-judge --features testkit --example write_checkpoint -- \
//!     models/interop/rand-512 512 4 8 4 1408 356 2
//! # LLaMA-2-7B's shape with Auto-J's 32,128 rows, ~2 GB shards
//! cargo run --release -p autoj-judge --features testkit --example write_checkpoint -- \
//!     models/interop/rand-7b 4096 32 32 32 11008 32128 7
//! ```

use std::path::{Path, PathBuf};
use std::time::Instant;

use autoj_judge::testkit::{spm::spm_tokenizer, torch_writer};
use candle_core::{Device, Tensor};
use half::f16;
use rayon::prelude::*;

/// How to call this example.
const USAGE: &str = "usage: write_checkpoint OUT_DIR HIDDEN LAYERS HEADS KV_HEADS INTERMEDIATE \
                     VOCAB_ROWS SHARDS [SEED] (VOCAB_ROWS at least the tokenizer's 356 pieces)";

/// Values generated from one seed: the chunking fixes the bytes whatever the thread count.
const CHUNK: usize = 1 << 16;

/// What a tensor holds.
#[derive(Clone, Copy)]
enum Fill {
    /// N(0, (gain / sqrt(cols))^2) for every row; rows from `pad_from` on scaled by 0.1
    /// (padding rows: small, so they never win an argmax).
    Matrix { gain: f32, pad_from: usize },
    /// 1 + N(0, 0.01).
    Norm,
}

struct Spec {
    name: String,
    dims: Vec<usize>,
    fill: Fill,
}

impl Spec {
    fn numel(&self) -> usize {
        self.dims.iter().product()
    }
}

/// SplitMix64: a tiny, well-mixed generator; one per chunk.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }
}

/// The tensor's values as f16, chunk `c` from seed (`seed`, `index`, `c`).
fn generate(spec: &Spec, seed: u64, index: usize) -> Vec<f16> {
    let cols = *spec.dims.last().unwrap_or(&1);
    let mut out = vec![f16::ZERO; spec.numel()];
    out.par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(c, chunk)| {
            let mut rng =
                SplitMix(seed ^ ((index as u64) << 40) ^ (c as u64).wrapping_mul(0x2545_F491));
            // Box-Muller, two normals per draw.
            let mut spare: Option<f64> = None;
            for (k, v) in chunk.iter_mut().enumerate() {
                let z = match spare.take() {
                    Some(z) => z,
                    None => {
                        let (u1, u2) = (rng.unit(), rng.unit());
                        let r = (-2.0 * u1.ln()).sqrt();
                        let a = std::f64::consts::TAU * u2;
                        spare = Some(r * a.sin());
                        r * a.cos()
                    }
                } as f32;
                *v = f16::from_f32(match spec.fill {
                    Fill::Matrix { gain, pad_from } => {
                        let row = (c * CHUNK + k) / cols;
                        let s = gain / (cols as f32).sqrt();
                        if row >= pad_from {
                            z * s * 0.1
                        } else {
                            z * s
                        }
                    }
                    Fill::Norm => 1.0 + 0.1 * z,
                });
            }
        });
    out
}

fn tensors(
    hidden: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    ffn: usize,
    rows: usize,
    tokens: usize,
) -> Vec<Spec> {
    let hd = hidden / heads;
    let m = |name: String, r: usize, c: usize| Spec {
        name,
        dims: vec![r, c],
        fill: Fill::Matrix {
            gain: 1.0,
            pad_from: usize::MAX,
        },
    };
    let mut v = vec![Spec {
        name: "model.embed_tokens.weight".into(),
        dims: vec![rows, hidden],
        fill: Fill::Matrix {
            gain: 1.0,
            pad_from: tokens,
        },
    }];
    for i in 0..layers {
        let p = |s: &str| format!("model.layers.{i}.{s}");
        v.push(m(p("self_attn.q_proj.weight"), heads * hd, hidden));
        v.push(m(p("self_attn.k_proj.weight"), kv_heads * hd, hidden));
        v.push(m(p("self_attn.v_proj.weight"), kv_heads * hd, hidden));
        v.push(m(p("self_attn.o_proj.weight"), hidden, heads * hd));
        v.push(m(p("mlp.gate_proj.weight"), ffn, hidden));
        v.push(m(p("mlp.up_proj.weight"), ffn, hidden));
        v.push(m(p("mlp.down_proj.weight"), hidden, ffn));
        for n in ["input_layernorm.weight", "post_attention_layernorm.weight"] {
            v.push(Spec {
                name: p(n),
                dims: vec![hidden],
                fill: Fill::Norm,
            });
        }
    }
    v.push(Spec {
        name: "model.norm.weight".into(),
        dims: vec![hidden],
        fill: Fill::Norm,
    });
    v.push(Spec {
        name: "lm_head.weight".into(),
        dims: vec![rows, hidden],
        fill: Fill::Matrix {
            gain: 2.0,
            pad_from: tokens,
        },
    });
    v
}

fn write_json(path: &Path, v: &serde_json::Value) {
    std::fs::write(path, serde_json::to_string_pretty(v).expect("json"))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

fn main() {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let nums: Vec<usize> = raw.iter().skip(1).map(|a| a.parse().unwrap_or(0)).collect();
    let (Some(out), [hidden, layers, heads, kv_heads, ffn, rows, shards, rest @ ..]) =
        (raw.first(), nums.as_slice())
    else {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    let (hidden, layers, heads, kv_heads, ffn, rows, shards) =
        (*hidden, *layers, *heads, *kv_heads, *ffn, *rows, *shards);
    let seed = rest.first().copied().unwrap_or(42) as u64;
    let tok = spm_tokenizer().expect("testkit tokenizer");
    let tokens = tok.get_vocab_size(true);
    if [hidden, layers, heads, kv_heads, ffn, shards].contains(&0)
        || hidden % heads != 0
        || heads % kv_heads != 0
        || (hidden / heads) % 2 != 0
        || rows < tokens
    {
        eprintln!("{USAGE}");
        std::process::exit(2);
    }
    let dir = PathBuf::from(out);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    tok.save(dir.join("tokenizer.json"), false)
        .expect("tokenizer.json");
    write_json(
        &dir.join("tokenizer_config.json"),
        &serde_json::json!({
            "add_bos_token": true, "add_eos_token": false, "bos_token": "<s>",
            "eos_token": "</s>", "unk_token": "<unk>", "legacy": true,
            "clean_up_tokenization_spaces": false, "tokenizer_class": "LlamaTokenizer",
        }),
    );
    write_json(
        &dir.join("config.json"),
        &serde_json::json!({
            "architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "hidden_size": hidden, "intermediate_size": ffn, "vocab_size": rows,
            "num_hidden_layers": layers, "num_attention_heads": heads,
            "num_key_value_heads": kv_heads, "hidden_act": "silu", "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0, "bos_token_id": 1, "eos_token_id": 2,
            "max_position_embeddings": 4096, "tie_word_embeddings": false,
            "torch_dtype": "float16",
        }),
    );

    let specs = tensors(hidden, layers, heads, kv_heads, ffn, rows, tokens);
    let total: usize = specs.iter().map(|s| s.numel() * 2).sum();
    // Shard of each tensor by where its bytes start; empty shards are dropped.
    let mut at = 0usize;
    let mut shard_of: Vec<usize> = specs
        .iter()
        .map(|s| {
            let k = at * shards / total;
            at += s.numel() * 2;
            k
        })
        .collect();
    let mut used: Vec<usize> = shard_of.clone();
    used.dedup();
    for k in shard_of.iter_mut() {
        *k = used.iter().position(|u| u == k).unwrap_or(0);
    }
    let n = used.len();
    let file_name = |k: usize| {
        if n == 1 {
            "pytorch_model.bin".to_string()
        } else {
            format!("pytorch_model-{:05}-of-{n:05}.bin", k + 1)
        }
    };
    let started = Instant::now();
    let mut map = serde_json::Map::new();
    for k in 0..n {
        let shard: Vec<(String, Tensor)> = specs
            .iter()
            .enumerate()
            .filter(|(i, _)| shard_of[*i] == k)
            .map(|(i, s)| {
                let t = Tensor::from_vec(generate(s, seed, i), s.dims.as_slice(), &Device::Cpu)
                    .expect("tensor");
                map.insert(s.name.clone(), serde_json::Value::String(file_name(k)));
                (s.name.clone(), t)
            })
            .collect();
        let path = dir.join(file_name(k));
        torch_writer::save(&path, &shard).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let bytes: usize = shard.iter().map(|(_, t)| t.elem_count() * 2).sum();
        eprintln!(
            "{}: {} tensors, {:.2} GB ({:.0} s)",
            file_name(k),
            shard.len(),
            bytes as f64 / 1e9,
            started.elapsed().as_secs_f64()
        );
    }
    if n > 1 {
        write_json(
            &dir.join("pytorch_model.bin.index.json"),
            &serde_json::json!({ "metadata": { "total_size": total }, "weight_map": map }),
        );
    }
    println!(
        "{}: {} tensors, {:.2} GB in {n} shard(s), {} tokenizer pieces, {rows} rows",
        dir.display(),
        specs.len(),
        total as f64 / 1e9,
        tokens
    );
}
