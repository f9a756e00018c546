//! Turning in-memory object state into the opaque bytes [`ObjectStore`] persists.
//!
//! The store never interprets object state, and the runtime does not either: a kind that wants
//! persistence brings a [`StateCodec`]. [`JsonCodec`] covers serde types; [`FnCodec`] adapts two
//! closures for anything else (a hand-rolled binary layout, a versioned envelope).
//!
//! [`ObjectStore`]: sessiond_store::ObjectStore

use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Why a codec could not encode or decode: the underlying error, kept as the source of a
/// [`RuntimeError::Codec`](crate::RuntimeError::Codec) for the log line (it never reaches a
/// client).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct CodecError(Box<dyn std::error::Error + Send + Sync>);

impl CodecError {
    /// Wraps any error, or a message (`CodecError::new("bad length")`).
    pub fn new(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        CodecError(source.into())
    }
}

impl From<serde_json::Error> for CodecError {
    fn from(e: serde_json::Error) -> Self {
        CodecError::new(e)
    }
}

/// Encodes and decodes one kind's state.
pub trait StateCodec<S>: Send + Sync + 'static {
    /// State to bytes.
    fn encode(&self, state: &S) -> Result<Vec<u8>, CodecError>;
    /// Bytes to state.
    fn decode(&self, bytes: &[u8]) -> Result<S, CodecError>;
}

/// JSON through serde: readable in the store, easy to evolve with `#[serde(default)]`.
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonCodec;

impl<S: Serialize + DeserializeOwned> StateCodec<S> for JsonCodec {
    fn encode(&self, state: &S) -> Result<Vec<u8>, CodecError> {
        Ok(serde_json::to_vec(state)?)
    }

    fn decode(&self, bytes: &[u8]) -> Result<S, CodecError> {
        Ok(serde_json::from_slice(bytes)?)
    }
}

/// A codec made of two closures.
pub struct FnCodec<S, E, D> {
    encode: E,
    decode: D,
    _state: PhantomData<fn() -> S>,
}

impl<S, E, D> FnCodec<S, E, D>
where
    E: Fn(&S) -> Result<Vec<u8>, CodecError> + Send + Sync + 'static,
    D: Fn(&[u8]) -> Result<S, CodecError> + Send + Sync + 'static,
{
    /// A codec from an encode and a decode closure.
    pub fn new(encode: E, decode: D) -> Self {
        FnCodec {
            encode,
            decode,
            _state: PhantomData,
        }
    }
}

impl<S, E, D> StateCodec<S> for FnCodec<S, E, D>
where
    S: 'static,
    E: Fn(&S) -> Result<Vec<u8>, CodecError> + Send + Sync + 'static,
    D: Fn(&[u8]) -> Result<S, CodecError> + Send + Sync + 'static,
{
    fn encode(&self, state: &S) -> Result<Vec<u8>, CodecError> {
        (self.encode)(state)
    }

    fn decode(&self, bytes: &[u8]) -> Result<S, CodecError> {
        (self.decode)(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip() {
        let bytes = StateCodec::<Vec<u32>>::encode(&JsonCodec, &vec![1, 2]).expect("encode");
        let back: Vec<u32> = JsonCodec.decode(&bytes).expect("decode");
        assert_eq!(back, vec![1, 2]);
        assert!(StateCodec::<Vec<u32>>::decode(&JsonCodec, b"nope").is_err());
    }

    #[test]
    fn fn_codec_round_trip() {
        let codec = FnCodec::new(
            |n: &u64| Ok(n.to_be_bytes().to_vec()),
            |b: &[u8]| {
                let arr: [u8; 8] = b.try_into().map_err(|_| CodecError::new("bad length"))?;
                Ok(u64::from_be_bytes(arr))
            },
        );
        let bytes = codec.encode(&42).expect("encode");
        assert_eq!(codec.decode(&bytes).expect("decode"), 42);
        assert!(codec.decode(b"x").is_err());
    }
}
