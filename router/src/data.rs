//! Where the scenario and criteria files come from: the copy embedded in the binary at build
//! time (so a lone binary works), or a directory that overrides it (so an operator can edit
//! criteria without rebuilding). Both are read into the same in-memory form, so parsing and
//! validation have one code path.

use std::path::{Path, PathBuf};

use include_dir::{include_dir, Dir};
use serde::de::DeserializeOwned;

use crate::error::RouterError;

/// `router/data/` as it was when the crate was built.
static EMBEDDED: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/data");

/// The prefix shown in error messages for embedded files.
const EMBEDDED_PREFIX: &str = "<embedded router/data>";

/// Which copy of the scenario and criteria files to load.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum DataSource {
    /// The files compiled into the binary.
    #[default]
    Embedded,
    /// A directory with the same layout: `scenarios.toml`, `criteria/basics/*.toml`,
    /// `criteria/scenarios/*.toml`.
    Dir(PathBuf),
}

/// One file's path (for messages) and text.
#[derive(Debug, Clone)]
pub(crate) struct DataFile {
    /// Where it came from.
    pub path: PathBuf,
    /// Its UTF-8 text.
    pub text: String,
}

impl DataFile {
    /// Parses the file as TOML into `T`, naming the file in the error.
    pub fn parse_toml<T: DeserializeOwned>(&self) -> Result<T, RouterError> {
        toml::from_str(&self.text).map_err(|e| RouterError::Toml {
            path: self.path.clone(),
            source: Box::new(e),
        })
    }

    /// The file name without `.toml`.
    pub fn stem(&self) -> &str {
        self.path.file_stem().and_then(|s| s.to_str()).unwrap_or("")
    }
}

/// All files of one data source, unparsed.
#[derive(Debug)]
pub(crate) struct DataFiles {
    /// `scenarios.toml`.
    pub scenarios: DataFile,
    /// `criteria/basics/*.toml`, sorted by name.
    pub basics: Vec<DataFile>,
    /// `criteria/scenarios/*.toml`, sorted by name.
    pub scenario_criteria: Vec<DataFile>,
}

impl DataSource {
    /// Reads every file of the source.
    pub(crate) fn read(&self) -> Result<DataFiles, RouterError> {
        match self {
            Self::Embedded => read_embedded(),
            Self::Dir(root) => read_dir(root),
        }
    }
}

/// Reads the embedded copy.
fn read_embedded() -> Result<DataFiles, RouterError> {
    let file = |path: &Path| -> Result<DataFile, RouterError> {
        let shown = Path::new(EMBEDDED_PREFIX).join(path);
        let missing = || RouterError::Io {
            path: shown.clone(),
            source: std::io::ErrorKind::NotFound.into(),
        };
        let text = EMBEDDED
            .get_file(path)
            .ok_or_else(missing)?
            .contents_utf8()
            .ok_or_else(|| RouterError::Io {
                path: shown.clone(),
                source: std::io::ErrorKind::InvalidData.into(),
            })?;
        Ok(DataFile {
            path: shown.clone(),
            text: text.to_owned(),
        })
    };
    let toml_files = |dir: &str| -> Result<Vec<DataFile>, RouterError> {
        let mut paths: Vec<PathBuf> = EMBEDDED
            .get_dir(dir)
            .map(|d| d.files().map(|f| f.path().to_path_buf()).collect())
            .unwrap_or_default();
        paths.retain(|p| p.extension().is_some_and(|e| e == "toml"));
        paths.sort();
        paths.iter().map(|p| file(p)).collect()
    };
    Ok(DataFiles {
        scenarios: file(Path::new("scenarios.toml"))?,
        basics: toml_files("criteria/basics")?,
        scenario_criteria: toml_files("criteria/scenarios")?,
    })
}

/// Reads an override directory.
fn read_dir(root: &Path) -> Result<DataFiles, RouterError> {
    let toml_files = |dir: PathBuf| -> Result<Vec<DataFile>, RouterError> {
        let io = |source| RouterError::Io {
            path: dir.clone(),
            source,
        };
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if path.extension().is_some_and(|e| e == "toml") {
                paths.push(path);
            }
        }
        paths.sort();
        paths.into_iter().map(read_file).collect()
    };
    Ok(DataFiles {
        scenarios: read_file(root.join("scenarios.toml"))?,
        basics: toml_files(root.join("criteria/basics"))?,
        scenario_criteria: toml_files(root.join("criteria/scenarios"))?,
    })
}

/// Reads one file from disk.
fn read_file(path: PathBuf) -> Result<DataFile, RouterError> {
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(DataFile { path, text }),
        Err(source) => Err(RouterError::Io { path, source }),
    }
}
