//! Segment format 2: checksummed frames plus an index, so a reader fetches and verifies only
//! the frames it serves.
//!
//! Why: format 1 (`format.rs`) has one CRC over the whole object, so serving any part of a
//! segment meant fetching, checking and decoding all of it; with a segment larger than the read
//! cache, every page of a catch-up read did that again (a 108 MB segment of 8.4 M tiny frames
//! cost hundreds of MB per concurrent reader). Here each frame carries its own CRC and a
//! footer locates an index of the frames: a read costs one small suffix read (once per segment
//! while the index stays cached) and one ranged read of exactly the frames it returns.
//!
//! All integers little-endian.
//!
//! | part | layout |
//! | --- | --- |
//! | header | magic `SDSTSEG2` (8) |
//! | frames | per chunk: its bytes, then CRC-32 of those bytes (`u32`) |
//! | index | per frame: `offset` (`u64`), `at` (`u64`, file position of its bytes), `len` (`u32`) |
//! | footer | `start` (`u64`), `end` (`u64`), `count` (`u32`), `index_at` (`u64`), CRC-32 of the index and the four footer fields before it (`u32`), magic `SDSTSEG2` (8) |
//!
//! A reader accepts an index only if its CRC matches and the frames are contiguous in offsets
//! (from `start` to `end`) and packed in the file (the first right after the header, each right
//! after the previous frame's CRC, the last ending at `index_at`, the index filling the space up
//! to the footer). A frame is returned only if its CRC matches. The trailing magic tells the two
//! formats apart from a suffix read alone (format 1 ends with a CRC).

use std::ops::Range;

use bytes::Bytes;
use sessiond_store::{StoreError, StreamChunk};

use crate::format::{crc32, Frame};

/// First and last 8 bytes of every segment file of this format.
pub const MAGIC: &[u8; 8] = b"SDSTSEG2";
/// Bytes of the footer.
pub const FOOTER: usize = 8 + 8 + 4 + 8 + 4 + 8;
const ENTRY: usize = 8 + 8 + 4;
const FRAME_CRC: usize = 4;

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("segment file: {what}"))
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

fn le32(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

/// Encodes `chunks` (contiguous, non-empty) as a format-2 segment.
pub fn encode(chunks: &[StreamChunk]) -> Result<Vec<u8>, StoreError> {
    let (Some(first), Some(last)) = (chunks.first(), chunks.last()) else {
        return Err(corrupt("a segment needs at least one chunk"));
    };
    let count = u32::try_from(chunks.len()).map_err(|_| corrupt("too many chunks"))?;
    let data: usize = chunks.iter().map(|c| c.data.len() + FRAME_CRC).sum();
    let mut out = Vec::with_capacity(MAGIC.len() + data + chunks.len() * ENTRY + FOOTER);
    out.extend_from_slice(MAGIC);
    let mut index = Vec::with_capacity(chunks.len() * ENTRY);
    let mut expected = first.offset;
    for c in chunks {
        if c.offset != expected {
            return Err(StoreError::Corrupt(format!(
                "chunks to seal are not contiguous: {} follows {expected}",
                c.offset
            )));
        }
        let len = u32::try_from(c.data.len()).map_err(|_| corrupt("chunk larger than 4 GiB"))?;
        index.extend_from_slice(&c.offset.to_le_bytes());
        index.extend_from_slice(&(out.len() as u64).to_le_bytes());
        index.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&c.data);
        out.extend_from_slice(&crc32(&c.data).to_le_bytes());
        expected = c.end();
    }
    let index_at = out.len() as u64;
    out.extend_from_slice(&index);
    out.extend_from_slice(&first.offset.to_le_bytes());
    out.extend_from_slice(&last.end().to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&index_at.to_le_bytes());
    let crc = crc32(&out[index_at as usize..]);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(MAGIC);
    Ok(out)
}

/// One frame's place in the offset space and in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    offset: u64,
    at: u64,
    len: u32,
}

/// The verified index of a format-2 segment.
#[derive(Debug, PartialEq, Eq)]
pub struct Index {
    /// First offset covered.
    pub start: u64,
    /// Offset after the last byte covered.
    pub end: u64,
    entries: Vec<Entry>,
}

/// Where a segment's index lies, read from its last [`FOOTER`] bytes.
pub struct Footer {
    index_at: u64,
    count: u32,
    size: u64,
    fields: [u8; FOOTER - 12],
    crc: u32,
}

impl Footer {
    /// The footer in `tail` (the object's last bytes, at least [`FOOTER`] of them unless the
    /// object is shorter) of an object of `size` bytes; `None` when the object is not format 2.
    pub fn parse(tail: &[u8], size: u64) -> Result<Option<Footer>, StoreError> {
        if tail.len() < FOOTER || !tail.ends_with(MAGIC) {
            return Ok(None);
        }
        let f = &tail[tail.len() - FOOTER..];
        let mut fields = [0u8; FOOTER - 12];
        fields.copy_from_slice(&f[..FOOTER - 12]);
        let footer = Footer {
            index_at: le64(f, 20),
            count: le32(f, 16),
            size,
            fields,
            crc: le32(f, FOOTER - 12),
        };
        let expected = (footer.count as u64)
            .checked_mul(ENTRY as u64)
            .and_then(|n| n.checked_add(footer.index_at))
            .and_then(|n| n.checked_add(FOOTER as u64));
        if expected != Some(size) || footer.count == 0 {
            return Err(corrupt("footer does not match the object's size"));
        }
        Ok(Some(footer))
    }

    /// The file range of the index.
    pub fn index_range(&self) -> Range<u64> {
        self.index_at..self.size - FOOTER as u64
    }

    /// Verifies and parses the index bytes (the [`index_range`](Self::index_range)).
    pub fn index(&self, bytes: &[u8]) -> Result<Index, StoreError> {
        let mut crc_input = Vec::with_capacity(bytes.len() + self.fields.len());
        crc_input.extend_from_slice(bytes);
        crc_input.extend_from_slice(&self.fields);
        if bytes.len() != self.count as usize * ENTRY || crc32(&crc_input) != self.crc {
            return Err(corrupt("index checksum mismatch"));
        }
        let (start, end) = (le64(&self.fields, 0), le64(&self.fields, 8));
        let mut entries = Vec::with_capacity(self.count as usize);
        let (mut offset, mut at) = (start, MAGIC.len() as u64);
        for e in bytes.chunks_exact(ENTRY) {
            let entry = Entry {
                offset: le64(e, 0),
                at: le64(e, 8),
                len: le32(e, 16),
            };
            if entry.offset != offset || entry.at != at {
                return Err(corrupt("frames are not contiguous"));
            }
            offset += entry.len as u64;
            at += entry.len as u64 + FRAME_CRC as u64;
            entries.push(entry);
        }
        if offset != end || at != self.index_at {
            return Err(corrupt("frames do not cover the footer's range"));
        }
        Ok(Index {
            start,
            end,
            entries,
        })
    }
}

impl Index {
    /// Bytes this index occupies in memory (for the cache's budget).
    pub fn memory(&self) -> usize {
        self.entries.len() * std::mem::size_of::<Entry>() + 64
    }

    /// The frames ending after `from`, stopping once `max_bytes` were collected (at least one
    /// when any ends after `from`): as index positions.
    pub fn covering(&self, from: u64, max_bytes: usize) -> Range<usize> {
        let first = self
            .entries
            .partition_point(|e| e.offset + e.len as u64 <= from);
        let mut last = first;
        let mut bytes = 0usize;
        while last < self.entries.len() && (last == first || bytes < max_bytes) {
            bytes = bytes.saturating_add(self.entries[last].len as usize);
            last += 1;
        }
        first..last
    }

    /// The file range holding the frames `frames` (with their CRCs).
    pub fn file_range(&self, frames: Range<usize>) -> Range<u64> {
        match (self.entries.get(frames.start), frames.end.checked_sub(1)) {
            (Some(first), Some(last)) if last >= frames.start => {
                let last = self.entries[last];
                first.at..last.at + last.len as u64 + FRAME_CRC as u64
            }
            _ => 0..0,
        }
    }

    /// The frames `frames` from `bytes` (what [`file_range`](Self::file_range) returned),
    /// each verified by its CRC; slices of `bytes`.
    pub fn frames(&self, frames: Range<usize>, bytes: &Bytes) -> Result<Vec<Frame>, StoreError> {
        let base = self.file_range(frames.clone()).start;
        if bytes.len() as u64 != self.file_range(frames.clone()).end - base {
            return Err(corrupt("short ranged read"));
        }
        let entries = self
            .entries
            .get(frames.clone())
            .ok_or_else(|| corrupt("frames outside the index"))?;
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            // Checked although the index was verified contiguous: a read path never panics
            // on what it was handed.
            let from =
                e.at.checked_sub(base)
                    .and_then(|from| usize::try_from(from).ok())
                    .ok_or_else(|| corrupt("frame before the ranged read"))?;
            let to = from
                .checked_add(e.len as usize)
                .filter(|to| to.saturating_add(FRAME_CRC) <= bytes.len())
                .ok_or_else(|| corrupt("frame past the ranged read"))?;
            let data = bytes.slice(from..to);
            if crc32(&data) != le32(bytes, to) {
                return Err(corrupt("frame checksum mismatch"));
            }
            out.push(Frame {
                offset: e.offset,
                data,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn chunk(offset: u64, data: &[u8]) -> StreamChunk {
        StreamChunk {
            offset,
            data: data.to_vec(),
        }
    }

    fn open(file: &[u8]) -> Result<Index, StoreError> {
        let footer = Footer::parse(file, file.len() as u64)?.ok_or_else(|| corrupt("no footer"))?;
        let r = footer.index_range();
        footer.index(&file[r.start as usize..r.end as usize])
    }

    #[test]
    fn ranged_reads_return_exactly_the_needed_frames() {
        let chunks = vec![chunk(100, b"ab\0c"), chunk(104, &[7; 3]), chunk(107, b"z")];
        let file = encode(&chunks).unwrap();
        assert_eq!(&file[..8], MAGIC);
        let index = open(&file).unwrap();
        assert_eq!((index.start, index.end), (100, 108));
        for (from, max, want) in [
            (100, 1, 0..1),
            (103, 4, 0..1),
            (104, 4, 1..3),
            (100, 99, 0..3),
            (108, 9, 3..3),
        ] {
            let frames = index.covering(from, max);
            assert_eq!(frames, want, "from {from} max {max}");
            let r = index.file_range(frames.clone());
            let bytes = Bytes::copy_from_slice(&file[r.start as usize..r.end as usize]);
            let got = index.frames(frames.clone(), &bytes).unwrap();
            let got: Vec<StreamChunk> = got.into_iter().map(Into::into).collect();
            assert_eq!(got, chunks[frames]);
        }
    }

    #[test]
    fn refuses_damage_anywhere() {
        let file = encode(&[chunk(0, b"hello"), chunk(5, b"world")]).unwrap();
        for i in 0..file.len() {
            let mut bad = file.clone();
            bad[i] ^= 0x40;
            let ok = open(&bad).and_then(|index| {
                let all = 0..2;
                let r = index.file_range(all.clone());
                index.frames(
                    all,
                    &Bytes::copy_from_slice(&bad[r.start as usize..r.end as usize]),
                )
            });
            // The leading magic is not read by a ranged reader; everything else is checked.
            assert!(ok.is_err() || i < 8, "flipped byte {i} accepted");
        }
        assert!(
            Footer::parse(&file[..file.len() - 1], file.len() as u64 - 1)
                .unwrap()
                .is_none()
        );
        assert!(encode(&[chunk(0, b"a"), chunk(2, b"b")]).is_err(), "gap");
    }
}
