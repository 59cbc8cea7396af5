//! A hostile-file check of a GGUF header, run before candle parses it.
//!
//! candle's reader bounds string and array lengths, but trusts other header fields: a
//! `general.alignment` of 0 divides by zero, tensor dimensions whose product overflows
//! panic (or wrap and pass size checks), and LLaMA hyperparameters of 0 divide by zero when
//! the model is built. [`check`] walks the header itself, with every length checked against
//! the bytes left in the file and every product checked for overflow, and refuses what
//! would make the loader panic or allocate more than the file holds. It reads only the
//! header, never tensor data.

use std::io::{Read, Seek, SeekFrom};

/// The magic number `GGUF`, little-endian.
const MAGIC: u32 = 0x4655_4747;
/// Nesting allowed in metadata values (an array of arrays).
const MAX_DEPTH: usize = 2;
/// Dimensions a tensor may have (GGML's limit).
const MAX_DIMS: u32 = 4;
/// Largest accepted `general.alignment`.
const MAX_ALIGNMENT: u64 = 1 << 20;
/// Most transformer blocks a model may declare.
const MAX_BLOCKS: u64 = 1024;
/// Largest context length accepted (far above any LLaMA-family model's).
const MAX_CONTEXT: u64 = 1 << 24;
/// Largest residual width accepted without heads to check it against.
const MAX_EMBEDDING: u64 = 1 << 16;

/// Why a file is refused.
pub type GuardError = String;

/// Reads the header at the reader's start; leaves the position back at the start. `Ok` means
/// candle can parse it and its tensors' declared extents lie inside the file.
pub fn check<R: Read + Seek>(reader: &mut R) -> Result<(), GuardError> {
    let len = reader.seek(SeekFrom::End(0)).map_err(io)?;
    reader.seek(SeekFrom::Start(0)).map_err(io)?;
    let mut walk = Walk {
        r: reader,
        left: len,
        wide: true,
    };
    let result = walk.header(len);
    walk.r.seek(SeekFrom::Start(0)).map_err(io)?;
    result
}

fn io(e: std::io::Error) -> GuardError {
    format!("cannot read the file: {e}")
}

/// A bounded reader over the header.
struct Walk<'a, R> {
    /// The file.
    r: &'a mut R,
    /// Bytes not yet read.
    left: u64,
    /// Lengths are u64 (GGUF v2, v3) rather than u32 (v1).
    wide: bool,
}

/// What the header says that later checks need.
#[derive(Default)]
struct Hyper {
    alignment: Option<u64>,
    heads: Option<u64>,
    kv_heads: Option<u64>,
    embedding: Option<u64>,
    blocks: Option<u64>,
    rope_dims: Option<u64>,
    context: Option<u64>,
}

impl<R: Read + Seek> Walk<'_, R> {
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], GuardError> {
        if (N as u64) > self.left {
            return Err("the file ends inside its header".into());
        }
        let mut b = [0u8; N];
        self.r.read_exact(&mut b).map_err(io)?;
        self.left -= N as u64;
        Ok(b)
    }

    fn u32(&mut self) -> Result<u32, GuardError> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }

    fn u64(&mut self) -> Result<u64, GuardError> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }

    fn length(&mut self) -> Result<u64, GuardError> {
        if self.wide {
            self.u64()
        } else {
            self.u32().map(u64::from)
        }
    }

    fn skip(&mut self, n: u64) -> Result<(), GuardError> {
        if n > self.left {
            return Err(format!(
                "a header field declares {n} bytes but only {} are left",
                self.left
            ));
        }
        self.r
            .seek(SeekFrom::Current(
                i64::try_from(n).map_err(|_| "oversize field")?,
            ))
            .map_err(io)?;
        self.left -= n;
        Ok(())
    }

    fn string(&mut self) -> Result<String, GuardError> {
        let n = self.length()?;
        if n > self.left {
            return Err(format!(
                "a string declares {n} bytes but only {} are left",
                self.left
            ));
        }
        // Keys are short; only they are read, values are skipped.
        if n > 4096 {
            self.skip(n)?;
            return Ok(String::new());
        }
        let mut v = vec![0u8; n as usize];
        self.r.read_exact(&mut v).map_err(io)?;
        self.left -= n;
        Ok(String::from_utf8_lossy(&v).into_owned())
    }

    /// Skips a value of type `ty`; returns it when it is an integer.
    fn value(&mut self, ty: u32, depth: usize) -> Result<Option<u64>, GuardError> {
        let size = match ty {
            0 | 1 | 7 => 1, // u8, i8, bool
            2 | 3 => 2,     // u16, i16
            4..=6 => 4,     // u32, i32, f32
            10..=12 => 8,   // u64, i64, f64
            8 => {
                let n = self.length()?;
                self.skip(n)?;
                return Ok(None);
            }
            9 => {
                if depth >= MAX_DEPTH {
                    return Err("metadata arrays nest too deeply".into());
                }
                let inner = self.u32()?;
                let n = self.length()?;
                // Every element takes at least one byte (strings and arrays more).
                if n > self.left {
                    return Err(format!(
                        "an array declares {n} elements but only {} bytes are left",
                        self.left
                    ));
                }
                for _ in 0..n {
                    self.value(inner, depth + 1)?;
                }
                return Ok(None);
            }
            other => return Err(format!("unknown metadata value type {other}")),
        };
        let mut b = [0u8; 8];
        if size > self.left {
            return Err("the file ends inside its metadata".into());
        }
        self.r.read_exact(&mut b[..size as usize]).map_err(io)?;
        self.left -= size;
        let v = u64::from_le_bytes(b);
        // Signed integers: a negative value is never a valid count.
        let negative = match ty {
            1 => b[0] >= 0x80,
            3 => b[1] >= 0x80,
            5 => b[3] >= 0x80,
            11 => b[7] >= 0x80,
            _ => false,
        };
        Ok(match ty {
            0..=5 | 10 | 11 if !negative => Some(v),
            0..=5 | 10 | 11 => Some(u64::MAX),
            _ => None,
        })
    }

    fn header(&mut self, len: u64) -> Result<(), GuardError> {
        if self.u32()? != MAGIC {
            return Err("not a GGUF file (bad magic number)".into());
        }
        self.wide = match self.u32()? {
            1 => false,
            2 | 3 => true,
            v => return Err(format!("unsupported GGUF version {v}")),
        };
        let tensors = self.length()?;
        let entries = self.length()?;
        // A metadata entry takes at least 13 bytes, a tensor entry at least 24.
        if entries
            .saturating_mul(13)
            .saturating_add(tensors.saturating_mul(24))
            > self.left
        {
            return Err(format!(
                "the header declares {tensors} tensors and {entries} metadata entries, more than the file holds"
            ));
        }
        let mut hyper = Hyper::default();
        for _ in 0..entries {
            let key = self.string()?;
            let ty = self.u32()?;
            let v = self.value(ty, 0)?;
            let slot = match key.as_str() {
                "general.alignment" => &mut hyper.alignment,
                "llama.attention.head_count" => &mut hyper.heads,
                "llama.attention.head_count_kv" => &mut hyper.kv_heads,
                "llama.embedding_length" => &mut hyper.embedding,
                "llama.block_count" => &mut hyper.blocks,
                "llama.rope.dimension_count" => &mut hyper.rope_dims,
                "llama.context_length" => &mut hyper.context,
                _ => continue,
            };
            *slot = Some(v.ok_or_else(|| format!("`{key}` is not an integer"))?);
        }
        let mut extents = Vec::new();
        for _ in 0..tensors {
            let name = self.string()?;
            let dims = self.u32()?;
            if dims > MAX_DIMS {
                return Err(format!("tensor `{name}` has {dims} dimensions"));
            }
            let mut elems: u64 = 1;
            for _ in 0..dims {
                let d = self.length()?;
                elems = elems
                    .checked_mul(d)
                    .filter(|&e| e <= len.saturating_mul(256))
                    .ok_or_else(|| {
                        format!("tensor `{name}` declares more elements than the file can hold")
                    })?;
            }
            let (block, size) = dtype_layout(self.u32()?)
                .ok_or_else(|| format!("tensor `{name}` has an unknown type"))?;
            if !elems.is_multiple_of(block) {
                return Err(format!("tensor `{name}` is not a whole number of blocks"));
            }
            let offset = self.u64()?;
            let end = offset
                .checked_add(elems / block * size)
                .ok_or_else(|| format!("tensor `{name}` lies outside the file"))?;
            extents.push((name, end));
        }
        let alignment = hyper.alignment.unwrap_or(32);
        if alignment == 0 || alignment > MAX_ALIGNMENT {
            return Err(format!("`general.alignment` is {alignment}"));
        }
        let data = (len - self.left).div_ceil(alignment) * alignment;
        for (name, end) in extents {
            if data.saturating_add(end) > len {
                return Err(format!("tensor `{name}` lies outside the file"));
            }
        }
        check_hyper(&hyper)
    }
}

/// LLaMA hyperparameters the model code divides by or sizes with.
fn check_hyper(h: &Hyper) -> Result<(), GuardError> {
    if let Some(heads) = h.heads {
        let kv = h.kv_heads.unwrap_or(heads);
        if heads == 0 || kv == 0 || !heads.is_multiple_of(kv) {
            return Err(format!(
                "attention heads {heads} and key/value heads {kv} do not fit together"
            ));
        }
        if let Some(e) = h.embedding {
            if e == 0 || !e.is_multiple_of(heads) || !(e / heads).is_multiple_of(2) {
                return Err(format!(
                    "embedding length {e} does not split into {heads} heads of even size"
                ));
            }
        }
    }
    if let Some(b) = h.blocks {
        if b == 0 || b > MAX_BLOCKS {
            return Err(format!("block count {b} is out of range"));
        }
    }
    if let Some(c) = h.context {
        if c == 0 || c > MAX_CONTEXT {
            return Err(format!("context length {c} is out of range"));
        }
    }
    if h.embedding.is_some_and(|e| e > MAX_EMBEDDING) {
        return Err("embedding length is out of range".into());
    }
    // Rotary tables are sized by this before any tensor is read (found by the `gguf` fuzz
    // target: a 906-byte file asked candle for gigabytes of tables).
    if let Some(r) = h.rope_dims {
        let head = match (h.embedding, h.heads) {
            (Some(e), Some(heads)) if heads > 0 => e / heads,
            (Some(e), _) => e,
            _ => MAX_EMBEDDING,
        };
        if r == 0 || r > head || !r.is_multiple_of(2) {
            return Err(format!(
                "rotary dimension count {r} does not fit a head of {head}"
            ));
        }
    }
    Ok(())
}

/// Elements per block and bytes per block of a GGML tensor type (the types candle reads).
fn dtype_layout(t: u32) -> Option<(u64, u64)> {
    Some(match t {
        0 => (1, 4),      // F32
        1 | 30 => (1, 2), // F16, BF16
        2 => (32, 18),    // Q4_0
        3 => (32, 20),    // Q4_1
        6 => (32, 22),    // Q5_0
        7 => (32, 24),    // Q5_1
        8 => (32, 34),    // Q8_0
        9 => (32, 36),    // Q8_1
        10 => (256, 84),  // Q2_K
        11 => (256, 110), // Q3_K
        12 => (256, 144), // Q4_K
        13 => (256, 176), // Q5_K
        14 => (256, 210), // Q6_K
        15 => (256, 292), // Q8_K
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn header(version: u32, tensors: u64, entries: u64) -> Vec<u8> {
        let mut v = MAGIC.to_le_bytes().to_vec();
        v.extend(version.to_le_bytes());
        v.extend(tensors.to_le_bytes());
        v.extend(entries.to_le_bytes());
        v
    }

    fn kv_u32(v: &mut Vec<u8>, key: &str, value: u32) {
        v.extend((key.len() as u64).to_le_bytes());
        v.extend(key.as_bytes());
        v.extend(4u32.to_le_bytes());
        v.extend(value.to_le_bytes());
    }

    #[test]
    fn refuses_zero_alignment() {
        let mut f = header(3, 0, 1);
        kv_u32(&mut f, "general.alignment", 0);
        let err = check(&mut Cursor::new(f)).unwrap_err();
        assert!(err.contains("alignment"), "{err}");
    }

    #[test]
    fn refuses_overflowing_dimensions() {
        let mut f = header(3, 1, 0);
        f.extend(1u64.to_le_bytes());
        f.push(b't');
        f.extend(2u32.to_le_bytes());
        f.extend((1u64 << 40).to_le_bytes());
        f.extend((1u64 << 40).to_le_bytes());
        f.extend(0u32.to_le_bytes());
        f.extend(0u64.to_le_bytes());
        let err = check(&mut Cursor::new(f)).unwrap_err();
        assert!(err.contains("more elements"), "{err}");
    }

    #[test]
    fn refuses_zero_heads_and_huge_counts() {
        let mut f = header(3, 0, 1);
        kv_u32(&mut f, "llama.attention.head_count", 0);
        assert!(check(&mut Cursor::new(f)).is_err());
        let f = header(3, u64::MAX, u64::MAX);
        assert!(check(&mut Cursor::new(f)).is_err());
    }

    #[test]
    fn refuses_rotary_dimensions_larger_than_a_head() {
        // Reduced from the `gguf` fuzz target's out-of-memory input.
        let mut f = header(3, 0, 3);
        kv_u32(&mut f, "llama.embedding_length", 64);
        kv_u32(&mut f, "llama.attention.head_count", 2);
        kv_u32(&mut f, "llama.rope.dimension_count", 0x5f67_0263);
        let err = check(&mut Cursor::new(f)).unwrap_err();
        assert!(err.contains("rotary"), "{err}");
        let mut f = header(3, 0, 1);
        kv_u32(&mut f, "llama.context_length", u32::MAX);
        assert!(check(&mut Cursor::new(f)).is_err());
    }

    #[test]
    fn accepts_the_test_model() {
        let dir = tempfile::tempdir().unwrap();
        let path =
            crate::testkit::write_gguf(dir.path(), &crate::testkit::TinySpec::default()).unwrap();
        let mut file = std::fs::File::open(path).unwrap();
        check(&mut file).unwrap();
        assert_eq!(file.stream_position().unwrap(), 0);
    }
}
