//! The portable engine: ordinary blocking system calls, run on tokio's blocking pool so that
//! no tokio worker ever waits for a disk.

use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;

use super::{File, IoBuf, OpenMode, SyncKind, blocking};

pub(super) async fn read_at(
    fd: &Arc<OwnedFd>,
    mut buf: IoBuf,
    offset: u64,
    len: usize,
) -> (io::Result<usize>, IoBuf) {
    let fd = Arc::clone(fd);
    let joined = tokio::task::spawn_blocking(move || {
        let result = rustix::io::pread(&*fd, &mut buf.as_mut_capacity()[..len], offset)
            .map_err(io::Error::from);
        if let Ok(n) = result {
            buf.set_len(n);
        }
        (result, buf)
    })
    .await;
    joined.unwrap_or_else(|join| (Err(io::Error::other(join.to_string())), IoBuf::new(len)))
}

pub(super) async fn write_at(
    fd: &Arc<OwnedFd>,
    buf: IoBuf,
    offset: u64,
) -> (io::Result<usize>, IoBuf) {
    let fd = Arc::clone(fd);
    let len = buf.len();
    let joined = tokio::task::spawn_blocking(move || {
        let result = rustix::io::pwrite(&*fd, buf.as_slice(), offset).map_err(io::Error::from);
        (result, buf)
    })
    .await;
    joined.unwrap_or_else(|join| (Err(io::Error::other(join.to_string())), IoBuf::new(len)))
}

/// A write and, if it wrote everything, a sync, in one trip to the blocking pool.
pub(super) async fn write_sync_at(
    fd: &Arc<OwnedFd>,
    buf: IoBuf,
    offset: u64,
    kind: SyncKind,
) -> (io::Result<usize>, IoBuf) {
    let fd = Arc::clone(fd);
    let len = buf.len();
    let joined = tokio::task::spawn_blocking(move || {
        let result = rustix::io::pwrite(&*fd, buf.as_slice(), offset)
            .map_err(io::Error::from)
            .and_then(|n| {
                if n == buf.len() {
                    sync_now(&fd, kind)?;
                }
                Ok(n)
            });
        (result, buf)
    })
    .await;
    joined.unwrap_or_else(|join| (Err(io::Error::other(join.to_string())), IoBuf::new(len)))
}

fn sync_now(fd: &OwnedFd, kind: SyncKind) -> io::Result<()> {
    match kind {
        SyncKind::Data => rustix::fs::fdatasync(fd)?,
        SyncKind::All => rustix::fs::fsync(fd)?,
    }
    Ok(())
}

pub(super) async fn sync(fd: &Arc<OwnedFd>, kind: SyncKind) -> io::Result<()> {
    let fd = Arc::clone(fd);
    blocking(move || sync_now(&fd, kind)).await
}

/// Opens a file as [`OpenMode`] asks. O_DIRECT is switched on after opening, so that a file
/// system that refuses it (tmpfs, some overlays) leaves a working buffered file rather than a
/// half-created one.
pub(super) fn open(path: &Path, mode: OpenMode) -> io::Result<File> {
    let mut o = std::fs::OpenOptions::new();
    o.read(true);
    if mode.create_new {
        o.write(true).create_new(true);
    } else if mode.write {
        o.write(true);
    }
    let fd = OwnedFd::from(o.open(path)?);
    let direct = mode.direct && {
        let flags = rustix::fs::fcntl_getfl(&fd)?;
        rustix::fs::fcntl_setfl(&fd, flags | rustix::fs::OFlags::DIRECT).is_ok()
    };
    Ok(File {
        fd: Arc::new(fd),
        direct,
    })
}

pub(super) fn list_dir(path: &Path) -> io::Result<Vec<String>> {
    let entries = match std::fs::read_dir(path) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut names = Vec::new();
    for entry in entries {
        if let Some(name) = entry?.file_name().to_str() {
            names.push(name.to_owned());
        }
    }
    names.sort_unstable();
    Ok(names)
}
