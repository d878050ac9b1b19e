//! The payload codec: upstream NOMAD's Fernet encryption, applied at the edges only.
//!
//! Byte-compatible with NOMAD 2.0's Python codec (`nomad/actions/_codec.py`): a key is
//! `urlsafe_b64encode((b'\0' * max(32 - len(b), 0) + b)[:32])` with `b = secret.encode()`;
//! every payload becomes `Payload(metadata={'encoding': b'binary/encrypted'},
//! data=fernet.encrypt(original.SerializeToString()))`. With `temporal.payload_codec_key` set,
//! payloads are encrypted with that key and carry `encryption-key-id` = `payload_codec_key_id`;
//! payloads without a key id are the NOMAD API secret's. Decoding leaves payloads with any other
//! encoding untouched, so plain payloads from development setups still read.

use std::sync::Arc;

use base64::Engine;
use futures::future::BoxFuture;
use prost::Message;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use temporalio_common::data_converters::{
    PayloadCodec, PayloadConversionError, SerializationContextData,
};
use temporalio_common::payload_visitor::{PayloadVisitable, decode_payloads, encode_payloads};
use temporalio_common::protos::temporal::api::common::v1::Payload;

use serde_json::Value;
use temporalio_common::protos::temporal::api::common::v1::Payloads;

use crate::connection::ConnectionConfig;
use crate::errors::EngineError;
pub use crate::payload::{BINARY_ENCRYPTED, CodecError};
use crate::payload::{ENCODING_KEY, PayloadError, from_payload, to_payloads};
/// Metadata key naming the codec key an encrypted payload was made with (NOMAD 2.0).
pub const KEY_ID_METADATA: &str = "encryption-key-id";

/// The keys of the NOMAD API secret: 2.0's derivation, and 1.4.0's where it differs.
#[derive(Clone)]
struct SecretKeys {
    current: Arc<fernet::Fernet>,
    legacy: Option<Arc<fernet::Fernet>>,
}

/// Fernet encryption keyed by the NOMAD API secret and, when set, by
/// `temporal.payload_codec_key` (with its key id).
#[derive(Clone)]
pub struct FernetCodec {
    secret: Option<SecretKeys>,
    codec_key: Option<(String, Arc<fernet::Fernet>)>,
}

impl std::fmt::Debug for FernetCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FernetCodec(..)")
    }
}

fn key_from_bytes(raw_secret: &[u8], pad_to: usize) -> String {
    let mut raw = vec![0u8; 32usize.saturating_sub(pad_to)];
    raw.extend_from_slice(raw_secret);
    raw.truncate(32);
    base64::engine::general_purpose::URL_SAFE.encode(raw)
}

/// NOMAD 2.0's key derivation: left-pad the secret's UTF-8 bytes with NUL bytes to 32, keep
/// the first 32 bytes, base64url-encode.
pub fn key_from_secret(secret: &str) -> String {
    key_from_bytes(secret.as_bytes(), secret.len())
}

/// NOMAD 1.4.0's derivation: the padding counts characters (Python's `len(str)`), so it
/// differs from 2.0's only for non-ASCII secrets.
pub fn legacy_key_from_secret(secret: &str) -> String {
    key_from_bytes(secret.as_bytes(), secret.chars().count())
}

fn fernet_of(key: &str) -> Arc<fernet::Fernet> {
    Arc::new(fernet::Fernet::new(key).expect("a 32-byte key always makes a valid Fernet key"))
}

impl FernetCodec {
    /// A codec for the NOMAD API secret `secret` alone (no codec key).
    pub fn from_secret(secret: &str) -> Self {
        FernetCodec::new(Some(secret), None)
    }

    /// A codec for the API secret and/or a `(key id, codec key)`; both None is not useful.
    pub fn new(secret: Option<&str>, codec_key: Option<(&str, &str)>) -> Self {
        let secret = secret.map(|s| {
            let (current, legacy) = (key_from_secret(s), legacy_key_from_secret(s));
            SecretKeys {
                current: fernet_of(&current),
                legacy: (legacy != current).then(|| fernet_of(&legacy)),
            }
        });
        let codec_key =
            codec_key.map(|(id, key)| (id.to_string(), fernet_of(&key_from_secret(key))));
        FernetCodec { secret, codec_key }
    }

    /// The codec a configuration asks for: on when it has a payload secret (outside
    /// development mode) or a payload codec key, as upstream 2.0; None when payloads are plain.
    pub fn for_config(config: &ConnectionConfig) -> Option<Self> {
        if config.payload_secret.is_none() && config.payload_codec_key.is_none() {
            return None;
        }
        Some(FernetCodec::new(
            config.payload_secret.as_deref(),
            config
                .payload_codec_key
                .as_deref()
                .map(|key| (config.payload_codec_key_id.as_str(), key)),
        ))
    }

    /// Encrypt one payload (metadata and data together): with the codec key and its id when
    /// one is set, else with the API secret and no id.
    pub fn encode(&self, payload: &Payload) -> Payload {
        let plain = payload.encode_to_vec();
        let mut metadata: std::collections::HashMap<String, Vec<u8>> =
            [(ENCODING_KEY.to_string(), BINARY_ENCRYPTED.to_vec())].into();
        let token = match (&self.codec_key, &self.secret) {
            (Some((id, fernet)), _) => {
                metadata.insert(KEY_ID_METADATA.to_string(), id.clone().into_bytes());
                fernet.encrypt(&plain)
            }
            (None, Some(keys)) => keys.current.encrypt(&plain),
            (None, None) => unreachable!("a FernetCodec has a secret or a codec key"),
        };
        Payload {
            metadata,
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
        let plain = match payload.metadata.get(KEY_ID_METADATA) {
            Some(raw_id) => {
                let id = String::from_utf8_lossy(raw_id).into_owned();
                match &self.codec_key {
                    Some((ours, fernet)) if *ours == id => fernet
                        .decrypt(token)
                        .map_err(|_| CodecError::WrongCodecKey(id))?,
                    _ => return Err(CodecError::UnknownKeyId(id)),
                }
            }
            None => {
                let keys = self.secret.as_ref().ok_or(CodecError::NoSecret)?;
                match keys.current.decrypt(token) {
                    Ok(plain) => plain,
                    Err(_) => keys
                        .legacy
                        .as_ref()
                        .and_then(|legacy| legacy.decrypt(token).ok())
                        .ok_or(CodecError::WrongKey)?,
                }
            }
        };
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

/// Encode values to payloads, encrypting them when a codec is configured.
pub fn encode_values(values: &[Value], codec: Option<&FernetCodec>) -> Payloads {
    let mut payloads = to_payloads(values);
    if let Some(codec) = codec {
        payloads.payloads = payloads.payloads.iter().map(|p| codec.encode(p)).collect();
    }
    payloads
}

/// Decode one payload, decrypting it first when a codec is configured.
pub fn decode_value(payload: &Payload, codec: Option<&FernetCodec>) -> Result<Value, PayloadError> {
    match codec {
        Some(codec) => from_payload(&codec.decode(payload.clone())?),
        None => from_payload(payload),
    }
}

/// [`first_value`] with decryption.
pub fn decode_first(
    payloads: Option<&Payloads>,
    codec: Option<&FernetCodec>,
) -> Result<Value, PayloadError> {
    match payloads.and_then(|p| p.payloads.first()) {
        Some(p) => decode_value(p, codec),
        None => Ok(Value::Null),
    }
}

/// The codec of a configuration, for Python (the codec server): serialized `Payload` bytes
/// in, serialized `Payload` bytes out.
#[pyclass(name = "PayloadCodecRef", module = "nomad_actions._core", frozen)]
pub struct PayloadCodecRef {
    codec: Option<FernetCodec>,
}

fn codec_err(context: &str, err: CodecError) -> PyErr {
    EngineError::Payload {
        context: context.to_string(),
        source: PayloadError::Codec(err),
    }
    .into()
}

fn parse_payload(raw: &[u8]) -> PyResult<Payload> {
    Payload::decode(raw).map_err(|e| codec_err("codec input", CodecError::NotAPayload(e)))
}

#[pymethods]
impl PayloadCodecRef {
    #[new]
    fn py_new(config: ConnectionConfig) -> Self {
        PayloadCodecRef {
            codec: FernetCodec::for_config(&config),
        }
    }

    /// Whether the configuration encrypts payloads at all.
    #[getter]
    fn enabled(&self) -> bool {
        self.codec.is_some()
    }

    /// Encrypt serialized payloads (unchanged when the codec is off).
    fn encode<'py>(
        &self,
        py: Python<'py>,
        payloads: Vec<Vec<u8>>,
    ) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        payloads
            .iter()
            .map(|raw| {
                let payload = parse_payload(raw)?;
                let out = match &self.codec {
                    Some(codec) => codec.encode(&payload),
                    None => payload,
                };
                Ok(PyBytes::new(py, &out.encode_to_vec()))
            })
            .collect()
    }

    /// Decrypt serialized payloads; others pass through. Raises PayloadError naming an unknown
    /// key id or a wrong key.
    fn decode<'py>(
        &self,
        py: Python<'py>,
        payloads: Vec<Vec<u8>>,
    ) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        payloads
            .iter()
            .map(|raw| {
                let payload = parse_payload(raw)?;
                let out = match &self.codec {
                    Some(codec) => codec
                        .decode(payload)
                        .map_err(|e| codec_err("decoding a payload", e))?,
                    None => payload,
                };
                Ok(PyBytes::new(py, &out.encode_to_vec()))
            })
            .collect()
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
    fn key_derivation_counts_utf8_bytes_as_2_0_does() {
        // Python 2.0: b = 'ké'.encode() (3 bytes) -> 29 NULs; 1.4.0 counted 2 characters.
        let raw = base64::engine::general_purpose::URL_SAFE
            .decode(key_from_secret("ké"))
            .unwrap();
        assert_eq!(raw.len(), 32);
        assert_eq!(&raw[29..], "ké".as_bytes());
        let legacy = base64::engine::general_purpose::URL_SAFE
            .decode(legacy_key_from_secret("ké"))
            .unwrap();
        assert_eq!(&legacy[30..], &"ké".as_bytes()[..2]);
        // ASCII secrets: both derivations agree.
        assert_eq!(key_from_secret("secret"), legacy_key_from_secret("secret"));
    }

    #[test]
    fn legacy_payloads_of_a_non_ascii_secret_still_decode() {
        let legacy = FernetCodec {
            secret: Some(SecretKeys {
                current: fernet_of(&legacy_key_from_secret("geheimnis-ä")),
                legacy: None,
            }),
            codec_key: None,
        };
        let plain = to_payload(&json!({"a": 1}));
        let enc = legacy.encode(&plain);
        assert_eq!(
            FernetCodec::from_secret("geheimnis-ä").decode(enc).unwrap(),
            plain
        );
    }

    #[test]
    fn codec_key_writes_its_id_and_secret_payloads_still_decode() {
        let codec = FernetCodec::new(Some("api-secret"), Some(("k2", "codec-key")));
        let plain = to_payload(&json!({"user_id": "u"}));
        let enc = codec.encode(&plain);
        assert_eq!(enc.metadata[KEY_ID_METADATA], b"k2");
        assert_eq!(codec.decode(enc.clone()).unwrap(), plain);
        // Only the codec key opens it: not the API secret alone.
        let secret_only = FernetCodec::from_secret("api-secret");
        let err = secret_only.decode(enc.clone()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "No Temporal payload codec key configured for key ID 'k2'"
        );
        // Payloads without an id are the API secret's.
        let old = secret_only.encode(&plain);
        assert!(!old.metadata.contains_key(KEY_ID_METADATA));
        assert_eq!(codec.decode(old).unwrap(), plain);
        // Another id is refused, naming it; a wrong key under our id is a clear error too.
        let other = FernetCodec::new(None, Some(("k3", "codec-key"))).encode(&plain);
        assert!(matches!(codec.decode(other), Err(CodecError::UnknownKeyId(id)) if id == "k3"));
        let forged = FernetCodec::new(None, Some(("k2", "another-key"))).encode(&plain);
        assert!(matches!(codec.decode(forged), Err(CodecError::WrongCodecKey(id)) if id == "k2"));
        // A codec key without an API secret cannot read id-less payloads.
        let keyed_only = FernetCodec::new(None, Some(("k2", "codec-key")));
        assert!(matches!(
            keyed_only.decode(secret_only.encode(&plain)),
            Err(CodecError::NoSecret)
        ));
    }

    #[test]
    fn wrong_key_is_a_clear_error() {
        let enc = FernetCodec::from_secret("one").encode(&to_payload(&json!(1)));
        let err = FernetCodec::from_secret("two").decode(enc).unwrap_err();
        assert!(matches!(err, CodecError::WrongKey));
        assert!(err.to_string().contains("Fernet"), "{err}");
    }
}
