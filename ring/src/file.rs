//! Ring and builder files on disk. A file is written to a temporary name in the same
//! directory, fsynced, renamed over the old one, and the directory fsynced: a crash leaves
//! either the old file or the new one, never a mix.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::builder::RingBuilder;
use crate::error::RingFileError;
use crate::placement::Ring;

/// Writes `bytes` to `path` atomically and durably (see the module documentation).
///
/// # Errors
/// Whatever the file system reports; on error the old file is untouched and the temporary
/// file removed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    // Unique per process and call, and retried on a clash (a leftover of a crashed writer
    // whose pid came round again): never someone else's temporary file.
    let mut attempt = 0;
    let (tmp, mut file) = loop {
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(
            ".tmp.{}.{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let tmp_path = dir.join(tmp_name);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp_path)
        {
            Ok(file) => break (TempFile { path: tmp_path }, file),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 16 => attempt += 1,
            Err(e) => return Err(e),
        }
    };
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp.path, path)?;
    std::mem::forget(tmp);
    File::open(&dir)?.sync_all()
}

/// Removes the temporary file unless the write completed.
struct TempFile {
    path: PathBuf,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

fn read(path: &Path) -> Result<Vec<u8>, RingFileError> {
    fs::read(path).map_err(|source| RingFileError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), RingFileError> {
    write_atomic(path, bytes).map_err(|source| RingFileError::Io {
        path: path.to_path_buf(),
        source,
    })
}

impl Ring {
    /// Reads and validates a ring file.
    ///
    /// # Errors
    /// [`RingFileError`] when it cannot be read or is not a valid ring.
    pub fn load(path: &Path) -> Result<Ring, RingFileError> {
        Ring::decode(&read(path)?).map_err(|source| RingFileError::Format {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Writes the ring file atomically.
    ///
    /// # Errors
    /// [`RingFileError::Io`].
    pub fn save(&self, path: &Path) -> Result<(), RingFileError> {
        write(path, &self.encode())
    }
}

impl RingBuilder {
    /// Reads and validates a builder file.
    ///
    /// # Errors
    /// [`RingFileError`] when it cannot be read or is not a valid builder.
    pub fn load(path: &Path) -> Result<RingBuilder, RingFileError> {
        RingBuilder::decode(&read(path)?).map_err(|source| RingFileError::Format {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Writes the builder file atomically.
    ///
    /// # Errors
    /// [`RingFileError::Io`].
    pub fn save(&self, path: &Path) -> Result<(), RingFileError> {
        write(path, &self.encode())
    }
}
