//! PyTorch checkpoints (`pytorch_model*.bin`): the zip archive `torch.save` writes, its
//! `data.pkl` read by the restricted pickle reader and each tensor's bytes read from its
//! storage entry, one tensor at a time.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use zip::ZipArchive;

use super::pickle::{self, TensorRecord};
use crate::error::{load_err, Result};

/// The largest `data.pkl` read: a state dict's pickle holds names and shapes, a few MB for
/// a 70B model; anything bigger is not a state dict.
const MAX_PICKLE_BYTES: u64 = 256 << 20;

/// One open `.bin` file: its archive and the tensors its pickle lists.
pub(crate) struct PthFile {
    path: PathBuf,
    zip: ZipArchive<BufReader<File>>,
    /// The folder inside the archive (`archive/`, or the file's own stem).
    prefix: String,
    /// Tensors in the order the pickle lists them.
    pub(crate) tensors: Vec<(String, TensorRecord)>,
}

impl PthFile {
    /// Opens `path` and reads its pickle; refuses legacy (pre-zip) checkpoints and
    /// anything but a dict of tensors.
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| load_err(path, e))?;
        let mut zip = ZipArchive::new(BufReader::new(file)).map_err(|e| {
            load_err(
                path,
                format!(
                    "not a PyTorch zip checkpoint ({e}); checkpoints saved by torch before 1.6 \
                     (legacy tar/pickle format) are not supported: re-save with a current torch"
                ),
            )
        })?;
        let pkl = zip
            .file_names()
            .filter_map(|n| n.ok())
            .find(|n| n.ends_with("/data.pkl") || n.as_ref() == "data.pkl")
            .map(|n| n.into_owned())
            .ok_or_else(|| load_err(path, "the archive has no data.pkl"))?;
        let prefix = pkl.strip_suffix("data.pkl").unwrap_or_default().to_string();
        check_byteorder(path, &mut zip, &prefix)?;
        let bytes = read_entry(path, &mut zip, &pkl, MAX_PICKLE_BYTES)?;
        let tensors =
            pickle::parse(&bytes).map_err(|e| load_err(path, format!("data.pkl: {e}")))?;
        Ok(Self {
            path: path.to_path_buf(),
            zip,
            prefix,
            tensors,
        })
    }

    /// Reads tensor `rec` (named `name`, for errors) into a CPU tensor of its stored type.
    pub(crate) fn read(&mut self, name: &str, rec: &TensorRecord) -> Result<Tensor> {
        let size = rec.dtype.size_in_bytes();
        let entry = format!("{}data/{}", self.prefix, rec.storage);
        let path = self.path.clone();
        let mut f = self
            .zip
            .by_name(&entry)
            .map_err(|e| load_err(&path, format!("tensor `{name}`: storage `{entry}`: {e}")))?;
        let want = (rec.storage_len as u64).checked_mul(size as u64);
        if want != Some(f.size()) {
            return Err(load_err(
                &path,
                format!(
                    "tensor `{name}`: storage `{entry}` holds {} bytes, the pickle says {} \
                     elements of {size} bytes",
                    f.size(),
                    rec.storage_len
                ),
            ));
        }
        let skip = (rec.offset * size) as u64;
        std::io::copy(&mut (&mut f).take(skip), &mut std::io::sink())
            .map_err(|e| load_err(&path, format!("tensor `{name}`: {e}")))?;
        let mut buf = vec![0u8; rec.len() * size];
        f.read_exact(&mut buf)
            .map_err(|e| load_err(&path, format!("tensor `{name}`: {e}")))?;
        Ok(Tensor::from_raw_buffer(
            &buf,
            rec.dtype,
            &rec.shape,
            &Device::Cpu,
        )?)
    }
}

/// The archive's `byteorder` entry, where present, must say `little`.
fn check_byteorder(path: &Path, zip: &mut ZipArchive<BufReader<File>>, prefix: &str) -> Result<()> {
    let name = format!("{prefix}byteorder");
    if zip.index_for_name(&name).is_none() {
        return Ok(());
    }
    let order = read_entry(path, zip, &name, 16)?;
    if order != b"little" {
        return Err(load_err(
            path,
            "the checkpoint was saved on a big-endian machine; not supported",
        ));
    }
    Ok(())
}

/// A whole entry of at most `limit` bytes.
fn read_entry(
    path: &Path,
    zip: &mut ZipArchive<BufReader<File>>,
    name: &str,
    limit: u64,
) -> Result<Vec<u8>> {
    let f = zip
        .by_name(name)
        .map_err(|e| load_err(path, format!("{name}: {e}")))?;
    if f.size() > limit {
        return Err(load_err(
            path,
            format!("{name} is {} bytes, more than {limit}", f.size()),
        ));
    }
    let mut out = Vec::with_capacity(f.size() as usize);
    f.take(limit)
        .read_to_end(&mut out)
        .map_err(|e| load_err(path, format!("{name}: {e}")))?;
    Ok(out)
}
