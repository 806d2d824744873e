//! Webhook interop with the Python SDK (`rstreamlabs-rstream`).
//!
//! Runs `tests/interop/webhook_interop.py` with the interpreter named by
//! `RSTREAM_PYTHON` (one that can `import rstream`). Without it the tests
//! fail, unless `RSTREAM_SKIP_PYTHON_INTEROP=1` is set, in which case they
//! say loudly that they skipped.

use crate::support::python;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rstream::webhook::{
    build_headers, generate_signing_secret, sign, verify, SignatureHeader, VerifyOptions,
    WebhookEvent, WebhookSecret, SECRET_PREFIX,
};
use serde_json::{json, Value};

const T: u64 = 1_700_000_000;
const EVENT: &str = r#"{"id":"evt_1","type":"tunnel.created","created_at":"2026-01-02T03:04:05Z","user_id":"usr_1","workspace_id":"ws_1","project_id":null,"object":{"id":"tun_1","labels":{"a":"b"},"ports":[80,443]},"extra":{"n":1}}"#;

/// The interpreter, or `None` when the run explicitly opted out.
fn python() -> Option<PathBuf> {
    python::interpreter("Python webhook interop")
}

/// Sends `requests` to the Python driver and returns its answers.
fn run_python(python: &Path, requests: &[Value]) -> Vec<Value> {
    let answers: Vec<Value> = python::run_batch(python, "webhook_interop.py", &requests);
    assert_eq!(answers.len(), requests.len());
    answers
}

fn secret(s: &str) -> WebhookSecret {
    WebhookSecret::new(s).unwrap()
}

/// The Rust verdict in the driver's answer format.
fn rust_verify(payload: &[u8], header: &str, secret: &str, tolerance: u64, now: u64) -> Value {
    let opts = VerifyOptions::new()
        .tolerance(Duration::from_secs(tolerance))
        .now(now);
    match verify(payload, header, &WebhookSecret::new(secret).unwrap(), &opts) {
        Ok(e) => json!({ "ok": true, "event": event_json(&e) }),
        Err(e) => json!({ "ok": false, "code": e.code() }),
    }
}

fn event_json(e: &WebhookEvent) -> Value {
    json!({
        "id": e.id(),
        "type": e.event_type().as_str(),
        "created_at": e.created_at(),
        "user_id": e.user_id(),
        "workspace_id": e.workspace_id(),
        "project_id": e.project_id(),
        "cluster_id": e.cluster_id(),
        "object": e.object(),
        "raw": e.raw(),
    })
}

fn verify_request(payload: &[u8], header: &str, secret: &str, tolerance: u64, now: u64) -> Value {
    json!({
        "op": "verify", "payload_hex": hex::encode(payload), "header": header,
        "secret": secret, "tolerance": tolerance, "received_at": now,
    })
}

fn payloads() -> Vec<Vec<u8>> {
    vec![
        EVENT.as_bytes().to_vec(),
        br#"{"id":"e","type":"client.deleted","object":{}}"#.to_vec(),
        "{ \"id\" : \" évènement ☕ \",\n\"type\":\"client.created\",\"object\":{\"k\":\"\\u00e9\"} }  "
            .as_bytes()
            .to_vec(),
        Vec::new(),
        b"\xff\xfe\x00binary".to_vec(),
        b"not json".to_vec(),
    ]
}

fn secrets() -> Vec<String> {
    vec![
        "whsec_interop".to_owned(),
        generate_signing_secret().expose_secret().to_owned(),
        " whsec_with spaces ".to_owned(),
        "whsec_ünïcödé".to_owned(),
        "plain-secret-without-prefix".to_owned(),
        "x".repeat(200), // longer than the HMAC block
    ]
}

#[test]
fn python_signatures_verify_in_rust() {
    let Some(py) = python() else { return };
    let mut requests = Vec::new();
    let mut cases = Vec::new();
    for payload in payloads() {
        for s in secrets() {
            for t in [0, T, 9_999_999_999] {
                requests.push(json!({
                    "op": "sign", "payload_hex": hex::encode(&payload), "secret": s, "timestamp": t,
                }));
                cases.push((payload.clone(), s.clone(), t));
            }
        }
    }
    let answers = run_python(&py, &requests);
    for ((payload, s, t), answer) in cases.into_iter().zip(answers) {
        assert_eq!(answer["ok"], true, "{answer}");
        let header = answer["header"].as_str().unwrap();
        assert_eq!(header, sign(&payload, &secret(&s), t), "same bytes as Rust");
        let verdict = rust_verify(&payload, header, &s, 300, t);
        // The signature always passes; only unparseable payloads may fail.
        if verdict["ok"] != true {
            assert_eq!(verdict["code"], "ERR_RSTREAM_WEBHOOK_PAYLOAD", "{verdict}");
        }
    }
}

#[test]
fn rust_signatures_verify_in_python() {
    let Some(py) = python() else { return };
    let mut requests = Vec::new();
    let mut expected = Vec::new();
    for payload in payloads() {
        for s in secrets() {
            let header = sign(&payload, &secret(&s), T);
            requests.push(verify_request(&payload, &header, &s, 300, T + 300));
            expected.push(rust_verify(&payload, &header, &s, 300, T + 300));
        }
    }
    // Sender-side rotation: two v1 entries, either secret verifies.
    let (new, old) = (generate_signing_secret(), generate_signing_secret());
    let rotated = SignatureHeader::sign(EVENT, &new, T)
        .and_sign(EVENT, &old)
        .to_string();
    for s in [&new, &old] {
        let s = s.expose_secret();
        requests.push(verify_request(EVENT.as_bytes(), &rotated, s, 300, T));
        expected.push(rust_verify(EVENT.as_bytes(), &rotated, s, 300, T));
    }
    let answers = run_python(&py, &requests);
    let mut accepted = 0;
    for ((request, answer), rust) in requests.iter().zip(&answers).zip(&expected) {
        assert_eq!(answer, rust, "request {request}");
        if answer["ok"] == true {
            accepted += 1;
        } else {
            assert_eq!(answer["code"], "ERR_RSTREAM_WEBHOOK_PAYLOAD");
        }
    }
    assert!(accepted >= 3 * secrets().len() + 2, "{accepted}");
}

#[test]
fn both_sdks_agree_on_edge_cases() {
    let Some(py) = python() else { return };
    let s = "whsec_edges";
    let good = sign(EVENT, &secret(s), T);
    let v1 = good.split_once(",v1=").unwrap().1.to_owned();
    let mut cases: Vec<(Vec<u8>, String, u64, u64)> = Vec::new();
    let mut header_case = |h: String| cases.push((EVENT.as_bytes().to_vec(), h, 300, T));
    for h in [
        good.clone(),
        format!("v1={v1},t={T}"),
        format!(" t={T} ,\tv1={v1} "),
        format!("t=1,t={T},v1={v1}"),
        format!("t={T},v1={v1},t=1"),
        format!("t=000{T},v1={v1}"),
        format!("t={T},v1={}", v1.to_uppercase()),
        format!("t={T},v0={v1}"),
        format!("t={T},v1=,v1={v1}"),
        format!("t={T},v1=bad,v1={}", &v1[..63]),
        format!("t={T},v1={v1}0"),
        format!("t={T}"),
        format!("v1={v1}"),
        format!("t=,v1={v1}"),
        format!("t=-1,v1={v1}"),
        format!("t=+{T},v1={v1}"),
        format!("t={T}.5,v1={v1}"),
        format!("T={T},V1={v1}"),
        format!("t={T};v1={v1}"),
        " ".to_owned(),
        ",,,".to_owned(),
        format!("t=99999999999999999999999,v1={v1}"),
    ] {
        header_case(h);
    }
    // Tolerance edges, both directions, and a custom tolerance.
    for (tolerance, now) in [
        (300, T + 300),
        (300, T + 301),
        (300, T - 300),
        (300, T - 301),
        (0, T),
        (0, T + 1),
        (10, T + 10),
        (10, T - 11),
    ] {
        cases.push((EVENT.as_bytes().to_vec(), good.clone(), tolerance, now));
    }
    // Payload shapes, correctly signed.
    for body in [
        r#"{"id":"e","type":"client.created","object":{}}"#,
        r#"{"id":"  e  ","type":"client.created","object":{},"created_at":null}"#,
        r#"{"id":"e","type":"client.created","object":{},"id":"f"}"#,
        r#"{"id":"e","type":"tunnel.updated","object":{}}"#,
        r#"{"id":"e","type":" tunnel.created","object":{}}"#,
        r#"{"id":"e","type":"","object":{}}"#,
        r#"{"id":"","type":"client.created","object":{}}"#,
        r#"{"id":7,"type":"client.created","object":{}}"#,
        r#"{"type":"client.created","object":{}}"#,
        r#"{"id":"e","type":"client.created"}"#,
        r#"{"id":"e","type":"client.created","object":null}"#,
        r#"{"id":"e","type":"client.created","object":[1]}"#,
        r#"{"id":"e","type":"client.created","object":{},"created_at":1}"#,
        r#"{"id":"e","type":"client.created","object":{},"user_id":false}"#,
        r#"{"id":"e","type":"client.created","object":{},"cluster_id":{}}"#,
        r#"[{"id":"e","type":"client.created","object":{}}]"#,
        r#""string""#,
        "{}",
        "",
        "\u{feff}{}",
    ] {
        let header = sign(body, &secret(s), T);
        cases.push((body.as_bytes().to_vec(), header, 300, T));
    }
    let requests: Vec<Value> = cases
        .iter()
        .map(|(p, h, tol, now)| verify_request(p, h, s, *tol, *now))
        .collect();
    let answers = run_python(&py, &requests);
    let mut outcomes = [0usize; 2];
    for ((payload, header, tolerance, now), answer) in cases.iter().zip(&answers) {
        let rust = rust_verify(payload, header, s, *tolerance, *now);
        assert_eq!(
            &rust,
            answer,
            "payload {:?} header {header:?} tolerance {tolerance} now {now}",
            String::from_utf8_lossy(payload)
        );
        outcomes[usize::from(rust["ok"] == true)] += 1;
    }
    assert!(outcomes[0] > 10 && outcomes[1] > 10, "{outcomes:?}");
}

#[test]
fn secrets_and_headers_agree() {
    let Some(py) = python() else { return };
    let rust_secret = generate_signing_secret();
    let event = WebhookEvent::from_json(EVENT).unwrap();
    let requests = vec![
        json!({ "op": "generate" }),
        json!({ "op": "sign", "payload_hex": hex::encode(EVENT), "secret": rust_secret.expose_secret(), "timestamp": T }),
        json!({
            "op": "build_headers", "payload_hex": hex::encode(EVENT), "secret": rust_secret.expose_secret(),
            "timestamp": T, "event_id": "evt_1", "event_type": "tunnel.created",
            "webhook_id": " wh_1 ", "delivery_id": "dl_1",
        }),
        json!({
            "op": "build_headers", "payload_hex": hex::encode(EVENT), "secret": rust_secret.expose_secret(),
            "timestamp": T, "event_id": "evt_1", "event_type": "tunnel.created",
            "webhook_id": "wh_1", "delivery_id": "  ",
        }),
        json!({ "op": "sign", "payload_hex": "", "secret": "   ", "timestamp": T }),
    ];
    let answers = run_python(&py, &requests);

    let py_secret = answers[0]["secret"].as_str().unwrap();
    let parsed = WebhookSecret::new(py_secret).unwrap();
    let tail = py_secret.strip_prefix(SECRET_PREFIX).unwrap();
    let ours = rust_secret
        .expose_secret()
        .strip_prefix(SECRET_PREFIX)
        .unwrap();
    assert_eq!(tail.len(), ours.len());
    assert!(tail
        .bytes()
        .chain(ours.bytes())
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    let h = sign(EVENT, &parsed, T);
    assert!(verify(EVENT, &h, &parsed, &VerifyOptions::new().now(T)).is_ok());

    assert_eq!(answers[1]["header"], sign(EVENT, &rust_secret, T));

    let headers = build_headers(EVENT, &event, &rust_secret, " wh_1 ", "dl_1", T).unwrap();
    let ours: serde_json::Map<String, Value> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap())))
        .collect();
    assert_eq!(answers[2]["headers"], Value::Object(ours));

    let err = build_headers(EVENT, &event, &rust_secret, "wh_1", "  ", T).unwrap_err();
    assert_eq!(answers[3]["code"], err.code());
    assert_eq!(
        answers[4]["code"],
        WebhookSecret::new("   ").unwrap_err().code()
    );
}
