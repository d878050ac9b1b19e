//! Payload <-> Python values, on the Rust side of the boundary.
//!
//! Temporal payloads carry an `encoding` metadata entry. We produce the two that
//! temporalio's (Pydantic) payload converter produces for plain data: `json/plain`
//! (compact JSON, field order kept, as `pydantic_core.to_json` writes it) and
//! `binary/null` for `None`. The Python side turns models and dataclasses into
//! JSON-compatible values first (`TypeAdapter.dump_python(mode="json")`), so only
//! dicts, lists, strings, numbers, booleans and `None` cross here.

use std::collections::HashMap;

use pyo3::prelude::*;
use serde_json::Value;

use crate::codec::FernetCodec;
use temporalio_common::protos::temporal::api::common::v1::{Payload, Payloads};

/// Metadata key naming a payload's encoding.
pub const ENCODING_KEY: &str = "encoding";
/// Encoding of JSON payloads (temporalio's default and Pydantic converters).
pub const JSON_PLAIN: &[u8] = b"json/plain";
/// Encoding temporalio uses for `None`.
pub const BINARY_NULL: &[u8] = b"binary/null";
/// Encoding temporalio uses for raw `bytes`.
pub const BINARY_PLAIN: &[u8] = b"binary/plain";

/// Why a payload could not be converted.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("payload is not valid JSON: {0}")]
    InvalidJson(#[from] serde_json::Error),
    #[error("payload has unsupported encoding {0:?}")]
    UnsupportedEncoding(String),
    #[error("payload has no encoding metadata")]
    MissingEncoding,
    #[error(transparent)]
    Codec(#[from] crate::codec::CodecError),
}

/// A JSON value, turned into a Python object (via pythonize) when it crosses to Python.
#[derive(Debug, Clone, PartialEq)]
pub struct Json(pub Value);

impl<'py> IntoPyObject<'py> for Json {
    type Target = PyAny;
    type Output = Bound<'py, PyAny>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> Result<Self::Output, Self::Error> {
        Ok(pythonize::pythonize(py, &self.0)?)
    }
}

impl<'a, 'py> FromPyObject<'a, 'py> for Json {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> Result<Self, Self::Error> {
        Ok(Json(pythonize::depythonize(&obj)?))
    }
}

/// Encode a JSON value the way temporalio's converters do: `null` as `binary/null`,
/// anything else as compact `json/plain`.
pub fn to_payload(value: &Value) -> Payload {
    if value.is_null() {
        return Payload {
            metadata: HashMap::from([(ENCODING_KEY.to_string(), BINARY_NULL.to_vec())]),
            data: Vec::new(),
            ..Default::default()
        };
    }
    Payload {
        metadata: HashMap::from([(ENCODING_KEY.to_string(), JSON_PLAIN.to_vec())]),
        // Serialising a `Value` cannot fail: its maps have string keys.
        data: serde_json::to_vec(value).expect("serde_json::Value always serialises"),
        ..Default::default()
    }
}

/// Encode several values as one `Payloads` (workflow input, signal args).
pub fn to_payloads(values: &[Value]) -> Payloads {
    Payloads {
        payloads: values.iter().map(to_payload).collect(),
    }
}

/// Decode one payload into a JSON value. `binary/plain` becomes a JSON string only
/// when it is UTF-8; anything else is an error that names the encoding.
pub fn from_payload(payload: &Payload) -> Result<Value, PayloadError> {
    let encoding = payload
        .metadata
        .get(ENCODING_KEY)
        .ok_or(PayloadError::MissingEncoding)?;
    match encoding.as_slice() {
        JSON_PLAIN => Ok(serde_json::from_slice(&payload.data)?),
        BINARY_NULL => Ok(Value::Null),
        BINARY_PLAIN => String::from_utf8(payload.data.clone())
            .map(Value::String)
            .map_err(|_| PayloadError::UnsupportedEncoding("binary/plain (not UTF-8)".into())),
        other => Err(PayloadError::UnsupportedEncoding(
            String::from_utf8_lossy(other).into_owned(),
        )),
    }
}

/// Decode the first payload of a `Payloads` (Temporal results have at most one);
/// no payload reads as `null`, as in temporalio.
pub fn first_value(payloads: Option<&Payloads>) -> Result<Value, PayloadError> {
    match payloads.and_then(|p| p.payloads.first()) {
        Some(p) => from_payload(p),
        None => Ok(Value::Null),
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_is_compact_and_keeps_field_order() {
        let value = json!({"user_id": "u1", "name": "Ada", "a": [1, 2.5, true, null]});
        let payload = to_payload(&value);
        assert_eq!(payload.metadata[ENCODING_KEY], JSON_PLAIN);
        assert_eq!(
            payload.data,
            br#"{"user_id":"u1","name":"Ada","a":[1,2.5,true,null]}"#
        );
        assert_eq!(from_payload(&payload).unwrap(), value);
    }

    #[test]
    fn none_is_binary_null_with_empty_data() {
        let payload = to_payload(&Value::Null);
        assert_eq!(payload.metadata[ENCODING_KEY], BINARY_NULL);
        assert!(payload.data.is_empty());
        assert_eq!(from_payload(&payload).unwrap(), Value::Null);
    }

    #[test]
    fn unicode_is_written_raw_like_pydantic() {
        let payload = to_payload(&json!("Å🙂"));
        assert_eq!(payload.data, "\"Å🙂\"".as_bytes());
    }

    #[test]
    fn unknown_encoding_and_bad_json_are_errors() {
        let mut payload = to_payload(&json!(1));
        payload.data = b"{not json".to_vec();
        assert!(matches!(
            from_payload(&payload),
            Err(PayloadError::InvalidJson(_))
        ));
        payload
            .metadata
            .insert(ENCODING_KEY.into(), b"binary/encrypted".to_vec());
        let err = from_payload(&payload).unwrap_err().to_string();
        assert!(err.contains("binary/encrypted"), "{err}");
        payload.metadata.clear();
        assert!(matches!(
            from_payload(&payload),
            Err(PayloadError::MissingEncoding)
        ));
    }

    #[test]
    fn empty_payloads_read_as_null() {
        assert_eq!(first_value(None).unwrap(), Value::Null);
        let p = to_payloads(&[json!({"x": 1})]);
        assert_eq!(first_value(Some(&p)).unwrap(), json!({"x": 1}));
    }
}
