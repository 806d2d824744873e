//! Webhook signing, verification and the tower/axum middleware.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt as _, Full};
use proptest::prelude::*;
use rstream::webhook::{
    build_headers, generate_signing_secret, sign, verify, verify_request, verify_with_secrets,
    RejectionKind, SignatureHeader, VerifyOptions, WebhookEvent, WebhookEventType, WebhookLayer,
    WebhookRejection, WebhookSecret, DELIVERY_ID_HEADER, EVENT_ID_HEADER, EVENT_TYPE_HEADER,
    SIGNATURE_HEADER, WEBHOOK_ID_HEADER,
};
use rstream::{Error, ErrorKind};
use sha2::Sha256;
use tower::{Service, ServiceBuilder, ServiceExt as _};

const SIG: &str = "ERR_RSTREAM_WEBHOOK_SIGNATURE";
const PAYLOAD: &str = "ERR_RSTREAM_WEBHOOK_PAYLOAD";
const T: u64 = 1_700_000_000;
const BODY: &str = r#"{"id":"evt_123","type":"tunnel.created","object":{"id":"tun_1"}}"#;

fn secret(s: &str) -> WebhookSecret {
    WebhookSecret::new(s).unwrap()
}

fn at(now: u64) -> VerifyOptions {
    VerifyOptions::new().now(now)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn v1_of(header: &str) -> &str {
    header.split_once(",v1=").unwrap().1
}

// ----- signing -----

#[test]
fn known_vector_matches_an_independent_hmac() {
    let key = "whsec_known_vector_secret";
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(format!("{T}.").as_bytes());
    mac.update(BODY.as_bytes());
    let expected = hex::encode(mac.finalize().into_bytes());
    let header = sign(BODY, &secret(key), T);
    assert_eq!(header, format!("t={T},v1={expected}"));
    // Cross-checked once with Python's `hmac` module.
    assert_eq!(
        expected,
        "9e94cbbc48d57e32b7da4141f6970a3ce8de623a9920624e729db5f6c1ba97fb"
    );
}

#[test]
fn sign_then_verify_returns_the_event() {
    let s = generate_signing_secret();
    let header = sign(BODY, &s, T);
    let event = verify(BODY, &header, &s, &at(T)).unwrap();
    assert_eq!(event.id(), "evt_123");
    assert_eq!(event.event_type(), WebhookEventType::TunnelCreated);
    assert_eq!(event.object()["id"], "tun_1");
    assert_eq!(event.raw()["type"], "tunnel.created");
}

#[test]
fn rotation_sender_side_several_v1() {
    let (new, old, other) = (secret("whsec_new"), secret("whsec_old"), secret("whsec_x"));
    let header = SignatureHeader::sign(BODY, &new, T)
        .and_sign(BODY, &old)
        .to_string();
    assert_eq!(header.matches("v1=").count(), 2);
    assert!(verify(BODY, &header, &new, &at(T)).is_ok());
    assert!(verify(BODY, &header, &old, &at(T)).is_ok());
    assert_eq!(
        verify(BODY, &header, &other, &at(T)).unwrap_err().code(),
        SIG
    );
}

#[test]
fn rotation_receiver_side_several_secrets() {
    let (new, old, other) = (secret("whsec_new"), secret("whsec_old"), secret("whsec_x"));
    let both = [new.clone(), old.clone()];
    for signer in [&new, &old] {
        let header = sign(BODY, signer, T);
        assert!(verify_with_secrets(BODY, &header, &both, &at(T)).is_ok());
    }
    let header = sign(BODY, &other, T);
    assert_eq!(
        verify_with_secrets(BODY, &header, &both, &at(T))
            .unwrap_err()
            .code(),
        SIG
    );
    let err = verify_with_secrets(BODY, &header, &[], &at(T)).unwrap_err();
    assert_eq!(err.code(), "ERR_RSTREAM_WEBHOOK_SECRET_REQUIRED");
}

#[test]
fn tolerance_edges() {
    let s = secret("whsec_edges");
    let header = sign(BODY, &s, T);
    // Default 300 s, both directions, inclusive.
    assert!(verify(BODY, &header, &s, &at(T + 300)).is_ok());
    assert!(verify(BODY, &header, &s, &at(T - 300)).is_ok());
    assert_eq!(
        verify(BODY, &header, &s, &at(T + 301)).unwrap_err().code(),
        SIG
    );
    // Signed in the future (sender clock ahead).
    assert!(verify(BODY, &header, &s, &at(T - 301)).is_err());
    // Custom tolerance, including zero.
    let ten = VerifyOptions::new().tolerance(Duration::from_secs(10));
    assert!(verify(BODY, &header, &s, &ten.now(T + 10)).is_ok());
    assert!(verify(BODY, &header, &s, &ten.now(T + 11)).is_err());
    let zero = VerifyOptions::new().tolerance(Duration::ZERO);
    assert!(verify(BODY, &header, &s, &zero.now(T)).is_ok());
    assert!(verify(BODY, &header, &s, &zero.now(T + 1)).is_err());
    // The real clock: a fresh signature passes, an old one does not.
    let now = unix_now();
    assert!(verify(
        BODY,
        sign(BODY, &s, now).as_str(),
        &s,
        &VerifyOptions::new()
    )
    .is_ok());
    assert!(verify(BODY, &sign(BODY, &s, now - 301), &s, &VerifyOptions::new()).is_err());
    assert!(verify(BODY, &sign(BODY, &s, 0), &s, &VerifyOptions::new()).is_err());
}

#[test]
fn tampering_is_rejected() {
    let s = secret("whsec_tamper");
    let header = sign(BODY, &s, T);
    let body2 = BODY.replace("tun_1", "tun_2");
    assert_eq!(verify(&body2, &header, &s, &at(T)).unwrap_err().code(), SIG);
    // Same signature, another timestamp (within tolerance).
    let moved = format!("t={},v1={}", T + 1, v1_of(&header));
    assert_eq!(verify(BODY, &moved, &s, &at(T)).unwrap_err().code(), SIG);
    // Trailing newline added by a proxy.
    assert!(verify(format!("{BODY}\n"), &header, &s, &at(T)).is_err());
}

#[test]
fn header_items_any_order_whitespace_and_unknown_items() {
    let s = secret("whsec_order");
    let v1 = v1_of(&sign(BODY, &s, T)).to_owned();
    for header in [
        format!("v1={v1},t={T}"),
        format!(" t={T} , v1={v1} "),
        format!("v0=deadbeef,t={T},x=1,v1={v1}"),
        format!("t={T},v1=not-hex,v1={v1}"),
        format!("t={T},v1={}", v1.to_uppercase()),
        format!("t=000{T},v1={v1}"),
    ] {
        assert!(verify(BODY, &header, &s, &at(T)).is_ok(), "{header}");
    }
}

#[test]
fn duplicate_t_later_wins() {
    let s = secret("whsec_dup");
    let v1 = v1_of(&sign(BODY, &s, T)).to_owned();
    assert!(verify(BODY, &format!("t=1,t={T},v1={v1}"), &s, &at(T)).is_ok());
    assert!(verify(BODY, &format!("t={T},v1={v1},t={}", T + 1), &s, &at(T)).is_err());
}

#[test]
fn empty_and_malformed_headers_are_signature_errors() {
    let s = secret("whsec_bad");
    let v1 = v1_of(&sign(BODY, &s, T)).to_owned();
    for header in [
        String::new(),
        " ".to_owned(),
        format!("t={T}"),
        format!("v1={v1}"),
        format!("t=,v1={v1}"),
        format!("t=-{T},v1={v1}"),
        format!("t={T}.0,v1={v1}"),
        format!("t={T};v1={v1}"),
    ] {
        let err = verify(BODY, &header, &s, &at(T)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Webhook);
        assert_eq!(err.code(), SIG, "{header:?}");
    }
}

#[test]
fn wrong_length_or_non_hex_signature_is_simply_no_match() {
    let s = secret("whsec_len");
    let v1 = v1_of(&sign(BODY, &s, T)).to_owned();
    for bad in [
        String::new(),
        v1[..63].to_owned(),
        format!("{v1}0"),
        format!("{}zz", &v1[..62]),
        format!("{}0x", &v1[..62]),
        format!("{}é", &v1[..62]),
    ] {
        let header = format!("t={T},v1={bad}");
        assert_eq!(verify(BODY, &header, &s, &at(T)).unwrap_err().code(), SIG);
        if bad.is_ascii() {
            let map = sig_map(&header);
            let rej = verify_request(&map, BODY.as_bytes(), std::slice::from_ref(&s), &at(T))
                .unwrap_err();
            assert_eq!(rej.kind(), RejectionKind::SignatureMismatch, "{bad}");
        }
    }
    // A header value that is not visible ASCII cannot even be read: 400.
    let mut map = http::HeaderMap::new();
    let value = HeaderValue::from_bytes(format!("t={T},v1={}é", &v1[..62]).as_bytes()).unwrap();
    map.insert(SIGNATURE_HEADER, value);
    let rej = verify_request(&map, BODY.as_bytes(), &[s], &at(T)).unwrap_err();
    assert_eq!(rej.kind(), RejectionKind::MalformedSignature);
    assert_eq!(rej.status(), StatusCode::BAD_REQUEST);
}

#[test]
fn payload_errors_are_distinct_from_signature_errors() {
    let s = secret("whsec_payload");
    for body in [
        &b"not json"[..],
        b"[]",
        b"\xff\xfe{}",
        br#"{"id":"e","type":"tunnel.updated","object":{}}"#,
        br#"{"id":"e","type":"tunnel.created"}"#,
    ] {
        let header = sign(body, &s, T);
        let err = verify(body, &header, &s, &at(T)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Webhook);
        assert_eq!(err.code(), PAYLOAD);
        // Unsigned garbage is a signature error: the payload is never parsed.
        let err = verify(body, &sign(b"other", &s, T), &s, &at(T)).unwrap_err();
        assert_eq!(err.code(), SIG);
    }
}

#[test]
fn secrets_never_appear_in_errors_or_debug() {
    let raw = "whsec_super_secret_value";
    let s = secret(raw);
    assert!(!format!("{s:?}").contains("super_secret"));
    let header = sign(BODY, &s, T);
    let mut texts = Vec::new();
    for (body, header, now) in [
        (BODY, header.as_str(), T + 1000),
        ("x", header.as_str(), T),
        (BODY, "", T),
        (BODY, raw, T),
    ] {
        let err = verify(body, header, &s, &at(now)).unwrap_err();
        texts.push(format!("{err} {err:?}"));
    }
    let opts = VerifyOptions::new();
    texts.push(format!("{opts:?} {:?}", WebhookLayer::new(s.clone())));
    for t in texts {
        assert!(!t.contains("super_secret"), "{t}");
    }
}

#[test]
fn build_headers_sets_all_five() {
    let s = secret("whsec_build");
    let event = WebhookEvent::from_json(BODY).unwrap();
    let h = build_headers(BODY, &event, &s, "wh_1", " dl_1 ", T).unwrap();
    assert_eq!(h.len(), 5);
    assert_eq!(h[SIGNATURE_HEADER], sign(BODY, &s, T).as_str());
    assert_eq!(h[EVENT_ID_HEADER], "evt_123");
    assert_eq!(h[EVENT_TYPE_HEADER], "tunnel.created");
    assert_eq!(h[WEBHOOK_ID_HEADER], "wh_1");
    assert_eq!(h[DELIVERY_ID_HEADER], "dl_1");
    assert_eq!(
        build_headers(BODY, &event, &s, "", "d", T)
            .unwrap_err()
            .code(),
        PAYLOAD
    );
    // And the receiver side accepts them.
    assert!(verify_request(&h, BODY.as_bytes(), &[s], &at(T)).is_ok());
}

#[test]
fn verify_request_uses_the_first_signature_header() {
    let s = secret("whsec_first");
    let good = HeaderValue::from_str(&sign(BODY, &s, T)).unwrap();
    let bad = HeaderValue::from_str(&sign(BODY, &secret("whsec_other"), T)).unwrap();
    let mut map = http::HeaderMap::new();
    map.append(SIGNATURE_HEADER, good.clone());
    map.append(SIGNATURE_HEADER, bad.clone());
    assert!(verify_request(&map, BODY.as_bytes(), std::slice::from_ref(&s), &at(T)).is_ok());
    let mut map = http::HeaderMap::new();
    map.append(SIGNATURE_HEADER, bad);
    map.append(SIGNATURE_HEADER, good);
    assert!(verify_request(&map, BODY.as_bytes(), std::slice::from_ref(&s), &at(T)).is_err());
    let rej = verify_request(&http::HeaderMap::new(), BODY.as_bytes(), &[s], &at(T)).unwrap_err();
    assert_eq!(rej.kind(), RejectionKind::MissingSignature);
}

#[test]
fn rejection_converts_into_the_crate_error() {
    let s = secret("whsec_conv");
    let rej = verify_request(
        &sig_map(&sign(BODY, &s, T)),
        BODY.as_bytes(),
        &[s],
        &at(T + 1000),
    )
    .unwrap_err();
    assert_eq!(rej.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(rej.to_string(), rej.body_text());
    let err: Error = rej.clone().into();
    assert_eq!(err.kind(), ErrorKind::Webhook);
    assert_eq!(err.code(), rej.code());
}

fn sig_map(value: &str) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    map.insert(SIGNATURE_HEADER, HeaderValue::from_str(value).unwrap());
    map
}

// ----- property test -----

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_single_byte_change_is_rejected(
        body in proptest::collection::vec(any::<u8>(), 1..256),
        body_pos in any::<prop::sample::Index>(),
        body_xor in 1u8..=255,
        header_pos in any::<prop::sample::Index>(),
        header_byte in 0x20u8..0x7f,
    ) {
        let s = secret("whsec_prop");
        let header = sign(&body, &s, T);
        prop_assert!(verify_with_signature_only(&body, &header, &s));

        let mut tampered = body.clone();
        tampered[body_pos.index(body.len())] ^= body_xor;
        prop_assert!(!verify_with_signature_only(&tampered, &header, &s));

        let mut h = header.clone().into_bytes();
        let i = header_pos.index(h.len());
        let old = h[i];
        prop_assume!(old != header_byte);
        // A hex digit changing case is the same signature (either case is accepted).
        let in_v1 = i >= header.len() - 64;
        prop_assume!(!(in_v1 && old.eq_ignore_ascii_case(&header_byte)));
        h[i] = header_byte;
        let h = String::from_utf8(h).unwrap();
        prop_assert!(!verify_with_signature_only(&body, &h, &s), "{} accepted", h);
    }
}

/// Whether the signature checks out (the payload itself is random bytes).
fn verify_with_signature_only(body: &[u8], header: &str, s: &WebhookSecret) -> bool {
    match verify(body, header, s, &at(T)) {
        Ok(_) => true,
        Err(e) => e.code() == PAYLOAD,
    }
}

// ----- the layer -----

type Seen = Arc<std::sync::Mutex<Option<(Bytes, Option<WebhookEvent>)>>>;

/// A tower service recording what it was handed and echoing the body.
fn recorder(
    seen: Seen,
) -> impl Service<
    Request<Full<Bytes>>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Send,
> + Clone
       + Send {
    tower::service_fn(move |req: Request<Full<Bytes>>| {
        let seen = seen.clone();
        async move {
            let event = req.extensions().get::<WebhookEvent>().cloned();
            let bytes = req.into_body().collect().await?.to_bytes();
            *seen.lock().unwrap() = Some((bytes.clone(), event));
            Ok::<_, Infallible>(Response::new(Full::new(bytes)))
        }
    })
}

fn signed_request<B>(body: B, raw: &[u8], s: &WebhookSecret, t: u64) -> Request<B> {
    Request::post("/webhooks/rstream")
        .header(SIGNATURE_HEADER, sign(raw, s, t))
        .body(body)
        .unwrap()
}

async fn text(res: Response<impl Body<Data = Bytes, Error = impl std::fmt::Debug>>) -> String {
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[tokio::test]
async fn layer_hands_over_identical_bytes_and_the_event() {
    let s = generate_signing_secret();
    let seen = Seen::default();
    let svc = ServiceBuilder::new()
        .layer(WebhookLayer::new(s.clone()))
        .service(recorder(seen.clone()));
    // Odd spacing, key order and escapes must survive byte for byte.
    let raw = "{ \"type\" :\"client.deleted\",\n\t\"object\":{\"n\":\"caf\\u00e9 ☕\"},\"id\":\" evt_9 \" }  ";
    let res = svc
        .oneshot(signed_request(
            Full::new(Bytes::from(raw)),
            raw.as_bytes(),
            &s,
            unix_now(),
        ))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(text(res).await, raw);
    let (bytes, event) = seen.lock().unwrap().take().unwrap();
    assert_eq!(bytes, raw.as_bytes());
    let event = event.unwrap();
    assert_eq!(event.id(), "evt_9");
    assert_eq!(event.event_type(), WebhookEventType::ClientDeleted);
}

#[tokio::test]
async fn layer_rejection_statuses() {
    let s = secret("whsec_layer_statuses_secret");
    let now = unix_now();
    let v1 = v1_of(&sign(BODY, &s, now)).to_owned();
    let bad_payload = r#"{"id":"e","type":"nope","object":{}}"#;
    let cases: Vec<(Option<String>, &str, StatusCode, RejectionKind)> = vec![
        (
            None,
            BODY,
            StatusCode::BAD_REQUEST,
            RejectionKind::MissingSignature,
        ),
        (
            Some(String::new()),
            BODY,
            StatusCode::BAD_REQUEST,
            RejectionKind::MissingSignature,
        ),
        (
            Some(format!("v1={v1}")),
            BODY,
            StatusCode::BAD_REQUEST,
            RejectionKind::MalformedSignature,
        ),
        (
            Some(format!("t=abc,v1={v1}")),
            BODY,
            StatusCode::BAD_REQUEST,
            RejectionKind::MalformedSignature,
        ),
        (
            Some(sign(BODY, &s, now - 301)),
            BODY,
            StatusCode::UNAUTHORIZED,
            RejectionKind::TimestampOutOfTolerance,
        ),
        (
            Some(sign(BODY, &s, now + 400)),
            BODY,
            StatusCode::UNAUTHORIZED,
            RejectionKind::TimestampOutOfTolerance,
        ),
        (
            Some(sign(BODY, &secret("whsec_other"), now)),
            BODY,
            StatusCode::UNAUTHORIZED,
            RejectionKind::SignatureMismatch,
        ),
        (
            Some(format!("t={now},v1={}", "0".repeat(64))),
            BODY,
            StatusCode::UNAUTHORIZED,
            RejectionKind::SignatureMismatch,
        ),
        (
            Some(sign(bad_payload, &s, now)),
            bad_payload,
            StatusCode::BAD_REQUEST,
            RejectionKind::InvalidPayload,
        ),
        (
            Some(sign("\u{0}\u{ff}", &s, now)),
            "\u{0}\u{ff}",
            StatusCode::BAD_REQUEST,
            RejectionKind::InvalidPayload,
        ),
    ];
    for (header, body, status, kind) in cases {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let svc = ServiceBuilder::new()
            .layer(WebhookLayer::new(s.clone()))
            .service_fn(move |_req: Request<Full<Bytes>>| {
                counter.fetch_add(1, Ordering::SeqCst);
                async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::new()))) }
            });
        let mut builder = Request::post("/");
        if let Some(h) = &header {
            builder = builder.header(SIGNATURE_HEADER, h.as_str());
        }
        let req = builder
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap();
        // The layer decides exactly like `verify_request`.
        let expected = verify_request(
            req.headers(),
            body.as_bytes(),
            std::slice::from_ref(&s),
            &VerifyOptions::new(),
        )
        .unwrap_err();
        assert_eq!(expected.kind(), kind, "{header:?}");
        let res = svc.oneshot(req).await.unwrap();
        assert_eq!(res.status(), status, "{header:?}");
        assert_eq!(
            res.headers()[http::header::CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );
        let body_text = text(res).await;
        assert_eq!(body_text, expected.body_text());
        assert!(!body_text.contains("layer_statuses"));
        assert_eq!(
            calls.load(Ordering::SeqCst),
            0,
            "inner called for {header:?}"
        );
    }
}

/// A rejection of the given kind, produced through the public API.
fn rejection_of(kind: RejectionKind) -> WebhookRejection {
    let s = secret("whsec_kind");
    let r = match kind {
        RejectionKind::MissingSignature => {
            verify_request(&http::HeaderMap::new(), b"", &[s], &at(T))
        }
        RejectionKind::MalformedSignature => verify_request(&sig_map("t=1"), b"", &[s], &at(T)),
        RejectionKind::TimestampOutOfTolerance => {
            verify_request(&sig_map(&sign(BODY, &s, 0)), b"", &[s], &at(T))
        }
        RejectionKind::SignatureMismatch => {
            verify_request(&sig_map(&sign("x", &s, T)), b"", &[s], &at(T))
        }
        _ => verify_request(&sig_map(&sign("x", &s, T)), b"x", &[s], &at(T)),
    };
    r.unwrap_err()
}

/// A body that streams `chunk`-sized frames, up to `total` bytes (or
/// forever), counting what it produced, and can lie about its size.
struct Streaming {
    chunk: Bytes,
    left: Option<usize>,
    produced: Arc<AtomicUsize>,
    polled: Arc<AtomicBool>,
}

impl Streaming {
    fn new(chunk_len: usize, total: Option<usize>) -> (Self, Arc<AtomicUsize>, Arc<AtomicBool>) {
        let produced = Arc::new(AtomicUsize::new(0));
        let polled = Arc::new(AtomicBool::new(false));
        let body = Streaming {
            chunk: Bytes::from(vec![b'a'; chunk_len]),
            left: total,
            produced: produced.clone(),
            polled: polled.clone(),
        };
        (body, produced, polled)
    }
}

impl Body for Streaming {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.polled.store(true, Ordering::SeqCst);
        let n = match self.left {
            Some(0) => return Poll::Ready(None),
            Some(left) => left.min(self.chunk.len()),
            None => self.chunk.len(),
        };
        if let Some(left) = self.left.as_mut() {
            *left -= n;
        }
        self.produced.fetch_add(n, Ordering::SeqCst);
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default() // unknown: only Limited can stop it
    }
}

fn limited_service(
    s: &WebhookSecret,
    limit: usize,
) -> impl Service<
    Request<Streaming>,
    Response = Response<impl Body<Data = Bytes, Error = Infallible>>,
    Error = Infallible,
> {
    ServiceBuilder::new()
        .layer(WebhookLayer::new(s.clone()).max_body_size(limit))
        .service(recorder(Seen::default()))
}

#[tokio::test]
async fn content_length_over_the_limit_is_413_before_reading() {
    let s = generate_signing_secret();
    let (body, produced, polled) = Streaming::new(1024, None);
    let mut req = signed_request(body, b"", &s, unix_now());
    req.headers_mut()
        .insert(http::header::CONTENT_LENGTH, HeaderValue::from(4097u32));
    let res = limited_service(&s, 4096).oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(!polled.load(Ordering::SeqCst));
    assert_eq!(produced.load(Ordering::SeqCst), 0);
    // Same with the default 1 MiB limit.
    let (body, _, polled) = Streaming::new(1024, None);
    let mut req = signed_request(body, b"", &s, unix_now());
    req.headers_mut().insert(
        http::header::CONTENT_LENGTH,
        HeaderValue::from(1024 * 1024 + 1u32),
    );
    let svc = ServiceBuilder::new()
        .layer(WebhookLayer::new(s.clone()))
        .service(recorder(Seen::default()));
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(!polled.load(Ordering::SeqCst));
}

#[tokio::test]
async fn oversized_body_without_or_with_lying_content_length_is_413_bounded() {
    let s = generate_signing_secret();
    for declared in [None, Some(10u32)] {
        let (body, produced, _) = Streaming::new(1000, None);
        let mut req = signed_request(body, b"", &s, unix_now());
        if let Some(n) = declared {
            req.headers_mut()
                .insert(http::header::CONTENT_LENGTH, HeaderValue::from(n));
        }
        let res = limited_service(&s, 64 * 1024).oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(text(res).await, "webhook payload too large");
        // At most one frame past the limit was ever produced.
        assert!(produced.load(Ordering::SeqCst) <= 64 * 1024 + 1000);
    }
}

#[tokio::test]
async fn body_exactly_at_the_limit_passes() {
    let s = generate_signing_secret();
    let mut raw = br#"{"id":"e","type":"client.created","object":{},"pad":""#.to_vec();
    let limit = 4096;
    let tail = br#""}"#;
    raw.resize(limit - tail.len(), b'x');
    raw.extend_from_slice(tail);
    assert_eq!(raw.len(), limit);
    let seen = Seen::default();
    let layer = WebhookLayer::new(s.clone()).max_body_size(limit);
    let svc = ServiceBuilder::new()
        .layer(layer.clone())
        .service(recorder(seen.clone()));
    let req = signed_request(Full::new(Bytes::from(raw.clone())), &raw, &s, unix_now());
    assert_eq!(svc.oneshot(req).await.unwrap().status(), StatusCode::OK);
    assert_eq!(seen.lock().unwrap().take().unwrap().0, raw);
    // One byte more: 413 (from the body's exact size hint, before reading).
    let svc = ServiceBuilder::new()
        .layer(layer.max_body_size(limit - 1))
        .service(recorder(seen));
    let req = signed_request(Full::new(Bytes::from(raw.clone())), &raw, &s, unix_now());
    assert_eq!(
        svc.oneshot(req).await.unwrap().status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );
}

#[tokio::test]
async fn body_read_errors_are_400() {
    struct Failing;
    impl Body for Failing {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            Poll::Ready(Some(Err(std::io::Error::other("reset"))))
        }
    }
    let s = generate_signing_secret();
    let svc = ServiceBuilder::new()
        .layer(WebhookLayer::new(s.clone()))
        .service(recorder(Seen::default()));
    let res = svc
        .oneshot(signed_request(Failing, BODY.as_bytes(), &s, unix_now()))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn layer_rotation_tolerance_and_custom_rejections() {
    let (new, old) = (generate_signing_secret(), generate_signing_secret());
    fn teapot(r: WebhookRejection) -> Response<Full<Bytes>> {
        let mut res = Response::new(Full::new(Bytes::from(r.code())));
        *res.status_mut() = StatusCode::IM_A_TEAPOT;
        res
    }
    let layer = WebhookLayer::new(new.clone())
        .add_secret(old.clone())
        .tolerance(Duration::from_secs(10))
        .on_rejection(teapot);
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(recorder(Seen::default()));
    let now = unix_now();
    for (s, t, status) in [
        (&new, now, StatusCode::OK),
        (&old, now, StatusCode::OK),
        (&new, now - 60, StatusCode::IM_A_TEAPOT),
        (&generate_signing_secret(), now, StatusCode::IM_A_TEAPOT),
    ] {
        let req = signed_request(Full::new(Bytes::from(BODY)), BODY.as_bytes(), s, t);
        let res = svc.clone().oneshot(req).await.unwrap();
        assert_eq!(res.status(), status);
        if status == StatusCode::IM_A_TEAPOT {
            assert_eq!(text(res).await, SIG);
        }
    }
}

#[test]
fn service_is_clone_and_future_is_send() {
    fn assert_clone_send_sync<T: Clone + Send + Sync>(_: &T) {}
    fn assert_send<T: Send>(_: &T) {}
    let mut svc = ServiceBuilder::new()
        .layer(WebhookLayer::new(generate_signing_secret()))
        .service(recorder(Seen::default()));
    assert_clone_send_sync(&WebhookLayer::new(generate_signing_secret()));
    let fut = svc.call(Request::new(Full::new(Bytes::new())));
    assert_send(&fut);
    assert_send(&svc);
    let _ = svc.clone();
}

#[cfg(feature = "axum")]
mod axum_tests {
    use super::*;
    use axum::body::Body as AxumBody;
    use axum::routing::post;
    use axum::Router;
    use rstream::webhook::VerifiedWebhook;

    async fn handler(VerifiedWebhook(event): VerifiedWebhook, body: Bytes) -> String {
        format!("{} {} {}", event.event_type(), event.id(), body.len())
    }

    async fn optional(event: Option<VerifiedWebhook>) -> &'static str {
        if event.is_some() {
            "some"
        } else {
            "none"
        }
    }

    fn app(s: &WebhookSecret) -> Router {
        Router::new()
            .route("/webhooks/rstream", post(handler))
            .route_layer(WebhookLayer::new(s.clone()))
            .route("/unprotected", post(handler))
            .route("/optional", post(optional))
    }

    fn post_to(uri: &str, s: &WebhookSecret, body: &str, t: u64) -> Request<AxumBody> {
        Request::post(uri)
            .header(SIGNATURE_HEADER, sign(body, s, t))
            .body(AxumBody::from(body.to_owned()))
            .unwrap()
    }

    #[tokio::test]
    async fn route_layer_and_extractor() {
        let s = generate_signing_secret();
        let res = app(&s)
            .oneshot(post_to("/webhooks/rstream", &s, BODY, unix_now()))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(
            text(res).await,
            format!("tunnel.created evt_123 {}", BODY.len())
        );

        let other = generate_signing_secret();
        let res = app(&s)
            .oneshot(post_to("/webhooks/rstream", &other, BODY, unix_now()))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

        // route_layer does not cover unmatched routes: 404 stays 404.
        let res = app(&s)
            .oneshot(post_to("/nowhere", &s, BODY, unix_now()))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND);

        // The extractor without the layer is a server bug: 500.
        let res = app(&s)
            .oneshot(post_to("/unprotected", &s, BODY, unix_now()))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let res = app(&s)
            .oneshot(post_to("/optional", &s, BODY, unix_now()))
            .await
            .unwrap();
        assert_eq!(text(res).await, "none");
    }

    #[tokio::test]
    async fn whole_router_layer() {
        let s = generate_signing_secret();
        let app = Router::new()
            .route("/optional", post(optional))
            .layer(WebhookLayer::new(s.clone()));
        let res = app
            .clone()
            .oneshot(post_to("/optional", &s, BODY, unix_now()))
            .await
            .unwrap();
        assert_eq!(text(res).await, "some");
        let req = Request::post("/optional").body(AxumBody::empty()).unwrap();
        let res = app.oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn rejection_into_response() {
        use axum::response::IntoResponse;
        let rej = rejection_of(RejectionKind::SignatureMismatch);
        let res = rej.clone().into_response();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(text(res).await, rej.body_text());
    }
}
