//! Segment format 1: one immutable object per sealed range of a stream, verified whole.
//!
//! Compaction now writes format 2 (`indexed.rs`, read by range); this format stays readable
//! for segments sealed before, and its encoder stays for tests of that path.
//!
//! A segment holds the stream's chunks exactly as the hot log stored them (same offsets, same
//! boundaries), so a read that spans cold and hot returns the very chunks it would have
//! returned before compaction. All integers are little-endian.
//!
//! | at | size | field |
//! | --- | --- | --- |
//! | 0 | 8 | magic `SDSTSEG1` (sessiond stream segment, format 1) |
//! | 8 | 8 | `start`: offset of the first byte covered (`u64`) |
//! | 16 | 8 | `end`: offset after the last byte covered (`u64`) |
//! | 24 | 4 | `count`: number of frames (`u32`) |
//! | 28 | … | `count` frames, each `offset` (`u64`), `len` (`u32`), then `len` bytes |
//! | size−4 | 4 | CRC-32 (IEEE 802.3, the zlib one) of every byte before it (`u32`) |
//!
//! A decoder accepts a file only if the magic, the CRC and the framing all check out, frames
//! are contiguous (the first starts at `start`, each starts where the previous ended, the last
//! ends at `end`) and nothing trails the last frame. Object stores write whole objects
//! atomically, so a torn file is not expected; the CRC catches bit rot and a wrong object
//! behind a key, and turns either into `StoreError::Corrupt` rather than wrong stream bytes.
//! Format changes get a new magic; decoders refuse magics they do not know.

use bytes::Bytes;
use sessiond_store::{StoreError, StreamChunk};

/// First 8 bytes of every segment file of this format.
pub const MAGIC: &[u8; 8] = b"SDSTSEG1";
const HEADER: usize = 8 + 8 + 8 + 4;
const FRAME_HEADER: usize = 8 + 4;
const TRAILER: usize = 4;

/// Encodes `chunks` (contiguous, non-empty) as a segment file covering
/// `[chunks[0].offset, last.end())`.
pub fn encode(chunks: &[StreamChunk]) -> Result<Vec<u8>, StoreError> {
    let (Some(first), Some(last)) = (chunks.first(), chunks.last()) else {
        return Err(StoreError::Corrupt(
            "a segment needs at least one chunk".into(),
        ));
    };
    let count = u32::try_from(chunks.len())
        .map_err(|_| StoreError::Corrupt("too many chunks for one segment".into()))?;
    let payload: usize = chunks.iter().map(|c| FRAME_HEADER + c.data.len()).sum();
    let mut out = Vec::with_capacity(HEADER + payload + TRAILER);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&first.offset.to_le_bytes());
    out.extend_from_slice(&last.end().to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    let mut expected = first.offset;
    for c in chunks {
        if c.offset != expected {
            return Err(StoreError::Corrupt(format!(
                "chunks to seal are not contiguous: {} follows {expected}",
                c.offset
            )));
        }
        let len = u32::try_from(c.data.len())
            .map_err(|_| StoreError::Corrupt("chunk larger than 4 GiB".into()))?;
        out.extend_from_slice(&c.offset.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&c.data);
        expected = c.end();
    }
    let crc = crc32(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// One stored chunk of a decoded segment: a slice of the segment's bytes (no copy).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Offset of its first byte.
    pub offset: u64,
    /// Its bytes.
    pub data: Bytes,
}

impl Frame {
    /// Offset after its last byte.
    pub fn end(&self) -> u64 {
        self.offset + self.data.len() as u64
    }
}

impl From<Frame> for StreamChunk {
    fn from(frame: Frame) -> StreamChunk {
        StreamChunk {
            offset: frame.offset,
            data: frame.data.to_vec(),
        }
    }
}

/// A decoded segment.
#[derive(Debug, PartialEq, Eq)]
pub struct Decoded {
    /// First offset covered.
    pub start: u64,
    /// Offset after the last byte covered.
    pub end: u64,
    /// The chunks, in offset order.
    pub chunks: Vec<Frame>,
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("segment file: {what}"))
}

/// Reads a little-endian integer of `N` bytes at `*at`, advancing it.
fn take<const N: usize>(bytes: &[u8], at: &mut usize) -> Result<[u8; N], StoreError> {
    let end = at.checked_add(N).ok_or_else(|| corrupt("truncated"))?;
    let slice = bytes.get(*at..end).ok_or_else(|| corrupt("truncated"))?;
    *at = end;
    let mut out = [0u8; N];
    out.copy_from_slice(slice);
    Ok(out)
}

/// Decodes and verifies a segment file; the frames share `bytes` (no copy).
pub fn decode(bytes: Bytes) -> Result<Decoded, StoreError> {
    if bytes.len() < HEADER + TRAILER {
        return Err(corrupt("shorter than a header"));
    }
    let (body, crc) = bytes[..].split_at(bytes.len() - TRAILER);
    let mut stored = [0u8; 4];
    stored.copy_from_slice(crc);
    if crc32(body) != u32::from_le_bytes(stored) {
        return Err(corrupt("checksum mismatch"));
    }
    if &body[..8] != MAGIC {
        return Err(corrupt("unknown magic (not a segment, or a newer format)"));
    }
    let mut at = 8;
    let start = u64::from_le_bytes(take(body, &mut at)?);
    let end = u64::from_le_bytes(take(body, &mut at)?);
    let count = u32::from_le_bytes(take(body, &mut at)?);
    let mut chunks = Vec::with_capacity(count.min(1 << 16) as usize);
    let mut expected = start;
    for _ in 0..count {
        let offset = u64::from_le_bytes(take(body, &mut at)?);
        let len = u32::from_le_bytes(take(body, &mut at)?) as usize;
        if offset != expected {
            return Err(corrupt("frames are not contiguous"));
        }
        let stop = at.checked_add(len).ok_or_else(|| corrupt("truncated"))?;
        if stop > body.len() {
            return Err(corrupt("truncated frame"));
        }
        let chunk = Frame {
            offset,
            data: bytes.slice(at..stop),
        };
        at = stop;
        expected = chunk.end();
        chunks.push(chunk);
    }
    if expected != end || at != body.len() || chunks.is_empty() {
        return Err(corrupt("frames do not cover the header's range"));
    }
    Ok(Decoded { start, end, chunks })
}

/// CRC-32 (IEEE, as zlib and PNG compute it). A maintained SIMD implementation: every cold
/// read verifies a whole segment, and a byte-at-a-time table loop made that check the
/// dominant cost of catch-up reads (bench/streams/run).
pub fn crc32(bytes: &[u8]) -> u32 {
    // CRC-32 values fit in 32 bits; the crate returns every width as u64.
    crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32IsoHdlc, bytes) as u32
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

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn round_trip_keeps_boundaries_and_bytes() {
        let chunks = vec![chunk(100, b"ab\0c"), chunk(104, &[0; 3]), chunk(107, b"z")];
        let bytes = encode(&chunks).unwrap();
        assert_eq!(&bytes[..8], MAGIC);
        assert_eq!(bytes.len(), HEADER + 3 * FRAME_HEADER + 8 + TRAILER);
        let d = decode(bytes.into()).unwrap();
        assert_eq!((d.start, d.end), (100, 108));
        let decoded: Vec<StreamChunk> = d.chunks.into_iter().map(Into::into).collect();
        assert_eq!(decoded, chunks);
    }

    #[test]
    fn refuses_gaps_damage_and_truncation() {
        assert!(encode(&[]).is_err());
        assert!(encode(&[chunk(0, b"a"), chunk(2, b"b")]).is_err(), "gap");
        let bytes = encode(&[chunk(0, b"hello"), chunk(5, b"world")]).unwrap();
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(decode(bad.into()).is_err(), "flipped byte {i} accepted");
        }
        for n in 0..bytes.len() {
            assert!(
                decode(bytes[..n].to_vec().into()).is_err(),
                "truncated to {n} accepted"
            );
        }
        // A well-checksummed file whose frames lie about the range is refused too.
        let mut lying = bytes[..bytes.len() - 4].to_vec();
        lying[16..24].copy_from_slice(&11u64.to_le_bytes());
        let crc = crc32(&lying);
        lying.extend_from_slice(&crc.to_le_bytes());
        assert!(decode(lying.into()).is_err());
    }
}
