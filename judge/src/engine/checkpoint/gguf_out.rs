//! Writing a GGUF file (version 3) one tensor at a time: the header and every tensor's
//! place are laid out first from names, shapes and types, then each tensor's bytes are
//! written at its place as it is produced, in any order, so a checkpoint is never held in
//! memory whole. The file is written beside its destination and renamed into place when
//! complete.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::GgmlDType;

use crate::error::{load_err, Result};

/// Tensor data starts and every tensor begins at a multiple of this (GGUF's default).
const ALIGNMENT: u64 = 32;

/// One tensor of the file: its name, dimensions (row-major, `[rows, cols]`) and type.
#[derive(Debug, Clone)]
pub struct PlannedTensor {
    /// Name in llama.cpp's scheme (`blk.0.attn_q.weight`).
    pub name: String,
    /// Dimensions, outermost first.
    pub dims: Vec<usize>,
    /// Block type.
    pub dtype: GgmlDType,
}

impl PlannedTensor {
    /// Bytes of the tensor's data.
    pub fn bytes(&self) -> usize {
        let n: usize = self.dims.iter().product();
        n / self.dtype.block_size() * self.dtype.type_size()
    }
}

/// A GGUF file being written: header done, tensors written at their offsets.
pub struct GgufOut {
    file: BufWriter<File>,
    tmp: PathBuf,
    dest: PathBuf,
    data_start: u64,
    offsets: Vec<u64>,
    sizes: Vec<usize>,
    written: Vec<bool>,
}

fn put_str(w: &mut impl Write, s: &str) -> std::io::Result<()> {
    w.write_all(&(s.len() as u64).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

/// ggml's number for a block type, as GGUF's tensor table stores it.
fn ggml_type_id(t: GgmlDType) -> u32 {
    match t {
        GgmlDType::F32 => 0,
        GgmlDType::F16 => 1,
        GgmlDType::Q4_0 => 2,
        GgmlDType::Q4_1 => 3,
        GgmlDType::Q5_0 => 6,
        GgmlDType::Q5_1 => 7,
        GgmlDType::Q8_0 => 8,
        GgmlDType::Q8_1 => 9,
        GgmlDType::Q2K => 10,
        GgmlDType::Q3K => 11,
        GgmlDType::Q4K => 12,
        GgmlDType::Q5K => 13,
        GgmlDType::Q6K => 14,
        GgmlDType::Q8K => 15,
        GgmlDType::BF16 => 30,
    }
}

/// GGUF value type numbers.
fn type_of(v: &Value) -> u32 {
    match v {
        Value::U8(_) => 0,
        Value::I8(_) => 1,
        Value::U16(_) => 2,
        Value::I16(_) => 3,
        Value::U32(_) => 4,
        Value::I32(_) => 5,
        Value::F32(_) => 6,
        Value::Bool(_) => 7,
        Value::String(_) => 8,
        Value::Array(_) => 9,
        Value::U64(_) => 10,
        Value::I64(_) => 11,
        Value::F64(_) => 12,
    }
}

fn put_value(w: &mut impl Write, v: &Value) -> std::io::Result<()> {
    match v {
        Value::U8(x) => w.write_all(&[*x]),
        Value::I8(x) => w.write_all(&x.to_le_bytes()),
        Value::U16(x) => w.write_all(&x.to_le_bytes()),
        Value::I16(x) => w.write_all(&x.to_le_bytes()),
        Value::U32(x) => w.write_all(&x.to_le_bytes()),
        Value::I32(x) => w.write_all(&x.to_le_bytes()),
        Value::F32(x) => w.write_all(&x.to_le_bytes()),
        Value::Bool(x) => w.write_all(&[u8::from(*x)]),
        Value::String(s) => put_str(w, s),
        Value::U64(x) => w.write_all(&x.to_le_bytes()),
        Value::I64(x) => w.write_all(&x.to_le_bytes()),
        Value::F64(x) => w.write_all(&x.to_le_bytes()),
        Value::Array(items) => {
            // An empty array still names an element type; strings are the usual one.
            let elem = items.first().map_or(8, type_of);
            w.write_all(&elem.to_le_bytes())?;
            w.write_all(&(items.len() as u64).to_le_bytes())?;
            items.iter().try_for_each(|i| put_value(w, i))
        }
    }
}

impl GgufOut {
    /// Creates `dest`'s temporary twin and writes the header: metadata and the tensor
    /// table of `plan`.
    pub fn create(
        dest: &Path,
        metadata: &[(String, Value)],
        plan: &[PlannedTensor],
    ) -> Result<Self> {
        let tmp = dest.with_extension("gguf.partial");
        let err = |e: std::io::Error| load_err(dest, e);
        let mut file = BufWriter::new(File::create(&tmp).map_err(err)?);
        let w = &mut file;
        w.write_all(b"GGUF").map_err(err)?;
        w.write_all(&3u32.to_le_bytes()).map_err(err)?;
        w.write_all(&(plan.len() as u64).to_le_bytes())
            .map_err(err)?;
        w.write_all(&(metadata.len() as u64).to_le_bytes())
            .map_err(err)?;
        for (k, v) in metadata {
            put_str(w, k).map_err(err)?;
            w.write_all(&type_of(v).to_le_bytes()).map_err(err)?;
            put_value(w, v).map_err(err)?;
        }
        let mut offsets = Vec::with_capacity(plan.len());
        let mut at = 0u64;
        for t in plan {
            put_str(w, &t.name).map_err(err)?;
            w.write_all(&(t.dims.len() as u32).to_le_bytes())
                .map_err(err)?;
            for &d in t.dims.iter().rev() {
                w.write_all(&(d as u64).to_le_bytes()).map_err(err)?;
            }
            w.write_all(&ggml_type_id(t.dtype).to_le_bytes())
                .map_err(err)?;
            w.write_all(&at.to_le_bytes()).map_err(err)?;
            offsets.push(at);
            at += (t.bytes() as u64).next_multiple_of(ALIGNMENT);
        }
        let header = w.stream_position().map_err(err)?;
        let data_start = header.next_multiple_of(ALIGNMENT);
        w.write_all(&vec![0u8; (data_start - header) as usize])
            .map_err(err)?;
        // The file's full length, so tensors written out of order land in place.
        w.flush().map_err(err)?;
        w.get_ref().set_len(data_start + at).map_err(err)?;
        Ok(Self {
            file,
            tmp,
            dest: dest.to_path_buf(),
            data_start,
            offsets,
            sizes: plan.iter().map(PlannedTensor::bytes).collect(),
            written: vec![false; plan.len()],
        })
    }

    /// Writes tensor `i`'s bytes at its place.
    pub fn write(&mut self, i: usize, bytes: &[u8]) -> Result<()> {
        let err = |e: std::io::Error| load_err(&self.dest, e);
        if bytes.len() != self.sizes[i] || self.written[i] {
            return Err(load_err(
                &self.dest,
                format!("tensor {i}: wrong size or written twice"),
            ));
        }
        self.file
            .seek(SeekFrom::Start(self.data_start + self.offsets[i]))
            .map_err(err)?;
        self.file.write_all(bytes).map_err(err)?;
        self.written[i] = true;
        Ok(())
    }

    /// Checks every tensor was written and moves the file into place.
    pub fn finish(mut self) -> Result<()> {
        if let Some(i) = self.written.iter().position(|w| !w) {
            return Err(load_err(
                &self.dest,
                format!("tensor {i} was never written"),
            ));
        }
        self.file.flush().map_err(|e| load_err(&self.dest, e))?;
        std::fs::rename(&self.tmp, &self.dest).map_err(|e| load_err(&self.dest, e))
    }
}

impl Drop for GgufOut {
    fn drop(&mut self) {
        // An unfinished file is removed (after `finish` it has been renamed away).
        let _ = std::fs::remove_file(&self.tmp);
    }
}
