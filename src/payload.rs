//! Payload <-> Python values, on the Rust side of the boundary.
//!
//! Temporal payloads carry an `encoding` metadata entry. We produce the two that
//! temporalio's (Pydantic) payload converter produces for plain data: `json/plain`
//! (compact JSON, field order kept, as `pydantic_core.to_json` writes it) and
//! `binary/null` for `None`. The Python side turns models and dataclasses into
//! JSON-compatible values first (`TypeAdapter.dump_python(mode="json")`), so only
//! dicts, lists, strings, numbers, booleans and `None` cross here; or, for activity
//! arguments and results, JSON text, which [`check_json`] accepts exactly where
//! [`from_payload`] would decode it.

use std::cell::Cell;
use std::collections::HashMap;

use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyFrozenSet, PyInt, PyList, PyMapping,
    PySequence, PySet, PyString, PyTuple,
};
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use temporalio_common::protos::temporal::api::common::v1::{Payload, Payloads};

/// Metadata key naming a payload's encoding.
pub const ENCODING_KEY: &str = "encoding";
/// Encoding of JSON payloads (temporalio's default and Pydantic converters).
pub const JSON_PLAIN: &[u8] = b"json/plain";
/// Encoding temporalio uses for `None`.
pub const BINARY_NULL: &[u8] = b"binary/null";
/// Encoding temporalio uses for raw `bytes`.
pub const BINARY_PLAIN: &[u8] = b"binary/plain";
/// Encoding of a payload encrypted by the codec (`crate::codec`).
pub const BINARY_ENCRYPTED: &[u8] = b"binary/encrypted";

/// How deeply values may nest (lists and dicts in one another): serde_json refuses deeper
/// JSON when it parses (its recursion limit, 128), so nothing deeper is ever encoded.
pub const MAX_DEPTH: usize = 127;

/// Why a payload could not be converted.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// A Python value that has no JSON form; `path` says where in the value (`$.a[0]`).
    #[error("value at {path} cannot be sent as JSON: {reason}")]
    NotJson { path: String, reason: String },
    #[error("payload is not valid JSON: {0}")]
    InvalidJson(#[from] serde_json::Error),
    #[error("payload has unsupported encoding {0:?}")]
    UnsupportedEncoding(String),
    #[error("payload has no encoding metadata")]
    MissingEncoding,
    /// serde_json would read the integer as a float and lose digits; refuse it instead.
    #[error("payload holds the integer {0}, out of range (JSON payloads hold 64-bit integers)")]
    IntegerOutOfRange(String),
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// Why a payload could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error(
        "payload codec (Fernet, binary/encrypted) could not decrypt a payload: the NOMAD API \
         secret differs from the one that encrypted it, or the data is corrupt"
    )]
    WrongKey,
    #[error(
        "payload codec (Fernet, binary/encrypted) could not decrypt a payload with key ID \
         '{0}': temporal.payload_codec_key differs from the one that encrypted it, or the data \
         is corrupt"
    )]
    WrongCodecKey(String),
    #[error("No Temporal payload codec key configured for key ID '{0}'")]
    UnknownKeyId(String),
    #[error(
        "payload codec (Fernet, binary/encrypted): a payload without encryption-key-id needs the \
         NOMAD API secret (services.api_secret, NOMAD_SERVICES_API_SECRET), which is not set"
    )]
    NoSecret,
    #[error("payload codec (Fernet, binary/encrypted): decrypted data is not a Payload: {0}")]
    NotAPayload(#[from] prost::DecodeError),
    #[error("payload codec (Fernet, binary/encrypted): {0}")]
    Other(String),
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

    /// Fails with `nomad_actions.PayloadError` naming where and why (a 65-bit integer, a lone
    /// surrogate, bytes, nesting deeper than [`MAX_DEPTH`], an unknown type), never with a
    /// panic or a stack overflow.
    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> Result<Self, Self::Error> {
        // `PayloadError` becomes `nomad_actions.PayloadError` in `crate::errors`.
        json_from_py(&obj).map(Json).map_err(PyErr::from)
    }
}

/// Where in a value conversion failed, innermost segment first while it unwinds.
enum Segment {
    Index(usize),
    Key(String),
}

struct NotJson {
    path: Vec<Segment>,
    reason: String,
}

impl NotJson {
    fn new(reason: impl Into<String>) -> Self {
        NotJson {
            path: Vec::new(),
            reason: reason.into(),
        }
    }

    fn at(mut self, segment: Segment) -> Self {
        self.path.push(segment);
        self
    }

    fn into_error(self) -> PayloadError {
        let segments: Vec<String> = self
            .path
            .iter()
            .rev()
            .map(|segment| match segment {
                Segment::Index(i) => format!("[{i}]"),
                Segment::Key(k) if is_identifier(k) => format!(".{k}"),
                Segment::Key(k) => format!("[{}]", Value::String(k.clone())),
            })
            .collect();
        // A path into deeply nested data is long; its ends say enough.
        let path = if segments.len() > 10 {
            let hidden = segments.len() - 8;
            format!(
                "${}...({hidden} levels)...{}",
                segments[..6].concat(),
                segments[segments.len() - 2..].concat()
            )
        } else {
            format!("${}", segments.concat())
        };
        PayloadError::NotJson {
            path,
            reason: self.reason,
        }
    }
}

fn is_identifier(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Turn a JSON-compatible Python value (what `pydantic_core.to_jsonable_python` returns) into
/// a JSON value. Sets and other sequences become arrays, other mappings objects; a float that
/// is not finite becomes `null`, as the Pydantic converter writes it.
pub fn json_from_py(obj: &Bound<'_, PyAny>) -> Result<Value, PayloadError> {
    to_json(obj, 0).map_err(NotJson::into_error)
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

fn to_json(obj: &Bound<'_, PyAny>, depth: usize) -> Result<Value, NotJson> {
    if obj.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if let Ok(i) = obj.cast::<PyInt>() {
        if let Ok(v) = i.extract::<i64>() {
            return Ok(Value::from(v));
        }
        if let Ok(v) = i.extract::<u64>() {
            return Ok(Value::from(v));
        }
        let bits = i
            .call_method0("bit_length")
            .and_then(|b| b.extract::<u64>())
            .unwrap_or(0);
        return Err(NotJson::new(format!(
            "integer of {bits} bits is out of range (JSON payloads hold 64-bit integers)"
        )));
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        return Ok(Number::from_f64(f.value()).map_or(Value::Null, Value::Number));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return match s.to_str() {
            Ok(text) => Ok(Value::String(text.to_owned())),
            Err(_) => Err(NotJson::new(
                "string is not valid Unicode (it holds a lone surrogate)",
            )),
        };
    }
    if obj.is_instance_of::<PyBytes>() || obj.is_instance_of::<PyByteArray>() {
        return Err(NotJson::new(format!(
            "{} has no JSON form; decode it to str first",
            type_name(obj)
        )));
    }
    let is_mapping = obj.is_instance_of::<PyDict>() || obj.cast::<PyMapping>().is_ok();
    let is_sequence = obj.is_instance_of::<PyList>()
        || obj.is_instance_of::<PyTuple>()
        || obj.is_instance_of::<PySet>()
        || obj.is_instance_of::<PyFrozenSet>()
        || obj.cast::<PySequence>().is_ok();
    if !is_mapping && !is_sequence {
        return Err(NotJson::new(format!(
            "type {} has no JSON form",
            type_name(obj)
        )));
    }
    if depth >= MAX_DEPTH {
        return Err(NotJson::new(format!(
            "it nests deeper than {MAX_DEPTH} levels"
        )));
    }
    let failed = |err: PyErr| NotJson::new(format!("reading it failed: {err}"));
    if is_mapping {
        let items = match obj.cast::<PyDict>() {
            Ok(dict) => dict.items(),
            Err(_) => obj
                .cast::<PyMapping>()
                .map_err(|e| failed(e.into()))?
                .items()
                .map_err(failed)?,
        };
        let mut map = Map::with_capacity(items.len());
        for item in items.iter() {
            let (key, value): (Bound<'_, PyAny>, Bound<'_, PyAny>) =
                item.extract().map_err(failed)?;
            let Ok(key) = key.cast::<PyString>() else {
                return Err(NotJson::new(format!(
                    "dict key of type {} is not a string",
                    type_name(&key)
                )));
            };
            let key = key.to_str().map_err(|_| {
                NotJson::new("dict key is not valid Unicode (it holds a lone surrogate)")
            })?;
            let value = to_json(&value, depth + 1).map_err(|e| e.at(Segment::Key(key.into())))?;
            map.insert(key.to_owned(), value);
        }
        return Ok(Value::Object(map));
    }
    let mut array = Vec::new();
    for (index, item) in obj.try_iter().map_err(failed)?.enumerate() {
        let item = item.map_err(failed)?;
        array.push(to_json(&item, depth + 1).map_err(|e| e.at(Segment::Index(index)))?);
    }
    Ok(Value::Array(array))
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
        JSON_PLAIN => {
            let value: Value = serde_json::from_slice(&payload.data)?;
            // serde_json parses an integer beyond 64 bits as a float, silently losing digits
            // (Python would keep them all). Such a literal leaves a float in the value, so
            // only then is the text scanned for it.
            if has_float(&value)
                && let Some(literal) = out_of_range_integer(&payload.data)
            {
                return Err(PayloadError::IntegerOutOfRange(literal));
            }
            Ok(value)
        }
        BINARY_NULL => Ok(Value::Null),
        BINARY_PLAIN => String::from_utf8(payload.data.clone())
            .map(Value::String)
            .map_err(|_| PayloadError::UnsupportedEncoding("binary/plain (not UTF-8)".into())),
        other => Err(PayloadError::UnsupportedEncoding(
            String::from_utf8_lossy(other).into_owned(),
        )),
    }
}

/// What an activity argument payload crosses to Python as (see [`check_or_decode`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Checked {
    /// The payload is `json/plain` and its data passed [`check_json`]: the data itself goes
    /// across (as `bytes`), for pydantic to parse once, straight into the parameter type.
    JsonText,
    /// Any other encoding, decoded as [`from_payload`] does.
    Value(Value),
}

/// Like [`from_payload`], but a `json/plain` payload is only checked ([`check_json`]), not
/// built into a value. Its failures are exactly [`from_payload`]'s: on a refusal the payload
/// is decoded the old way, whose error is the one reported (refusals are rare, so the
/// second parse costs nothing on the common path).
pub fn check_or_decode(payload: &Payload) -> Result<Checked, PayloadError> {
    let is_json = payload
        .metadata
        .get(ENCODING_KEY)
        .is_some_and(|e| e.as_slice() == JSON_PLAIN);
    if is_json && check_json(&payload.data).is_ok() {
        return Ok(Checked::JsonText);
    }
    from_payload(payload).map(Checked::Value)
}

/// Accept exactly the JSON texts that [`from_payload`] decodes for `json/plain` (syntax,
/// UTF-8, escapes and lone surrogates, serde_json's nesting limit, numbers it can hold,
/// integers within 64 bits), without building a value: serde_json parses `data` with a
/// visitor that keeps nothing.
pub fn check_json(data: &[u8]) -> Result<(), PayloadError> {
    let saw_float = Cell::new(false);
    let mut de = serde_json::Deserializer::from_slice(data);
    Check(&saw_float).deserialize(&mut de)?;
    de.end()?;
    // As in `from_payload`: an integer beyond 64 bits is read as a float, so only then is
    // the text scanned for one.
    if saw_float.get()
        && let Some(literal) = out_of_range_integer(data)
    {
        return Err(PayloadError::IntegerOutOfRange(literal));
    }
    Ok(())
}

/// The visitor of [`check_json`]: visits every value (serde_json checks each as it would
/// for a `Value`) and notes whether any number was read as a float.
#[derive(Clone, Copy)]
struct Check<'a>(&'a Cell<bool>);

impl<'de> DeserializeSeed<'de> for Check<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        // `deserialize_any`, not `deserialize_ignored_any`: serde_json skips ignored values
        // without checking UTF-8, surrogates or its nesting limit.
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Check<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        self.0.set(true);
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key_seed(self)?.is_some() {
            map.next_value_seed(self)?;
        }
        Ok(())
    }
}

/// The `json/plain` payload for JSON text that passed [`check_json`] (an activity result
/// written by `pydantic_core.to_json`); `null` is `binary/null`, as [`to_payload`] writes it.
pub fn json_text_payload(data: Vec<u8>) -> Payload {
    if data == b"null" {
        return to_payload(&Value::Null);
    }
    Payload {
        metadata: HashMap::from([(ENCODING_KEY.to_string(), JSON_PLAIN.to_vec())]),
        data,
        ..Default::default()
    }
}

fn has_float(value: &Value) -> bool {
    match value {
        Value::Number(n) => n.is_f64(),
        Value::Array(items) => items.iter().any(has_float),
        Value::Object(map) => map.values().any(has_float),
        _ => false,
    }
}

/// The first integer literal (no fraction, no exponent) outside strings of valid JSON `data`
/// that fits neither `i64` nor `u64`, shortened for messages.
fn out_of_range_integer(data: &[u8]) -> Option<String> {
    let mut i = 0;
    let mut in_string = false;
    while i < data.len() {
        let byte = data[i];
        if in_string {
            match byte {
                b'\\' => i += 2,
                b'"' => {
                    in_string = false;
                    i += 1;
                }
                _ => i += 1,
            }
            continue;
        }
        match byte {
            b'"' => {
                in_string = true;
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < data.len()
                    && matches!(data[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    i += 1;
                }
                let token = std::str::from_utf8(&data[start..i]).unwrap_or_default();
                let integer = !token.contains(['.', 'e', 'E']);
                if integer && token.parse::<i64>().is_err() && token.parse::<u64>().is_err() {
                    return Some(if token.len() > 40 {
                        format!("{}... ({} digits)", &token[..30], token.len())
                    } else {
                        token.to_string()
                    });
                }
            }
            _ => i += 1,
        }
    }
    None
}

/// Decode the first payload of a `Payloads` (Temporal results have at most one);
/// no payload reads as `null`, as in temporalio.
pub fn first_value(payloads: Option<&Payloads>) -> Result<Value, PayloadError> {
    match payloads.and_then(|p| p.payloads.first()) {
        Some(p) => from_payload(p),
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

    fn nested(levels: usize) -> Value {
        (0..levels).fold(json!(1), |inner, _| json!([inner]))
    }

    #[test]
    fn max_depth_is_what_serde_json_still_decodes() {
        let deepest = to_payload(&nested(MAX_DEPTH));
        assert_eq!(from_payload(&deepest).unwrap(), nested(MAX_DEPTH));
        let too_deep = to_payload(&nested(MAX_DEPTH + 1));
        let err = from_payload(&too_deep).unwrap_err().to_string();
        assert!(err.contains("recursion limit"), "{err}");
    }

    #[test]
    fn integers_beyond_64_bits_are_refused_not_rounded() {
        let mut payload = to_payload(&json!(1));
        payload.data =
            br#"{"s": "12345678901234567890123", "big": 12345678901234567890123}"#.to_vec();
        let err = from_payload(&payload).unwrap_err().to_string();
        assert!(
            err.contains("12345678901234567890123, out of range"),
            "{err}"
        );
        // Floats, escaped quotes and in-range integers are fine.
        payload.data = br#"{"a": "x\"99999999999999999999999", "f": 1.5e300, "n": -9223372036854775808, "u": 18446744073709551615}"#.to_vec();
        let value = from_payload(&payload).unwrap();
        assert_eq!(value["u"], json!(18446744073709551615u64));
        assert_eq!(value["f"], json!(1.5e300));
    }

    fn json_payload(data: &[u8]) -> Payload {
        let mut payload = to_payload(&json!(1));
        payload.data = data.to_vec();
        payload
    }

    #[test]
    fn check_accepts_and_refuses_what_from_payload_does() {
        let deepest = serde_json::to_vec(&nested(MAX_DEPTH)).unwrap();
        let too_deep = serde_json::to_vec(&nested(MAX_DEPTH + 1)).unwrap();
        let cases: &[&[u8]] = &[
            br#"{"a": [1, 2.5, true, null], "s": "\u00c5\ud83d\ude42", "e": 1e300}"#,
            b" 7 ",
            b"\"x\"",
            br#"{"a":1,"a":2}"#,
            b"-9223372036854775808",
            b"18446744073709551615",
            &deepest,
            b"",
            b"{not json",
            b"[1,]",
            b"1 2",
            b"NaN",
            b"1e400",
            b"18446744073709551616",
            br#"[1.5, 12345678901234567890123]"#,
            br#""\ud800""#,
            br#""bad \x escape""#,
            b"\"\xff\"",
            b"\"ctrl \x01\"",
            &too_deep,
        ];
        for data in cases {
            let payload = json_payload(data);
            let text = String::from_utf8_lossy(data);
            match (check_or_decode(&payload), from_payload(&payload)) {
                (Ok(Checked::JsonText), Ok(_)) => assert!(check_json(data).is_ok()),
                (Err(ours), Err(theirs)) => {
                    assert!(check_json(data).is_err(), "{text}");
                    assert_eq!(ours.to_string(), theirs.to_string(), "{text}");
                }
                (ours, theirs) => panic!("{text}: checked {ours:?}, decoded {theirs:?}"),
            }
        }
    }

    #[test]
    fn check_or_decode_decodes_other_encodings() {
        assert_eq!(
            check_or_decode(&to_payload(&Value::Null)).unwrap(),
            Checked::Value(Value::Null)
        );
        let mut payload = json_payload(b"text");
        payload
            .metadata
            .insert(ENCODING_KEY.into(), BINARY_PLAIN.to_vec());
        assert_eq!(
            check_or_decode(&payload).unwrap(),
            Checked::Value(json!("text"))
        );
        payload.metadata.clear();
        assert!(matches!(
            check_or_decode(&payload),
            Err(PayloadError::MissingEncoding)
        ));
    }

    #[test]
    fn json_text_payloads_are_what_to_payload_writes() {
        for value in [json!({"a": [1, "Å"]}), json!(1.5), json!("s"), Value::Null] {
            let text = serde_json::to_vec(&value).unwrap();
            assert_eq!(json_text_payload(text), to_payload(&value));
        }
    }

    #[test]
    fn empty_payloads_read_as_null() {
        assert_eq!(first_value(None).unwrap(), Value::Null);
        let p = to_payloads(&[json!({"x": 1})]);
        assert_eq!(first_value(Some(&p)).unwrap(), json!({"x": 1}));
    }
}
