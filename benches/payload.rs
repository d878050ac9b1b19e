//! Payload conversion micro-benchmarks: what the client and the worker do per payload.
//!
//! For a 1 kB and a 1 MB JSON document (NOMAD-like: ids, formulas, energies, positions):
//! - `encode`: `serde_json::Value` -> `Payload` (`json/plain`) -> protobuf bytes;
//! - `decode`: protobuf bytes -> `Payload` -> `serde_json::Value`;
//! - `scan`: protobuf bytes -> `Payload` -> the check of its JSON text that replaces `decode`
//!   for activity arguments (`check_or_decode`: no `Value` built; the text goes to pydantic);
//! - `encode_text`: a result's JSON text (what `pydantic_core.to_json` wrote) checked and put
//!   in a `Payload` as it is -> protobuf bytes, replacing `from_python` + `encode` for results;
//! - `to_python` / `from_python`: the `Value` <-> Python object step at the pyo3 boundary
//!   (pythonize), which the worker adds for every activity argument and result.
//!
//! Run with `./scripts/bench.sh --rust` (it sets `PYO3_PYTHON` and `LD_LIBRARY_PATH`).

use std::hint::black_box;

use _core::payload::{
    Checked, Json, check_json, check_or_decode, from_payload, json_text_payload, to_payload,
};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;
use pyo3::prelude::*;
use serde_json::{Value, json};
use temporalio_common::protos::temporal::api::common::v1::Payload;

/// A JSON document of at least `target` bytes when serialised compactly.
fn document(target: usize) -> Value {
    let mut entries = Vec::new();
    let mut doc = json!({"user_id": "user-7f3a", "upload_id": "upload-91c2", "entries": []});
    let mut size = serde_json::to_vec(&doc).unwrap().len();
    let mut i = 0u32;
    while size < target {
        let f = f64::from(i);
        let entry = json!({
            "entry_id": format!("entry-{i:08}"),
            "formula": "C9H8O4",
            "energy_ev": -1234.5678 - f * 0.001,
            "converged": !i.is_multiple_of(3),
            "positions": [[0.1 * f, 0.2, 0.3], [1.4, 0.05 * f, 2.25]],
            "tags": ["dft", "pbe"],
        });
        size += serde_json::to_vec(&entry).unwrap().len() + 1;
        entries.push(entry);
        i += 1;
    }
    doc["entries"] = Value::Array(entries);
    doc
}

const SIZES: [(&str, usize); 2] = [("1kB", 1_000), ("1MB", 1_000_000)];

fn bench_payload(c: &mut Criterion) {
    let mut group = c.benchmark_group("payload");
    for (name, target) in SIZES {
        let value = document(target);
        let bytes = to_payload(&value).encode_to_vec();
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_with_input(BenchmarkId::new("encode", name), &value, |b, v| {
            b.iter(|| to_payload(black_box(v)).encode_to_vec())
        });
        group.bench_with_input(BenchmarkId::new("decode", name), &bytes, |b, data| {
            b.iter(|| from_payload(&Payload::decode(black_box(data.as_slice())).unwrap()).unwrap())
        });
        group.bench_with_input(BenchmarkId::new("scan", name), &bytes, |b, data| {
            b.iter(|| {
                let payload = Payload::decode(black_box(data.as_slice())).unwrap();
                assert_eq!(check_or_decode(&payload).unwrap(), Checked::JsonText);
                payload
            })
        });
        let text = serde_json::to_vec(&value).unwrap();
        group.bench_with_input(BenchmarkId::new("encode_text", name), &text, |b, text| {
            b.iter_batched(
                || text.clone(),
                |text| {
                    check_json(black_box(&text)).unwrap();
                    json_text_payload(text).encode_to_vec()
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

fn bench_python(c: &mut Criterion) {
    Python::initialize();
    let mut group = c.benchmark_group("python");
    for (name, target) in SIZES {
        let value = document(target);
        group.throughput(Throughput::Bytes(
            serde_json::to_vec(&value).unwrap().len() as u64
        ));
        Python::attach(|py| {
            group.bench_with_input(BenchmarkId::new("to_python", name), &value, |b, v| {
                b.iter_batched(
                    || v.clone(),
                    |v| Json(v).into_pyobject(py).unwrap(),
                    BatchSize::LargeInput,
                )
            });
            let object = Json(value.clone()).into_pyobject(py).unwrap();
            group.bench_with_input(BenchmarkId::new("from_python", name), &object, |b, o| {
                b.iter(|| black_box(o).extract::<Json>().unwrap())
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench_payload, bench_python);
criterion_main!(benches);
