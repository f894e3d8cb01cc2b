//! The merged answers, built from the sources' bodies as received: each body was checked to
//! be one UTF-8 JSON value, so it is embedded byte for byte, never parsed into a tree and
//! printed again.

use bytes::{BufMut, Bytes, BytesMut};

use super::{FetchError, SourceResult, Upstreams};

/// `/aggregate`'s body: `{"name": <json>, ...}` for the sources that answered, plus
/// `"_errors": {"name": {"code", "message"}}` when some failed.
pub fn aggregate_body(upstreams: &Upstreams, results: &[SourceResult]) -> Bytes {
    let size: usize = results
        .iter()
        .map(|r| r.result.as_ref().map_or(96, Bytes::len) + 24)
        .sum();
    let mut out = BytesMut::with_capacity(size + 16).writer();
    let mut first = true;
    let mut errors = serde_json::Map::new();
    push(&mut out, b"{");
    for r in results {
        let name = upstreams.name(r.id);
        match &r.result {
            Ok(body) => {
                if !std::mem::take(&mut first) {
                    push(&mut out, b",");
                }
                push_key(&mut out, name);
                push(&mut out, body);
            }
            Err(err) => {
                errors.insert(name.to_owned(), error_json(err));
            }
        }
    }
    if !errors.is_empty() {
        if !first {
            push(&mut out, b",");
        }
        push_key(&mut out, "_errors");
        // A map of strings always serialises.
        let _ = serde_json::to_writer(&mut out, &errors);
    }
    push(&mut out, b"}");
    out.into_inner().freeze()
}

/// `/parallel`'s body: `{"results": [<json>, ...]}` in the order given.
pub fn results_body(bodies: &[Bytes]) -> Bytes {
    let size: usize = bodies.iter().map(|b| b.len() + 1).sum();
    let mut out = BytesMut::with_capacity(size + 16);
    out.put_slice(b"{\"results\":[");
    for (i, body) in bodies.iter().enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        out.put_slice(body);
    }
    out.put_slice(b"]}");
    out.freeze()
}

/// A source's error as it appears in answers: `{"code", "message"}`.
pub fn error_json(err: &FetchError) -> serde_json::Value {
    serde_json::json!({"code": err.code, "message": err.message})
}

fn push(out: &mut bytes::buf::Writer<BytesMut>, bytes: &[u8]) {
    out.get_mut().put_slice(bytes);
}

fn push_key(out: &mut bytes::buf::Writer<BytesMut>, key: &str) {
    // Writing a &str into a buffer cannot fail.
    let _ = serde_json::to_writer(&mut *out, key);
    push(out, b":");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fetch::{FetchErrorKind, SourceId};

    fn upstreams() -> Upstreams {
        crate::fetch::tests::upstreams(&["a", "b", "c"])
    }

    fn ok(id: usize, body: &'static str) -> SourceResult {
        SourceResult {
            id: SourceId(id),
            result: Ok(Bytes::from_static(body.as_bytes())),
        }
    }

    fn failed(id: usize) -> SourceResult {
        SourceResult {
            id: SourceId(id),
            result: Err(FetchError::new(
                FetchErrorKind::Status,
                "the source answered 500",
            )),
        }
    }

    fn parse(body: &Bytes) -> serde_json::Value {
        serde_json::from_slice(body).unwrap()
    }

    #[test]
    fn aggregate_is_the_seed_shape_when_all_answered() {
        let body = aggregate_body(&upstreams(), &[ok(0, "{\"x\": 1}\n"), ok(1, "[true]")]);
        assert_eq!(
            parse(&body),
            serde_json::json!({"a": {"x": 1}, "b": [true]})
        );
    }

    #[test]
    fn aggregate_lists_failures_under_errors() {
        let up = upstreams();
        let body = aggregate_body(&up, &[failed(0), ok(1, "2"), failed(2)]);
        let json = parse(&body);
        assert_eq!(json["b"], 2);
        assert_eq!(json["_errors"]["a"]["code"], "upstream_status");
        assert_eq!(json["_errors"]["c"]["message"], "the source answered 500");
        assert!(json.get("a").is_none());

        let none = parse(&aggregate_body(&up, &[failed(0)]));
        assert_eq!(none.as_object().unwrap().len(), 1);
        assert_eq!(parse(&aggregate_body(&up, &[])), serde_json::json!({}));
    }

    #[test]
    fn results_keep_the_given_order() {
        let body = results_body(&[Bytes::from_static(b"1"), Bytes::from_static(b"{\"z\":0}")]);
        assert_eq!(parse(&body), serde_json::json!({"results": [1, {"z": 0}]}));
        assert_eq!(
            parse(&results_body(&[])),
            serde_json::json!({"results": []})
        );
    }
}
