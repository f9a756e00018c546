//! The fork-aware range reader every read mode shares: pages of a [`Snapshot`] assembled from
//! the hot log and the cold tier.
//!
//! Chunks below a snapshot's tail never change, so these reads take no lock. Pieces are
//! [`Bytes`]: a cold chunk is a slice of the segment the cold tier fetched (and verified) once,
//! a hot chunk is the engine's buffer moved in, and cutting a chunk to the page budget is a
//! slice, so a page of a large stream is assembled without copying its bytes.
//!
//! Readers woken at the tail of a stream first look at the chunks its last appends left in
//! memory (`recent.rs`): one engine read per append instead of one per reader.
//!
//! Which tier first: the hot log holds the tail, the cold tier everything below the first hot
//! chunk. Asking the hot log first for an offset that is sealed reads up to a page of hot
//! chunks only to discard them, so offsets below the cold tier's [`ColdReader::sealed_end_hint`]
//! go to the cold tier first. Either order is correct on its own: a seal is one engine
//! transaction (index row + deletion of the hot rows), so a reader that misses a range in the
//! first tier finds it in the second.
//!
//! What a tier returns is checked before it is cut: chunks in offset order, none overlapping
//! the one before, offsets that do not overflow, and every cut inside its chunk. A damaged
//! index (overlapping segments, a frame that lies about its offset) is server-side corruption:
//! it is logged and answered as a 500, never a panic in the request's task and never bytes
//! served at the wrong offsets.

use std::ops::Range;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sessiond_store::StoreError;

use crate::cold::SharedChunk;
use crate::error::{StreamError, StreamResult};
use crate::offset;
use crate::protocol::{CLOSED, CURSOR, NEXT_OFFSET, START_OFFSET, UP_TO_DATE};
use crate::service::{Snapshot, Streams};

/// One page of a read: the values (JSON) or byte pieces (binary) and where the next read starts.
pub struct Page {
    pub pieces: Vec<Bytes>,
    pub next: u64,
    /// JSON messages in the page, counted only when the read was limited by a message count.
    pub messages: usize,
}

impl Streams {
    /// Sealed chunks of `path` from `from` (empty when `from` is not sealed).
    async fn read_cold(&self, path: &str, from: u64, max: usize) -> StreamResult<Vec<SharedChunk>> {
        Ok(self.cold.read(path, from, max).await?)
    }

    /// Chunks of `path` from `from`, checked (see the module docs).
    async fn read_path(&self, path: &str, from: u64, max: usize) -> StreamResult<Vec<SharedChunk>> {
        let chunks = self.read_tiers(path, from, max).await?;
        check_chunks(path, &chunks)?;
        Ok(chunks)
    }

    /// Chunks of `path` from `from`: sealed ones from the cold tier, hot ones from the engine.
    async fn read_tiers(
        &self,
        path: &str,
        from: u64,
        max: usize,
    ) -> StreamResult<Vec<SharedChunk>> {
        let probably_cold = from < self.cold.sealed_end_hint(path);
        if probably_cold {
            let cold = self.read_cold(path, from, max).await?;
            if !cold.is_empty() {
                return Ok(cold);
            }
        }
        let hot = self.store.read_chunks(path, from, max).await?;
        let first_hot = hot.first().map(|c| c.offset);
        if !probably_cold && first_hot.is_none_or(|offset| offset > from) {
            let mut cold = self.read_cold(path, from, max).await?;
            cold.retain(|c| first_hot.is_none_or(|h| c.offset < h));
            if !cold.is_empty() {
                return Ok(cold);
            }
        }
        Ok(hot.into_iter().map(SharedChunk::from).collect())
    }

    /// 410 `offset_gone` when `pos` of `path` is below its stored retained start (a reader
    /// whose snapshot predates a trim finds a hole where its data was), or, on a `compacted`
    /// stream, below its stored purge point (a compaction since the snapshot dropped a delete
    /// this reader has not seen).
    async fn refuse_trimmed(&self, path: &str, pos: u64, compacted: bool) -> StreamResult<()> {
        match self.store.stream_meta(path).await? {
            Some(meta) if meta.start > pos => {
                Err(crate::error::StreamError::offset_gone(meta.start))
            }
            Some(meta) if compacted => {
                let purged = crate::state::Stream::decode(&meta)?
                    .info
                    .compaction
                    .map_or(0, |c| c.purged);
                if pos > meta.start && pos < purged {
                    return Err(crate::error::StreamError::offset_gone(meta.start));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Whether `pos` is where a message of `snap` starts (or its tail, or its retained start):
    /// the only offsets a trim may cut at. Binary streams have no framing inside an append, so
    /// there a message is an append's chunk.
    pub async fn is_boundary(&self, snap: &Snapshot, pos: u64) -> StreamResult<bool> {
        if pos == snap.tail || pos == snap.retained {
            return Ok(true);
        }
        if pos > snap.tail || pos < snap.retained {
            return Ok(false);
        }
        for (path, start, end) in ranges(snap) {
            if pos == start {
                return Ok(true);
            }
            if pos > start && pos < end {
                let chunks = self.read_path(path, pos, 1).await?;
                let Some(c) = chunks.first().filter(|c| c.offset <= pos) else {
                    return Ok(false);
                };
                if c.offset == pos || !snap.json {
                    return Ok(c.offset == pos);
                }
                let lo = (pos - c.offset) as usize;
                let mut at = 0;
                while at < lo {
                    at = crate::json::next_message(&c.data, at).1;
                }
                return Ok(at == lo);
            }
        }
        Ok(false)
    }

    /// The first message boundary of `snap` at or after `pos` (the tail when none): where a
    /// byte-size cut may go. Inside a fork's inherited range, the fork point (keeps more).
    pub async fn boundary_at_or_after(&self, snap: &Snapshot, pos: u64) -> StreamResult<u64> {
        if pos < snap.start {
            return Ok(snap.start);
        }
        let chunks = self.read_path(&snap.path, pos, 1).await?;
        let Some(c) = chunks.first().filter(|c| c.offset <= pos && c.end() > pos) else {
            return Ok(pos.min(snap.tail));
        };
        if c.offset == pos || !snap.json {
            return Ok(if c.offset == pos { pos } else { c.end() });
        }
        let lo = (pos - c.offset) as usize;
        let mut at = 0;
        while at < lo {
            at = crate::json::next_message(&c.data, at).1;
        }
        Ok(c.offset + at as u64)
    }

    /// The end of the stored message that contains (or starts at) `pos`, capped at its range.
    pub async fn message_end(&self, snap: &Snapshot, pos: u64) -> StreamResult<Option<u64>> {
        for (path, start, end) in ranges(snap) {
            if pos >= start && pos < end {
                let chunks = self.read_path(path, pos, 1).await?;
                return Ok(chunks.first().map(|c| c.end().min(end)));
            }
        }
        Ok(None)
    }

    /// One page of `snap` from `from`: at most `max` bytes (binary pages are cut anywhere; JSON
    /// pages only between messages, and always hold at least one), spanning the fork's
    /// ancestors and its own data.
    pub async fn read_page(&self, snap: &Snapshot, from: u64, max: usize) -> StreamResult<Page> {
        self.read_limited(snap, from, max, usize::MAX).await
    }

    /// [`read_page`](Self::read_page) that also stops after `max_messages` JSON messages.
    pub async fn read_limited(
        &self,
        snap: &Snapshot,
        from: u64,
        max: usize,
        max_messages: usize,
    ) -> StreamResult<Page> {
        if from < snap.retained || (from > snap.retained && from < snap.purged) {
            return Err(crate::error::StreamError::offset_gone(snap.retained));
        }
        let ranges = ranges(snap);
        let mut pos = from.min(snap.tail);
        let mut budget = max.max(1);
        let mut pieces = Vec::new();
        let mut messages = 0usize;
        'ranges: for (path, _start, end) in ranges {
            while pos < end {
                let in_memory = (path == snap.path)
                    .then(|| snap.recent.chunks_from(snap.created_at, snap.epoch, pos))
                    .flatten();
                let chunks = match in_memory {
                    Some(chunks) => chunks,
                    None => self.read_path(path, pos, budget).await?,
                };
                if chunks.first().is_none_or(|c| c.offset > pos) {
                    // A hole below the snapshot's tail: a trim ran after the snapshot.
                    self.refuse_trimmed(path, pos, snap.compacted).await?;
                }
                if chunks.is_empty() {
                    break;
                }
                let mut advanced = false;
                for c in chunks {
                    if c.offset >= end {
                        break;
                    }
                    if c.end() <= pos {
                        continue;
                    }
                    if snap.json {
                        let room = if pieces.is_empty() {
                            usize::MAX
                        } else {
                            budget
                        };
                        let left = max_messages - messages;
                        match take_messages(path, &c, pos, end, room, left)? {
                            Take::Nothing => pos = c.end().min(end),
                            Take::Full => break 'ranges,
                            Take::Some {
                                piece,
                                next,
                                count,
                                cut,
                            } => {
                                budget = budget.saturating_sub(piece.len());
                                messages += count;
                                pos = next;
                                pieces.push(piece);
                                if cut || messages >= max_messages {
                                    break 'ranges;
                                }
                            }
                        }
                    } else {
                        let from_in = (pos.max(c.offset) - c.offset) as usize;
                        let to_in = (c.end().min(end) - c.offset) as usize;
                        let take = (to_in.saturating_sub(from_in)).min(budget);
                        pieces.push(cut(path, &c.data, from_in..from_in + take)?);
                        budget -= take;
                        pos += take as u64;
                    }
                    advanced = true;
                    if budget == 0 {
                        break 'ranges;
                    }
                }
                if !advanced {
                    break;
                }
            }
        }
        Ok(Page {
            pieces,
            next: pos,
            messages,
        })
    }
}

/// What a JSON page takes from one chunk.
enum Take {
    /// No message of the chunk starts in the range asked for.
    Nothing,
    /// The first message there does not fit the page.
    Full,
    /// `piece` (whole messages joined by `,`), `count` of them (exact only when a message count
    /// limits the take), the offset after them, and
    /// whether the page stopped inside the chunk (the next message did not fit).
    Some {
        piece: Bytes,
        next: u64,
        count: usize,
        cut: bool,
    },
}

/// The messages of `c` starting in `[from, until)`, while they fit `room` bytes and number at
/// most `max_count`. A chunk taken whole needs no scan; otherwise only this chunk is scanned
/// (see `json.rs` for the layout).
fn take_messages(
    path: &str,
    c: &SharedChunk,
    from: u64,
    until: u64,
    room: usize,
    max_count: usize,
) -> StreamResult<Take> {
    let data = &c.data;
    let lo = from.saturating_sub(c.offset) as usize;
    let hi = (until.saturating_sub(c.offset) as usize).min(data.len());
    if lo == 0 && hi == data.len() && data.len() <= room && max_count == usize::MAX {
        return Ok(Take::Some {
            piece: c.data.clone(),
            next: c.end(),
            count: 1,
            cut: false,
        });
    }
    let mut at = 0;
    while at < lo {
        at = crate::json::next_message(data, at).1;
    }
    let start = at;
    let (mut stop, mut count) = (at, 0usize);
    while at < hi && count < max_count {
        let (end, next) = crate::json::next_message(data, at);
        if end - start > room {
            break;
        }
        (stop, at, count) = (end, next, count + 1);
    }
    if count == 0 {
        return Ok(if start < hi {
            Take::Full
        } else {
            Take::Nothing
        });
    }
    Ok(Take::Some {
        piece: cut(path, &c.data, start..stop)?,
        next: c.offset + at as u64,
        count,
        cut: at < hi,
    })
}

/// Corruption found on the read path: logged here (the client sees only a 500).
fn corrupt(path: &str, what: String) -> StreamError {
    tracing::error!(
        stream = path,
        "corrupt stream data on the read path: {what}"
    );
    StoreError::Corrupt(format!("stream {path}: {what}")).into()
}

/// `data[range]` as a shared slice, or a corruption error when the range is not inside it.
fn cut(path: &str, data: &Bytes, range: Range<usize>) -> StreamResult<Bytes> {
    if range.start <= range.end && range.end <= data.len() {
        Ok(data.slice(range))
    } else {
        Err(corrupt(
            path,
            format!("cut {range:?} of a chunk of {} bytes", data.len()),
        ))
    }
}

/// Chunks must come in offset order without overlapping and end below `u64::MAX`.
fn check_chunks(path: &str, chunks: &[SharedChunk]) -> StreamResult<()> {
    let mut previous_end: Option<u64> = None;
    for c in chunks {
        let Some(end) = c.offset.checked_add(c.data.len() as u64) else {
            return Err(corrupt(path, format!("chunk at {} overflows", c.offset)));
        };
        if let Some(previous) = previous_end.filter(|p| c.offset < *p) {
            return Err(corrupt(
                path,
                format!(
                    "chunk at {} overlaps the one before it (ending at {previous})",
                    c.offset
                ),
            ));
        }
        previous_end = Some(end);
    }
    Ok(())
}

/// The stretches of a snapshot: each ancestor's `[start, end)` (clamped at the fork point),
/// then the stream's own data.
fn ranges(snap: &Snapshot) -> Vec<(&str, u64, u64)> {
    let mut out: Vec<(&str, u64, u64)> = Vec::with_capacity(snap.lineage.len() + 1);
    for (i, a) in snap.lineage.iter().enumerate() {
        let end = snap
            .lineage
            .get(i + 1)
            .map_or(snap.start, |n| n.start)
            .min(snap.start);
        out.push((&a.path, a.start, end));
    }
    out.push((&snap.path, snap.start, snap.tail));
    out
}

/// The body of a page: JSON values as one array, other types as the bytes (a page that is one
/// piece, e.g. a page inside one stored chunk, is sent without a copy).
pub fn body(snap: &Snapshot, page: &Page) -> Bytes {
    if snap.json {
        Bytes::from(crate::json::join(&page.pieces))
    } else if let [piece] = page.pieces.as_slice() {
        piece.clone()
    } else {
        Bytes::from(page.pieces.concat())
    }
}

/// A binary page of several pieces, sent piece by piece: each piece is a slice of a stored
/// chunk or of a cold segment, so the page is never copied into one buffer (a 4 MiB page of
/// 64 KiB chunks was a 4 MiB copy per response, about a tenth of a catch-up's CPU). The
/// exact length makes the response carry `Content-Length`, as the one-buffer body did.
struct Pieces {
    pieces: std::collections::VecDeque<Bytes>,
    left: u64,
}

impl http_body::Body for Pieces {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let next = self.pieces.pop_front().map(|piece| {
            self.left -= piece.len() as u64;
            Ok(http_body::Frame::data(piece))
        });
        std::task::Poll::Ready(next)
    }

    fn is_end_stream(&self) -> bool {
        self.pieces.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.left)
    }
}

/// The response body of a page: binary pages of several pieces without a copy ([`Pieces`]),
/// anything else as [`body`].
fn response_body(snap: &Snapshot, page: &Page) -> axum::body::Body {
    if snap.json || page.pieces.len() < 2 {
        return axum::body::Body::from(body(snap, page));
    }
    let pieces: std::collections::VecDeque<Bytes> = page
        .pieces
        .iter()
        .filter(|p| !p.is_empty())
        .cloned()
        .collect();
    let left = pieces.iter().map(|p| p.len() as u64).sum();
    axum::body::Body::new(Pieces { pieces, left })
}

/// A 200 carrying `page`, with the protocol headers (`cursor` for live reads).
pub fn page_response(
    snap: &Snapshot,
    from: u64,
    page: &Page,
    etag: bool,
) -> StreamResult<Response> {
    let at_end = page.next >= snap.tail;
    let mut r = (StatusCode::OK, response_body(snap, page)).into_response();
    let h = r.headers_mut();
    let put = |h: &mut HeaderMap, name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    };
    put(h, "content-type", snap.content_type.clone());
    put(h, NEXT_OFFSET, offset::format(page.next));
    put(h, START_OFFSET, offset::format(snap.retained));
    if at_end {
        h.insert(UP_TO_DATE, HeaderValue::from_static("true"));
        if snap.closed {
            h.insert(CLOSED, HeaderValue::from_static("true"));
        }
    }
    if etag {
        let closed = if at_end && snap.closed { ":c" } else { "" };
        let generation = match snap.generation {
            0 => String::new(),
            g => format!(":g{g}"),
        };
        put(
            h,
            "etag",
            format!(
                "\"{}:{}:{}{generation}{closed}\"",
                snap.created_at, from, page.next
            ),
        );
    }
    Ok(r)
}

/// Adds `Stream-Cursor`.
pub fn with_cursor(mut r: Response, cursor: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(cursor) {
        r.headers_mut().insert(CURSOR, v);
    }
    r
}
