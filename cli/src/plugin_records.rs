//! Sample records of `quiver plugin test`: JSON lines in, one encoded batch per group of lines, and
//! records (what a transform returned) back out as JSON lines of the same shape, so an output can
//! be fed to the next plugin as its input.
//!
//! A line is an object `{"value": V, "key": V, "tags": [..], "headers": {name: V}, "timestamp": ms}`
//! (all optional but `value`) where `V` is a string (its UTF-8 bytes) or `{"base64": "…"}` (any
//! bytes); a line that is a bare JSON string is a record with that value. Blank lines are skipped.

use anyhow::{anyhow, bail, Context};
use base64::Engine as _;
use quiver_proto::batch::{Batch, BatchBuilder, Record, RecordData};
use serde_json::{json, Map, Value};

/// One input record, owned, with the line it came from (records are named by their line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub line: usize,
    pub timestamp: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub tags: Vec<String>,
}

/// Parses JSON lines; `now` is the timestamp of records that give none.
pub fn parse_jsonl(text: &str, now: i64) -> anyhow::Result<Vec<Sample>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: Value =
            serde_json::from_str(line).with_context(|| format!("line {}: not JSON", i + 1))?;
        let sample = sample(i + 1, &value, now).with_context(|| format!("line {}", i + 1))?;
        out.push(sample);
    }
    if out.is_empty() {
        bail!("no records: the input has no JSON lines");
    }
    Ok(out)
}

fn sample(line: usize, v: &Value, now: i64) -> anyhow::Result<Sample> {
    let mut s = Sample {
        line,
        timestamp: now,
        key: None,
        value: Vec::new(),
        headers: Vec::new(),
        tags: Vec::new(),
    };
    let obj = match v {
        Value::String(text) => {
            s.value = text.clone().into_bytes();
            return Ok(s);
        }
        Value::Object(obj) => obj,
        _ => bail!("expected an object with a `value` (or a JSON string)"),
    };
    if let Some(bad) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        bail!("unknown field `{bad}` (a record has {})", FIELDS.join(", "));
    }
    s.value = bytes(
        obj.get("value").ok_or_else(|| anyhow!("no `value`"))?,
        "value",
    )?;
    s.key = obj.get("key").map(|k| bytes(k, "key")).transpose()?;
    s.tags = tags(obj.get("tags"))?;
    s.headers = headers(obj.get("headers"))?;
    if let Some(ts) = obj.get("timestamp") {
        s.timestamp = ts
            .as_i64()
            .ok_or_else(|| anyhow!("`timestamp` must be an integer (ms since the epoch)"))?;
    }
    Ok(s)
}

const FIELDS: [&str; 5] = ["value", "key", "tags", "headers", "timestamp"];

/// A string's UTF-8 bytes, or the bytes of `{"base64": "…"}`.
fn bytes(v: &Value, what: &str) -> anyhow::Result<Vec<u8>> {
    match v {
        Value::String(s) => Ok(s.clone().into_bytes()),
        Value::Object(o) if o.len() == 1 && o.contains_key("base64") => {
            let text = o["base64"]
                .as_str()
                .ok_or_else(|| anyhow!("`{what}`: base64 must be a string"))?;
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .with_context(|| format!("`{what}`: invalid base64"))
        }
        _ => bail!("`{what}` must be a string or {{\"base64\": \"…\"}}"),
    }
}

fn tags(v: Option<&Value>) -> anyhow::Result<Vec<String>> {
    let Some(v) = v else { return Ok(Vec::new()) };
    let list = v
        .as_array()
        .ok_or_else(|| anyhow!("`tags` must be a list of strings"))?;
    list.iter()
        .map(|t| {
            t.as_str()
                .map(str::to_owned)
                .ok_or_else(|| anyhow!("`tags` must be a list of strings"))
        })
        .collect()
}

fn headers(v: Option<&Value>) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let Some(v) = v else { return Ok(Vec::new()) };
    let map = v
        .as_object()
        .ok_or_else(|| anyhow!("`headers` must be an object of name: value"))?;
    map.iter()
        .map(|(name, value)| Ok((name.clone(), bytes(value, &format!("headers.{name}"))?)))
        .collect()
}

/// Encodes `samples` as one batch, as a producer would (base offset 0).
pub fn encode(samples: &[Sample]) -> anyhow::Result<Batch> {
    let mut builder = BatchBuilder::new();
    for s in samples {
        let headers: Vec<(&str, &[u8])> = s
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_slice()))
            .collect();
        let tags: Vec<&str> = s.tags.iter().map(String::as_str).collect();
        let record = RecordData {
            timestamp: s.timestamp,
            key: s.key.as_deref(),
            value: &s.value,
            headers: &headers,
            tags: &tags,
        };
        builder
            .push(&record)
            .with_context(|| format!("record {}", s.line))?;
    }
    let bytes = builder.finish().context("encoding the batch")?;
    Batch::parse(bytes).context("encoding the batch")
}

/// A record as a JSON line of the input's shape (empty fields left out).
pub fn to_json(r: &Record) -> Value {
    let mut obj = Map::new();
    obj.insert("value".into(), bytes_json(&r.value));
    if let Some(k) = &r.key {
        obj.insert("key".into(), bytes_json(k));
    }
    if !r.tags.is_empty() {
        obj.insert("tags".into(), json!(r.tags));
    }
    if !r.headers.is_empty() {
        let h: Map<String, Value> = r
            .headers
            .iter()
            .map(|(n, v)| (n.clone(), bytes_json(v)))
            .collect();
        obj.insert("headers".into(), Value::Object(h));
    }
    obj.insert("timestamp".into(), json!(r.timestamp));
    Value::Object(obj)
}

/// Text when the bytes are UTF-8, else `{"base64": …}`.
fn bytes_json(b: &[u8]) -> Value {
    match std::str::from_utf8(b) {
        Ok(s) => Value::String(s.to_owned()),
        Err(_) => json!({ "base64": base64::engine::general_purpose::STANDARD.encode(b) }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_and_round_trip() {
        let text = r#"{"value":"a","key":"k","tags":["t"],"headers":{"h":{"base64":"/wA="}},"timestamp":5}

"plain""#;
        let samples = parse_jsonl(text, 9).unwrap();
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[0].headers, vec![("h".to_owned(), vec![0xff, 0])]);
        assert_eq!((samples[1].line, samples[1].timestamp), (3, 9));
        let batch = encode(&samples).unwrap();
        let first = batch.to_records().next().unwrap();
        assert_eq!(
            to_json(&first),
            json!({"value":"a","key":"k","tags":["t"],"headers":{"h":{"base64":"/wA="}},"timestamp":5})
        );
    }

    #[test]
    fn bad_lines_name_the_line_and_field() {
        let err = |t: &str| format!("{:#}", parse_jsonl(t, 0).unwrap_err());
        assert!(err("{\"value\":1}").contains("line 1: `value` must be a string"));
        assert!(err("\n{\"valu\":\"x\"}").contains("line 2: unknown field `valu`"));
        assert!(err("{").contains("line 1: not JSON"));
        assert!(err("").contains("no records"));
    }
}
