//! Streaming a fragment to disk: aligned writes into `tmp/`, then fsync, rename to
//! `….pending`, fsync the directory.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nimbus_core::fragment::{FragmentEncoder, FragmentFooter, FragmentHeader};

use super::{FragmentId, FragmentStore, StoreError};
use crate::io::{File, OpenMode, SyncKind};

/// Writes one fragment. Feed it with [`FragmentWriter::write`], end with
/// [`FragmentWriter::finish`]; dropped before `finish`, it removes its temporary file.
#[derive(Debug)]
pub struct FragmentWriter {
    store: FragmentStore,
    id: FragmentId,
    tmp: PathBuf,
    file: File,
    encoder: Option<FragmentEncoder>,
    staging: Vec<u8>,
    written: u64,
    finished: bool,
}

impl FragmentWriter {
    pub(super) async fn start(
        store: FragmentStore,
        id: FragmentId,
        header: FragmentHeader,
    ) -> Result<Self, StoreError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let tmp = store.root.join("tmp").join(format!(
            "{}.{}.{}.{}",
            id.version,
            id.index,
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let mut staging = Vec::with_capacity(store.engine.buffer_bytes() * 2);
        let encoder =
            FragmentEncoder::new(&header, &mut staging).map_err(|e| StoreError::BadRequest {
                reason: e.to_string(),
            })?;
        let mode = OpenMode {
            create_new: true,
            write: true,
            direct: store.config.direct_io,
        };
        let file = store
            .engine
            .open(&tmp, mode)
            .await
            .map_err(|e| StoreError::io(&tmp, e))?;
        Ok(FragmentWriter {
            store,
            id,
            tmp,
            file,
            encoder: Some(encoder),
            staging,
            written: 0,
            finished: false,
        })
    }

    /// Returns the fragment being written.
    #[must_use]
    pub fn id(&self) -> &FragmentId {
        &self.id
    }

    /// Adds data to the fragment, writing every full buffer's worth.
    ///
    /// # Errors
    /// [`StoreError::Full`] when the device runs out of space, [`StoreError::Io`].
    pub async fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        let Some(encoder) = self.encoder.as_mut() else {
            return Err(StoreError::BadRequest {
                reason: "write after finish".into(),
            });
        };
        encoder.push(data, &mut self.staging);
        self.flush(false).await
    }

    /// Writes staged bytes: whole buffers, or with `last` everything, the final write
    /// submitted together with the fdatasync that makes the file durable (the staged bytes
    /// then end the file, whose length is a multiple of 4096, so every write stays aligned).
    async fn flush(&mut self, last: bool) -> Result<(), StoreError> {
        let engine = self.store.engine.clone();
        let chunk = engine.buffer_bytes();
        let mut start = 0;
        while self.staging.len() - start >= chunk || (last && start < self.staging.len()) {
            let n = chunk.min(self.staging.len() - start);
            let mut buf = engine.buffer().await;
            buf.extend_from_slice(&self.staging[start..start + n]);
            let final_write = last && start + n == self.staging.len();
            let (result, _) = if final_write {
                engine
                    .write_all_synced_at(&self.file, buf, self.written, SyncKind::Data)
                    .await
            } else {
                engine.write_all_at(&self.file, buf, self.written).await
            };
            result.map_err(|e| StoreError::io(&self.tmp, e))?;
            self.written += n as u64;
            start += n;
        }
        self.staging.drain(..start);
        Ok(())
    }

    /// Ends the fragment and makes it durable under its `….pending` name. With `expected`,
    /// fails unless exactly that many data bytes were written (a truncated or overlong body).
    ///
    /// # Errors
    /// [`StoreError::BadRequest`] on a size mismatch (nothing is kept), [`StoreError::Full`],
    /// [`StoreError::Io`].
    pub async fn finish(mut self, expected: Option<u64>) -> Result<FragmentFooter, StoreError> {
        let Some(encoder) = self.encoder.take() else {
            return Err(StoreError::BadRequest {
                reason: "finish twice".into(),
            });
        };
        if let Some(expected) = expected
            && expected != encoder.data_bytes()
        {
            return Err(StoreError::BadRequest {
                reason: format!(
                    "fragment body of {} bytes, {expected} declared",
                    encoder.data_bytes()
                ),
            });
        }
        let footer = encoder.finish(&mut self.staging);
        // The file ends with the footer, so there is always a final write to sync with.
        self.flush(true).await?;
        let dir = self.id.object_dir(&self.store.root);
        let pending = dir.join(format!("{}.pending", self.id.file_name()));
        let (root, tmp, to) = (self.store.root.clone(), self.tmp.clone(), pending.clone());
        self.store
            .engine
            .metadata(move || place(&root, &dir, &tmp, &to))
            .await
            .map_err(|e| StoreError::io(&pending, e))?;
        self.finished = true;
        Ok(footer)
    }
}

impl Drop for FragmentWriter {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // Unfinished: remove the temporary file off the async workers; if no runtime is left,
        // the next `FragmentStore::open` removes it.
        let tmp = std::mem::take(&mut self.tmp);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn_blocking(move || {
                let _ = std::fs::remove_file(tmp);
            });
        }
    }
}

/// Blocking, in one trip off the async workers: creates `dir` and any missing parents inside
/// device directory `root` (each new directory entry made durable by syncing its parent),
/// renames `from` to `to` in it and syncs `dir`. Costs one lookup when `dir` exists.
fn place(root: &Path, dir: &Path, from: &Path, to: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut at = dir.to_path_buf();
    while at.starts_with(root) && at != root && !at.try_exists()? {
        missing.push(at.clone());
        if !at.pop() {
            break;
        }
    }
    for new in missing.iter().rev() {
        match std::fs::create_dir(new) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        if let Some(parent) = new.parent() {
            sync_dir(parent)?;
        }
    }
    std::fs::rename(from, to)?;
    sync_dir(dir)
}

/// Blocking: makes a directory's entries durable.
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
