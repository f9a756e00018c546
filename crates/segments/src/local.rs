//! Ranged reads of segment files in a local directory, without `object_store` in between.
//!
//! Why: a catch-up reader pages through cold segments, one ranged read of a few MiB per page.
//! Through `object_store`'s `LocalFileSystem` each such read opened and `stat`ed the file on
//! one blocking-pool thread, then read it on a second one into a buffer it had first filled
//! with zeros: two thread hand-offs per page, and the zero-fill alone was about a tenth of a
//! catch-up's CPU (`docs/benchmarks.md`). Here a read is one blocking task that opens the
//! file and reads the range with positioned reads straight into the buffer's uninitialised
//! capacity (`pread`, through `rustix`'s safe spare-capacity buffer).
//!
//! Nothing else changes: the file path is the one `LocalFileSystem` maps the key to (its own
//! `path_to_filesystem`), the file is opened for every read (no descriptor outlives it, so a
//! segment deleted by retention or with its stream is gone for the next read exactly as
//! before), and a missing file is the same `object_store::Error::NotFound` the store returns.
//! Writes, deletes, listings and the first (suffix) read of a segment still go through the
//! store. Other platforms, and every other store (S3), read through `object_store`.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use object_store::local::LocalFileSystem;
use object_store::path::Path;

/// The local directory a tier writes to, for its direct reads.
#[derive(Clone)]
pub(crate) struct LocalFiles {
    store: Arc<LocalFileSystem>,
}

impl LocalFiles {
    pub(crate) fn new(store: Arc<LocalFileSystem>) -> LocalFiles {
        LocalFiles { store }
    }

    /// The bytes `range` of the object at `location` (fewer when the file ends inside it).
    pub(crate) async fn get_range(
        &self,
        location: &Path,
        range: Range<u64>,
    ) -> object_store::Result<Bytes> {
        let file = self.store.path_to_filesystem(location)?;
        let read = tokio::task::spawn_blocking(move || read_range(&file, range));
        match read.await {
            Ok(bytes) => bytes,
            Err(e) => Err(generic(std::io::Error::other(e))),
        }
    }
}

fn generic(source: std::io::Error) -> object_store::Error {
    object_store::Error::Generic {
        store: "LocalFileSystem",
        source: Box::new(source),
    }
}

/// Opens `file`; a missing one is the store's own `NotFound` (same path, same source).
fn open(file: &std::path::Path) -> object_store::Result<std::fs::File> {
    std::fs::File::open(file).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => object_store::Error::NotFound {
            path: file.to_string_lossy().into_owned(),
            source: Box::new(source),
        },
        kind => generic(std::io::Error::new(
            kind,
            format!("cannot open {}: {source}", file.display()),
        )),
    })
}

/// The file ends before the range starts: an error, as from the store (a range that starts
/// inside the file but ends past it is returned cut short, as the store does too).
fn before_range(file: &std::path::Path, range: &Range<u64>) -> object_store::Error {
    generic(std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        format!("{} ends before the range {range:?}", file.display()),
    ))
}

/// Opens `file` and reads `range` of it into a buffer that is never zero-filled.
#[cfg(unix)]
fn read_range(file: &std::path::Path, range: Range<u64>) -> object_store::Result<Bytes> {
    use std::io::Error;

    let opened = open(file)?;
    let len = usize::try_from(range.end.saturating_sub(range.start))
        .map_err(|_| generic(Error::other("range larger than memory")))?;
    let mut buf = Vec::with_capacity(len);
    while buf.len() < len {
        let at = range.start + buf.len() as u64;
        match rustix::io::pread(&opened, rustix::buffer::spare_capacity(&mut buf), at) {
            Ok(0) if buf.is_empty() => return Err(before_range(file, &range)),
            // Cut short, as the store does: the caller finds the frames incomplete (corrupt).
            Ok(0) => break,
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => {
                let e = Error::from(e);
                return Err(generic(Error::new(
                    e.kind(),
                    format!("cannot read {}: {e}", file.display()),
                )));
            }
        }
    }
    // The capacity may exceed what was asked for (and then so may the read).
    buf.truncate(len);
    Ok(Bytes::from(buf))
}

/// Elsewhere: a seek and a bounded `read_to_end` (std reads into the spare capacity too).
#[cfg(not(unix))]
fn read_range(file: &std::path::Path, range: Range<u64>) -> object_store::Result<Bytes> {
    use std::io::{Error, Read, Seek, SeekFrom};

    let failed = |e: Error| generic(Error::new(e.kind(), format!("{}: {e}", file.display())));
    let mut opened = open(file)?;
    let len = range.end.saturating_sub(range.start);
    opened.seek(SeekFrom::Start(range.start)).map_err(failed)?;
    let mut buf = Vec::new();
    opened.take(len).read_to_end(&mut buf).map_err(failed)?;
    if buf.is_empty() && len > 0 {
        return Err(before_range(file, &range));
    }
    Ok(Bytes::from(buf))
}
