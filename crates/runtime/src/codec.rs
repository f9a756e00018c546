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

/// Encodes and decodes one kind's state. Errors are plain strings: they end up in a
/// [`RuntimeError::Codec`](crate::RuntimeError::Codec) and a log line, nowhere else.
pub trait StateCodec<S>: Send + Sync + 'static {
    /// State to bytes.
    fn encode(&self, state: &S) -> Result<Vec<u8>, String>;
    /// Bytes to state.
    fn decode(&self, bytes: &[u8]) -> Result<S, String>;
}

/// JSON through serde: readable in the store, easy to evolve with `#[serde(default)]`.
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonCodec;

impl<S: Serialize + DeserializeOwned> StateCodec<S> for JsonCodec {
    fn encode(&self, state: &S) -> Result<Vec<u8>, String> {
        serde_json::to_vec(state).map_err(|e| e.to_string())
    }

    fn decode(&self, bytes: &[u8]) -> Result<S, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
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
    E: Fn(&S) -> Result<Vec<u8>, String> + Send + Sync + 'static,
    D: Fn(&[u8]) -> Result<S, String> + Send + Sync + 'static,
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
    E: Fn(&S) -> Result<Vec<u8>, String> + Send + Sync + 'static,
    D: Fn(&[u8]) -> Result<S, String> + Send + Sync + 'static,
{
    fn encode(&self, state: &S) -> Result<Vec<u8>, String> {
        (self.encode)(state)
    }

    fn decode(&self, bytes: &[u8]) -> Result<S, String> {
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
                let arr: [u8; 8] = b.try_into().map_err(|_| "bad length".to_string())?;
                Ok(u64::from_be_bytes(arr))
            },
        );
        let bytes = codec.encode(&42).expect("encode");
        assert_eq!(codec.decode(&bytes).expect("decode"), 42);
        assert!(codec.decode(b"x").is_err());
    }
}
