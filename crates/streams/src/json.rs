//! JSON mode: validating appended bodies, and storing their messages exactly as sent.
//!
//! # What a message is
//! A message is one JSON value's exact text, from its first byte to its last: key order,
//! number spelling (`1e2`, `-0`, 30-digit decimals), string escapes and inner whitespace are
//! kept byte for byte, because a stream is a log and readers must get what the producer wrote
//! (signatures, decimal amounts, 128-bit ids). A top-level array in a body is a batch: each
//! element is a message (`[[1,2],[3]]` is two). Whitespace outside values belongs to no message.
//!
//! # Validation without a tree
//! [`Limits::split`] is a single forward pass with an explicit stack (no recursion, so any
//! configured `max_json_depth` is safe, and no `serde_json::Value` is built: a body costs one
//! small span per message). It accepts exactly RFC 8259 JSON in UTF-8 (lone `\u` surrogates are
//! syntactically valid and kept as written) and reports the first error with its line and
//! column. Depth counts a message's own arrays and objects; the batch array does not count.
//!
//! # Storage: many messages per chunk
//! Storing each message as its own chunk made a 16 MiB `[0,0,…]` append 8.4 M rows, segment
//! frames and in-memory frame descriptors. Instead an append's messages are packed into chunks
//! of about [`CHUNK_TARGET`] bytes, messages joined by a single `,`: a chunk is the inside of a
//! JSON array. So a page is `[` + chunk slices joined by `,` + `]`, with no copy per message.
//! - **Offsets** stay byte positions: a message's offset is the position of its first byte, the
//!   separator belongs to no message, and the next message starts one byte after the previous
//!   one ends. They are stable (chunks never change) and strictly increasing.
//! - **Boundaries** are recovered by [`next_message`], a scan of the stored (already validated)
//!   bytes that only tracks strings and nesting: a `,` outside strings at nesting 0 separates
//!   messages. Chunks written before this layout hold one value each, have no such comma and
//!   read the same way, so old data needs no migration.
//! - **Pages** cut only between messages; a page takes whole chunks while they fit and scans
//!   only the chunk where it has to cut or start (at most [`CHUNK_TARGET`] bytes, or one
//!   larger message). Fork sub-offsets count messages with the same scan.
//! - Producers, `Stream-Seq` and atomicity are per append, not per chunk: all chunks of an
//!   append are one commit.
//!
//! # Limits
//! Besides `max_append_bytes` on the body, an append may carry at most
//! `max_messages_per_append` messages (413), and every message costs
//! `json_message_overhead_bytes` more against `max_append_bytes` (413), so the count of tiny
//! values one request can create is bounded by both.

use std::ops::Range;

use axum::http::StatusCode;
use sessiond_store::StreamChunk;

use crate::error::{StreamError, StreamResult};

/// Preferred size of a stored JSON chunk: big enough that rows, frames and per-chunk work are
/// negligible next to the bytes, small enough that a reader cutting a page (or reading one
/// message) scans little. A single larger message gets a chunk of its own.
pub const CHUNK_TARGET: usize = 64 * 1024;

/// The JSON limits of one append.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Deepest nesting of arrays and objects inside one message.
    pub max_depth: usize,
    /// Most messages in one append.
    pub max_messages: usize,
    /// Bytes each message costs against `max_bytes` on top of its own.
    pub overhead: usize,
    /// `max_append_bytes`.
    pub max_bytes: usize,
}

impl Limits {
    /// The limits of `config`.
    pub fn of(config: &crate::config::StreamsConfig) -> Limits {
        Limits {
            max_depth: config.max_json_depth,
            max_messages: config.max_messages_per_append,
            overhead: config.json_message_overhead_bytes,
            max_bytes: config.max_append_bytes,
        }
    }

    /// Validates a JSON body and returns the byte range of each message. `allow_empty` admits
    /// `[]` or a blank body (PUT).
    pub fn split(&self, body: &[u8], allow_empty: bool) -> StreamResult<Vec<Range<usize>>> {
        if let Err(e) = std::str::from_utf8(body) {
            return Err(invalid(body, e.valid_up_to(), "invalid UTF-8"));
        }
        let mut p = Parser { b: body, i: 0 };
        p.ws();
        if p.i == body.len() {
            return if allow_empty {
                Ok(Vec::new())
            } else {
                Err(StreamError::bad_request("empty body"))
            };
        }
        let mut spans = Vec::new();
        if p.peek() == Some(b'[') {
            p.i += 1;
            p.ws();
            if p.peek() == Some(b']') {
                p.i += 1;
                if !allow_empty {
                    return Err(StreamError::bad_request(
                        "an empty JSON array appends nothing; send at least one value",
                    ));
                }
            } else {
                loop {
                    p.ws();
                    let start = p.i;
                    p.value(self.max_depth)?;
                    spans.push(start..p.i);
                    self.check_count(body.len(), spans.len())?;
                    p.ws();
                    match p.peek() {
                        Some(b',') => p.i += 1,
                        Some(b']') => {
                            p.i += 1;
                            break;
                        }
                        None => return Err(p.err("EOF while parsing a list")),
                        Some(_) => return Err(p.err("expected `,` or `]`")),
                    }
                }
            }
        } else {
            let start = p.i;
            p.value(self.max_depth)?;
            spans.push(start..p.i);
            self.check_count(body.len(), 1)?;
        }
        p.ws();
        if p.i != body.len() {
            return Err(p.err("trailing characters"));
        }
        Ok(spans)
    }

    /// Validates values a server-side producer serialized one by one (each must be exactly one
    /// JSON value) against the same limits.
    pub fn check_values(&self, values: &[Vec<u8>]) -> StreamResult<()> {
        let total: usize = values.iter().map(Vec::len).sum();
        self.check_count(total, values.len())?;
        for v in values {
            if let Err(e) = std::str::from_utf8(v) {
                return Err(invalid(v, e.valid_up_to(), "invalid UTF-8"));
            }
            // Read as one value, not as a body: an array is one message here, not a batch.
            let mut p = Parser { b: v, i: 0 };
            let blank = matches!(p.peek(), Some(b' ' | b'\t' | b'\n' | b'\r'));
            if blank || p.value(self.max_depth).is_err() || p.i != v.len() {
                return Err(StreamError::bad_request(
                    "each value must be exactly one JSON value",
                ));
            }
        }
        Ok(())
    }

    fn check_count(&self, bytes: usize, messages: usize) -> StreamResult<()> {
        if messages > self.max_messages {
            return Err(too_large(format!(
                "more than {} JSON messages in one append (streams.max_messages_per_append)",
                self.max_messages
            )));
        }
        let cost = bytes.saturating_add(messages.saturating_mul(self.overhead));
        if cost > self.max_bytes {
            return Err(too_large(format!(
                "the body with {} bytes per message exceeds streams.max_append_bytes ({})",
                self.overhead, self.max_bytes
            )));
        }
        Ok(())
    }
}

/// Bodies larger than this are validated on the blocking pool, so a large append does not
/// hold a runtime worker (and the requests queued behind it) for the length of its parse.
const BLOCKING_ABOVE: usize = 256 * 1024;

impl Limits {
    /// [`split`](Self::split) off the runtime's workers for a large body.
    pub async fn split_async(
        &self,
        body: &axum::body::Bytes,
        allow_empty: bool,
    ) -> StreamResult<Vec<Range<usize>>> {
        if body.len() <= BLOCKING_ABOVE {
            return self.split(body, allow_empty);
        }
        let (limits, body) = (*self, body.clone());
        tokio::task::spawn_blocking(move || limits.split(&body, allow_empty))
            .await
            .map_err(|_| StreamError::busy("JSON validation was interrupted; retry"))?
    }
}

fn too_large(message: String) -> StreamError {
    StreamError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
}

/// A 400 naming the line and column (1-based, in bytes) of `at`.
fn invalid(body: &[u8], at: usize, what: &str) -> StreamError {
    let before = &body[..at.min(body.len())];
    let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
    let column = 1 + before.iter().rev().take_while(|&&b| b != b'\n').count();
    StreamError::bad_request(format!(
        "body is not valid JSON: {what} at line {line} column {column}"
    ))
}

/// How many bytes of `s` come before the first that ends a run of plain string text: `"`, `\`
/// or a control character. Eight bytes are tested at once (a string's text was a byte-by-byte
/// loop, the JSON append's largest cost of its own): for each word `x`, the classic test
/// `(x - n·0x0101…) & !x & 0x8080…` marks the bytes below `n`: with `n` = 0x20 the control
/// characters, with `n` = 1 on `x` XOR-ed with `"` or `\` repeated those two. Each test's
/// lowest set bit is exact (a false hit can only follow a true one in the same word), so the
/// lowest bit of their union is the first stop.
/// Bytes from 0x80 (UTF-8, already checked) have their top bit set in `x` and never match.
fn plain_run(s: &[u8]) -> usize {
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const TOPS: u64 = u64::from_le_bytes([0x80; 8]);
    let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x & TOPS;
    let mut words = s.chunks_exact(8);
    let mut n = 0;
    for word in words.by_ref() {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(word);
        let x = u64::from_le_bytes(bytes);
        let stops = (x.wrapping_sub(ONES * 0x20) & !x & TOPS)
            | zero_byte(x ^ (ONES * u64::from(b'"')))
            | zero_byte(x ^ (ONES * u64::from(b'\\')));
        if stops != 0 {
            return n + (stops.trailing_zeros() / 8) as usize;
        }
        n += 8;
    }
    let rest = words.remainder();
    n + rest
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .unwrap_or(rest.len())
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn err(&self, what: &str) -> StreamError {
        invalid(self.b, self.i, what)
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    /// One value starting at `i` (no leading whitespace); nesting at most `max_depth`.
    fn value(&mut self, max_depth: usize) -> StreamResult<()> {
        // true: inside an object
        let mut stack: Vec<bool> = Vec::new();
        loop {
            // Expecting a value.
            self.ws();
            let mut closed = false;
            match self.peek() {
                Some(open @ (b'[' | b'{')) => {
                    if stack.len() >= max_depth {
                        return Err(self.err(&format!(
                            "nesting deeper than {max_depth} (streams.max_json_depth)"
                        )));
                    }
                    self.i += 1;
                    let object = open == b'{';
                    stack.push(object);
                    self.ws();
                    if self.peek() == Some(if object { b'}' } else { b']' }) {
                        self.i += 1;
                        stack.pop();
                        closed = true;
                    } else if object {
                        self.key()?;
                    }
                }
                Some(b'"') => {
                    self.string()?;
                    closed = true;
                }
                Some(b'-' | b'0'..=b'9') => {
                    self.number()?;
                    closed = true;
                }
                Some(b't') => closed = self.literal(b"true")?,
                Some(b'f') => closed = self.literal(b"false")?,
                Some(b'n') => closed = self.literal(b"null")?,
                None => return Err(self.err("EOF while parsing a value")),
                Some(_) => return Err(self.err("expected value")),
            }
            if !closed {
                continue;
            }
            // After a complete value: close containers until one expects another value.
            loop {
                let Some(&object) = stack.last() else {
                    return Ok(());
                };
                self.ws();
                match self.peek() {
                    Some(b',') => {
                        self.i += 1;
                        if object {
                            self.ws();
                            self.key()?;
                        }
                        break;
                    }
                    Some(b']') if !object => {
                        self.i += 1;
                        stack.pop();
                    }
                    Some(b'}') if object => {
                        self.i += 1;
                        stack.pop();
                    }
                    None => return Err(self.err("EOF while parsing a value")),
                    Some(_) if object => return Err(self.err("expected `,` or `}`")),
                    Some(_) => return Err(self.err("expected `,` or `]`")),
                }
            }
        }
    }

    /// `"key"` then `:` (whitespace allowed around the colon).
    fn key(&mut self) -> StreamResult<()> {
        match self.peek() {
            Some(b'"') => self.string()?,
            None => return Err(self.err("EOF while parsing an object")),
            Some(_) => return Err(self.err("key must be a string")),
        }
        self.ws();
        if self.peek() != Some(b':') {
            return Err(self.err("expected `:`"));
        }
        self.i += 1;
        Ok(())
    }

    fn string(&mut self) -> StreamResult<()> {
        self.i += 1;
        loop {
            self.i += plain_run(&self.b[self.i..]);
            let Some(b) = self.peek() else {
                return Err(self.err("EOF while parsing a string"));
            };
            match b {
                b'"' => {
                    self.i += 1;
                    return Ok(());
                }
                b'\\' => {
                    self.i += 1;
                    match self.peek() {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.i += 1,
                        Some(b'u') => {
                            self.i += 1;
                            for _ in 0..4 {
                                if !self.peek().is_some_and(|h| h.is_ascii_hexdigit()) {
                                    return Err(self.err("invalid \\u escape"));
                                }
                                self.i += 1;
                            }
                        }
                        None => return Err(self.err("EOF while parsing a string")),
                        Some(_) => return Err(self.err("invalid escape")),
                    }
                }
                0..=0x1f => return Err(self.err("control character in a string")),
                _ => self.i += 1,
            }
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.i += 1;
        }
        self.i - start
    }

    fn number(&mut self) -> StreamResult<()> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.err("invalid number")),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return Err(self.err("invalid number"));
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return Err(self.err("invalid number"));
            }
        }
        Ok(())
    }

    fn literal(&mut self, word: &[u8]) -> StreamResult<bool> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(true)
        } else {
            Err(self.err("expected value"))
        }
    }
}

/// Packs messages into chunks of about [`CHUNK_TARGET`] bytes (messages joined by `,`), the
/// first at offset `start`. Returns the chunks and the offset after the last.
pub fn pack<'a>(
    messages: impl ExactSizeIterator<Item = &'a [u8]> + Clone,
    start: u64,
) -> (Vec<StreamChunk>, u64) {
    let mut left: usize = messages.clone().map(|m| m.len() + 1).sum();
    let mut chunks = Vec::new();
    let mut pos = start;
    let mut current: Vec<u8> = Vec::new();
    for m in messages {
        if !current.is_empty() && current.len() + 1 + m.len() > CHUNK_TARGET {
            let chunk = StreamChunk {
                offset: pos,
                data: std::mem::take(&mut current),
            };
            pos = chunk.end();
            chunks.push(chunk);
        }
        if current.is_empty() {
            current.reserve_exact(left.min(CHUNK_TARGET).max(m.len()));
        } else {
            current.push(b',');
        }
        current.extend_from_slice(m);
        left -= m.len() + 1;
    }
    if !current.is_empty() {
        let chunk = StreamChunk {
            offset: pos,
            data: current,
        };
        pos = chunk.end();
        chunks.push(chunk);
    }
    (chunks, pos)
}

/// The message of a stored chunk that starts at `start`: returns `(end, next)`, the end of its
/// bytes and where the next message starts (`data.len()` for the last one). `data` holds
/// validated messages joined by `,`, so only strings and nesting need tracking.
pub fn next_message(data: &[u8], start: usize) -> (usize, usize) {
    let mut depth = 0usize;
    let mut i = start;
    while i < data.len() {
        match data[i] {
            b'"' => {
                i += 1;
                while i < data.len() {
                    match data[i] {
                        b'\\' => i += 2,
                        b'"' => break,
                        _ => i += 1,
                    }
                }
            }
            b'[' | b'{' => depth += 1,
            b']' | b'}' => depth = depth.saturating_sub(1),
            b',' if depth == 0 => return (i, i + 1),
            _ => {}
        }
        i += 1;
    }
    (data.len(), data.len())
}

/// Joins stored pieces (each one or more messages joined by `,`) into one JSON array.
pub fn join<V: AsRef<[u8]>>(values: &[V]) -> Vec<u8> {
    let capacity = values.iter().map(|v| v.as_ref().len() + 1).sum::<usize>() + 2;
    let mut out = Vec::with_capacity(capacity);
    out.push(b'[');
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(v.as_ref());
    }
    out.push(b']');
    out
}

#[cfg(test)]
#[path = "json_tests.rs"]
mod tests;
