//! The payload codec: upstream NOMAD's Fernet encryption, applied at the edges only.
//!
//! Byte-compatible with NOMAD's Python codec: the key is
//! `urlsafe_b64encode((b'\0' * max(32 - len(secret), 0) + secret.encode())[:32])` of the NOMAD
//! API secret; every payload becomes `Payload(metadata={'encoding': b'binary/encrypted'},
//! data=fernet.encrypt(original.SerializeToString()))`. Decoding leaves payloads with any
//! other encoding untouched, so plain payloads from development setups still read.

use std::sync::Arc;

use base64::Engine;
use futures::future::BoxFuture;
use prost::Message;
use temporalio_common::data_converters::{
    PayloadCodec, PayloadConversionError, SerializationContextData,
};
use temporalio_common::payload_visitor::{PayloadVisitable, decode_payloads, encode_payloads};
use temporalio_common::protos::temporal::api::common::v1::Payload;

use crate::payload::ENCODING_KEY;

/// Encoding of an encrypted payload.
pub const BINARY_ENCRYPTED: &[u8] = b"binary/encrypted";

/// Why a payload could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error(
        "payload codec (Fernet, binary/encrypted) could not decrypt a payload: the NOMAD API \
         secret differs from the one that encrypted it, or the data is corrupt"
    )]
    WrongKey,
    #[error("payload codec (Fernet, binary/encrypted): decrypted data is not a Payload: {0}")]
    NotAPayload(#[from] prost::DecodeError),
    #[error("payload codec (Fernet, binary/encrypted): {0}")]
    Other(String),
}

/// Fernet encryption keyed by the NOMAD API secret.
#[derive(Clone)]
pub struct FernetCodec {
    fernet: Arc<fernet::Fernet>,
}

impl std::fmt::Debug for FernetCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FernetCodec(..)")
    }
}

/// Upstream's key derivation: left-pad the secret with NUL bytes to 32 (counting its
/// characters, as Python's `len(str)` does), keep the first 32 bytes, base64url-encode.
pub fn key_from_secret(secret: &str) -> String {
    let pad = 32usize.saturating_sub(secret.chars().count());
    let mut raw = vec![0u8; pad];
    raw.extend_from_slice(secret.as_bytes());
    raw.truncate(32);
    base64::engine::general_purpose::URL_SAFE.encode(raw)
}

impl FernetCodec {
    /// A codec for the NOMAD API secret `secret`.
    pub fn from_secret(secret: &str) -> Self {
        let key = key_from_secret(secret);
        let fernet =
            fernet::Fernet::new(&key).expect("a 32-byte key always makes a valid Fernet key");
        FernetCodec {
            fernet: Arc::new(fernet),
        }
    }

    /// Encrypt one payload (metadata and data together).
    pub fn encode(&self, payload: &Payload) -> Payload {
        let token = self.fernet.encrypt(&payload.encode_to_vec());
        Payload {
            metadata: [(ENCODING_KEY.to_string(), BINARY_ENCRYPTED.to_vec())].into(),
            data: token.into_bytes(),
            ..Default::default()
        }
    }

    /// Decrypt one payload; payloads with another encoding pass through unchanged.
    pub fn decode(&self, payload: Payload) -> Result<Payload, CodecError> {
        if payload.metadata.get(ENCODING_KEY).map(Vec::as_slice) != Some(BINARY_ENCRYPTED) {
            return Ok(payload);
        }
        let token = std::str::from_utf8(&payload.data).map_err(|_| CodecError::WrongKey)?;
        let plain = self
            .fernet
            .decrypt(token)
            .map_err(|_| CodecError::WrongKey)?;
        Ok(Payload::decode(plain.as_slice())?)
    }

    /// Encrypt every payload of a protobuf message (activation completion, request).
    pub async fn encode_message<M: PayloadVisitable + Send>(
        &self,
        msg: &mut M,
    ) -> Result<(), CodecError> {
        encode_payloads(msg, self, &SerializationContextData::None)
            .await
            .map_err(unwrap_conversion)
    }

    /// Decrypt every payload of a protobuf message (activation, activity task).
    pub async fn decode_message<M: PayloadVisitable + Send>(
        &self,
        msg: &mut M,
    ) -> Result<(), CodecError> {
        decode_payloads(msg, self, &SerializationContextData::None)
            .await
            .map_err(unwrap_conversion)
    }
}

/// The visitor wraps our own error in a `PayloadConversionError`; take it back out so the
/// message is said once.
fn unwrap_conversion(err: PayloadConversionError) -> CodecError {
    match err {
        PayloadConversionError::EncodingError(inner) => match inner.downcast::<CodecError>() {
            Ok(codec) => *codec,
            Err(other) => CodecError::Other(other.to_string()),
        },
        other => CodecError::Other(other.to_string()),
    }
}

impl PayloadCodec for FernetCodec {
    fn encode(
        &self,
        _context: &SerializationContextData,
        payloads: Vec<Payload>,
    ) -> BoxFuture<'static, Result<Vec<Payload>, PayloadConversionError>> {
        let out = payloads
            .iter()
            .map(|p| FernetCodec::encode(self, p))
            .collect();
        Box::pin(async move { Ok(out) })
    }

    fn decode(
        &self,
        _context: &SerializationContextData,
        payloads: Vec<Payload>,
    ) -> BoxFuture<'static, Result<Vec<Payload>, PayloadConversionError>> {
        let out: Result<Vec<Payload>, CodecError> = payloads
            .into_iter()
            .map(|p| FernetCodec::decode(self, p))
            .collect();
        Box::pin(async move { out.map_err(|e| PayloadConversionError::EncodingError(Box::new(e))) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::to_payload;
    use serde_json::json;

    #[test]
    fn key_derivation_matches_upstream() {
        // Python: urlsafe_b64encode((b'\0' * (32 - 6) + b'secret')[:32])
        assert_eq!(
            key_from_secret("secret"),
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAABzZWNyZXQ="
        );
        // Longer secrets are cut to 32 bytes.
        let long = "x".repeat(40);
        let raw = base64::engine::general_purpose::URL_SAFE
            .decode(key_from_secret(&long))
            .unwrap();
        assert_eq!(raw, vec![b'x'; 32]);
    }

    #[test]
    fn round_trip_and_passthrough() {
        let codec = FernetCodec::from_secret("defaultApiSecret");
        let plain = to_payload(&json!({"user_id": "u", "n": 1}));
        let enc = codec.encode(&plain);
        assert_eq!(enc.metadata[ENCODING_KEY], BINARY_ENCRYPTED);
        assert!(enc.data.starts_with(b"gAAAAA"), "a Fernet token");
        assert_eq!(codec.decode(enc).unwrap(), plain);
        // Other encodings are left alone.
        assert_eq!(codec.decode(plain.clone()).unwrap(), plain);
    }

    #[test]
    fn wrong_key_is_a_clear_error() {
        let enc = FernetCodec::from_secret("one").encode(&to_payload(&json!(1)));
        let err = FernetCodec::from_secret("two").decode(enc).unwrap_err();
        assert!(matches!(err, CodecError::WrongKey));
        assert!(err.to_string().contains("Fernet"), "{err}");
    }
}
