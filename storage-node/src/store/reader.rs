//! Reading a fragment: header and footer first, then only the block records a range
//! touches, each verified before a byte of it is returned.

use std::ops::Range;
use std::path::PathBuf;

use nimbus_core::fragment::{
    ALIGN, FOOTER_BYTES, FragmentError, FragmentFooter, FragmentHeader, HEADER_BYTES, Layout,
    verify_block,
};

use super::{FragmentStore, StoreError};
use crate::io::{File, IoBuf, OpenMode};

/// Reads a range of one fragment's data in verified chunks; see [`FragmentStore::read`].
#[derive(Debug)]
pub struct FragmentReader {
    store: FragmentStore,
    path: PathBuf,
    file: File,
    header: FragmentHeader,
    footer: FragmentFooter,
    layout: Layout,
    range: Range<u64>,
    next_block: u64,
    end_block: u64,
}

impl FragmentReader {
    pub(super) async fn open(
        store: FragmentStore,
        path: PathBuf,
        range: Range<u64>,
    ) -> Result<Self, StoreError> {
        let engine = store.engine.clone();
        let mode = OpenMode {
            direct: store.config.direct_io,
            ..OpenMode::default()
        };
        let file = match engine.open(&path, mode).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound { path });
            }
            Err(e) => return Err(StoreError::io(&path, e)),
        };
        let len = engine
            .file_len(&file)
            .await
            .map_err(|e| StoreError::io(&path, e))?;
        let mut reader = FragmentReader {
            store,
            path,
            file,
            header: placeholder_header(),
            footer: FragmentFooter {
                data_bytes: 0,
                blake3: [0; 32],
            },
            layout: Layout::new(ALIGN as u32),
            range: 0..0,
            next_block: 0,
            end_block: 0,
        };
        if len < HEADER_BYTES + ALIGN || !len.is_multiple_of(ALIGN) {
            return Err(reader
                .corrupt(FragmentError::Invalid {
                    reason: format!("file of {len} bytes"),
                })
                .await);
        }
        let head = reader.read_region(0, HEADER_BYTES).await?;
        reader.header = match FragmentHeader::decode(head.as_slice()) {
            Ok(h) => h,
            Err(e) => return Err(reader.corrupt(e).await),
        };
        let tail = reader.read_region(len - ALIGN, ALIGN).await?;
        let footer_bytes = &tail.as_slice()[(ALIGN - FOOTER_BYTES) as usize..];
        reader.footer = match FragmentFooter::decode(footer_bytes) {
            Ok(f) => f,
            Err(e) => return Err(reader.corrupt(e).await),
        };
        reader.layout = reader.header.layout();
        let expected = reader.layout.file_bytes(reader.footer.data_bytes);
        if expected != len {
            let e = FragmentError::Invalid {
                reason: format!("file of {len} bytes, its footer implies {expected}"),
            };
            return Err(reader.corrupt(e).await);
        }
        let data = reader.footer.data_bytes;
        reader.range = range.start.min(data)..range.end.min(data);
        let blocks = reader.layout.blocks_for(reader.range.clone(), data);
        (reader.next_block, reader.end_block) = (blocks.start, blocks.end);
        Ok(reader)
    }

    /// Returns the fragment's header.
    #[must_use]
    pub fn header(&self) -> &FragmentHeader {
        &self.header
    }

    /// Returns the fragment's footer: its data length and blake3.
    #[must_use]
    pub fn footer(&self) -> &FragmentFooter {
        &self.footer
    }

    /// Returns the range of data this reader returns, clamped to the fragment.
    #[must_use]
    pub fn range(&self) -> Range<u64> {
        self.range.clone()
    }

    /// Quarantines the file and returns the error to report.
    async fn corrupt(&self, source: FragmentError) -> StoreError {
        self.store.quarantine(&self.path).await;
        StoreError::Corrupt {
            path: self.path.clone(),
            source,
        }
    }

    /// Reads `len` bytes (aligned) at `offset` (aligned).
    async fn read_region(&self, offset: u64, len: u64) -> Result<IoBuf, StoreError> {
        let engine = &self.store.engine;
        let buf = if len as usize <= engine.buffer_bytes() {
            engine.buffer().await
        } else {
            IoBuf::new(len as usize)
        };
        let (result, buf) = engine
            .read_exact_at(&self.file, buf, offset, len as usize)
            .await;
        match result {
            Ok(()) => Ok(buf),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(self
                .corrupt(FragmentError::Invalid {
                    reason: "shorter than its length".into(),
                })
                .await),
            Err(e) => Err(StoreError::io(&self.path, e)),
        }
    }

    /// Returns the next verified chunk of the range (a buffer's worth of blocks), or `None`
    /// at the end.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] when a block fails its crc32c: the file is quarantined and no
    /// byte of that block is returned. [`StoreError::Io`].
    pub async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, StoreError> {
        if self.next_block >= self.end_block {
            return Ok(None);
        }
        let record = self.layout.record_bytes();
        let per_read = (self.store.engine.buffer_bytes() as u64 / record).max(1);
        let first = self.next_block;
        let last = (first + per_read).min(self.end_block) - 1;
        let data_bytes = self.footer.data_bytes;
        let start = self.layout.block_offset(first);
        let end = self.layout.block_offset(last)
            + self.layout.block_data_len(last, data_bytes)
            + nimbus_core::fragment::CRC_BYTES;
        let buf = self
            .read_region(start, (end - start).next_multiple_of(ALIGN))
            .await?;
        let mut out = Vec::with_capacity((end - start) as usize);
        let per_block = self.layout.block_data_bytes();
        for b in first..=last {
            let at = (self.layout.block_offset(b) - start) as usize;
            let len = (self.layout.block_data_len(b, data_bytes) + nimbus_core::fragment::CRC_BYTES)
                as usize;
            let data = match verify_block(b, &buf.as_slice()[at..at + len]) {
                Ok(d) => d,
                Err(e) => return Err(self.corrupt(e).await),
            };
            let block_start = b * per_block;
            let lo = self.range.start.max(block_start) - block_start;
            let hi = self.range.end.min(block_start + data.len() as u64) - block_start;
            out.extend_from_slice(&data[lo as usize..hi as usize]);
        }
        self.next_block = last + 1;
        Ok(Some(out))
    }

    /// Reads the rest of the range into one vector.
    ///
    /// # Errors
    /// As [`FragmentReader::next_chunk`].
    pub async fn read_to_end(mut self) -> Result<Vec<u8>, StoreError> {
        let mut out = Vec::new();
        while let Some(chunk) = self.next_chunk().await? {
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// Reads the whole fragment, checking every block and the blake3 in the footer (what the
    /// auditor does). A mismatch quarantines the file.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`], [`StoreError::Io`].
    pub async fn verify_whole(mut self) -> Result<(), StoreError> {
        self.range = 0..self.footer.data_bytes;
        self.next_block = 0;
        self.end_block = self.layout.blocks(self.footer.data_bytes);
        let mut hasher = blake3::Hasher::new();
        while let Some(chunk) = self.next_chunk().await? {
            hasher.update(&chunk);
        }
        if *hasher.finalize().as_bytes() != self.footer.blake3 {
            return Err(self.corrupt(FragmentError::HashMismatch).await);
        }
        Ok(())
    }
}

fn placeholder_header() -> FragmentHeader {
    FragmentHeader {
        version: nimbus_core::ids::VersionId(0),
        fragment_index: 0,
        policy: String::new(),
        object_path: String::new(),
        object_bytes: None,
        segment_bytes: 0,
        block_record_bytes: ALIGN as u32,
        metadata: Vec::new(),
    }
}

/// The file a reader reads (for error messages and tests).
impl FragmentReader {
    /// Returns the fragment file's path.
    #[must_use]
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}
