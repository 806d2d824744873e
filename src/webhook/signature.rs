//! Signing, header parsing and verification.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName, HeaderValue};
use sha2::Sha256;
use subtle::{Choice, ConstantTimeEq};

use super::event::WebhookEvent;
use super::rejection::WebhookRejection;
use super::secret::WebhookSecret;
use crate::error::{code, Error, ErrorKind};

/// `rstream-signature`: `t=<unix seconds>,v1=<hex>[,v1=<hex>…]`.
pub const SIGNATURE_HEADER: &str = "rstream-signature";
/// `rstream-event-id`: the event's id.
pub const EVENT_ID_HEADER: &str = "rstream-event-id";
/// `rstream-event-type`: the event's type, e.g. `tunnel.created`.
pub const EVENT_TYPE_HEADER: &str = "rstream-event-type";
/// `rstream-webhook-id`: the webhook (endpoint configuration) id.
pub const WEBHOOK_ID_HEADER: &str = "rstream-webhook-id";
/// `rstream-delivery-id`: the id of this delivery attempt.
pub const DELIVERY_ID_HEADER: &str = "rstream-delivery-id";

/// The default tolerance between the signed timestamp and now: 300 seconds,
/// in either direction.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

type HmacSha256 = Hmac<Sha256>;

/// HMAC-SHA256 over `"<t>." + payload`, keyed with the secret's UTF-8 bytes.
fn mac(secret: &WebhookSecret, timestamp: u64, payload: &[u8]) -> [u8; 32] {
    // invariant: HMAC accepts keys of any length, so `new_from_slice` cannot fail.
    let mut mac = HmacSha256::new_from_slice(secret.key()).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    mac.finalize().into_bytes().into()
}

/// Signs `payload` and returns the `rstream-signature` header value,
/// `t=<timestamp>,v1=<lowercase hex>`.
///
/// `timestamp` is in Unix seconds; senders pass the current time.
///
/// ```
/// use rstream::webhook::{sign, WebhookSecret};
///
/// let secret = WebhookSecret::new("whsec_example")?;
/// let header = sign(br#"{"id":"evt_1"}"#, &secret, 1_700_000_000);
/// assert!(header.starts_with("t=1700000000,v1="));
/// assert_eq!(header.len(), "t=1700000000,v1=".len() + 64);
/// # Ok::<(), rstream::Error>(())
/// ```
pub fn sign(payload: impl AsRef<[u8]>, secret: &WebhookSecret, timestamp: u64) -> String {
    SignatureHeader::sign(payload, secret, timestamp).to_string()
}

/// A parsed (or freshly signed) `rstream-signature` header value.
///
/// Parsing splits on `,` and trims each item; `t=` must be ASCII digits (a
/// later `t=` wins), every `v1=` value is kept, other items (such as `v0=`)
/// are ignored, and a header without `t` or without `v1` is malformed.
///
/// Senders rotating secrets sign with each of them, so that receivers which
/// know either one accept the delivery:
///
/// ```
/// use rstream::webhook::{SignatureHeader, WebhookSecret};
///
/// let (new, old) = (WebhookSecret::generate(), WebhookSecret::generate());
/// let payload = br#"{"id":"evt_1"}"#;
/// let header = SignatureHeader::sign(payload, &new, 1_700_000_000).and_sign(payload, &old);
/// assert_eq!(header.signatures().len(), 2);
///
/// let parsed: SignatureHeader = header.to_string().parse()?;
/// assert_eq!(parsed, header);
/// assert_eq!(parsed.timestamp(), 1_700_000_000);
/// # Ok::<(), rstream::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureHeader {
    timestamp: u64,
    signatures: Vec<String>,
}

impl SignatureHeader {
    /// Signs `payload` with `secret` at `timestamp` (Unix seconds).
    pub fn sign(payload: impl AsRef<[u8]>, secret: &WebhookSecret, timestamp: u64) -> Self {
        SignatureHeader {
            timestamp,
            signatures: vec![hex::encode(mac(secret, timestamp, payload.as_ref()))],
        }
    }

    /// Adds a `v1` signature of the same `payload` made with another secret
    /// (secret rotation on the sending side).
    pub fn and_sign(mut self, payload: impl AsRef<[u8]>, secret: &WebhookSecret) -> Self {
        let sig = mac(secret, self.timestamp, payload.as_ref());
        self.signatures.push(hex::encode(sig));
        self
    }

    /// Parses a header value.
    ///
    /// # Errors
    ///
    /// `ERR_RSTREAM_WEBHOOK_SIGNATURE` when the header is empty or malformed,
    /// or its timestamp does not fit in a `u64`.
    pub fn parse(header: &str) -> Result<Self, Error> {
        let parsed = parse_header(header)?;
        let timestamp = parsed.timestamp.ok_or_else(WebhookRejection::stale)?;
        Ok(SignatureHeader {
            timestamp,
            signatures: parsed.signatures.into_iter().map(str::to_owned).collect(),
        })
    }

    /// The signed timestamp, in Unix seconds.
    pub fn timestamp(&self) -> u64 {
        self.timestamp
    }

    /// The `v1` signatures, as sent (not necessarily valid hex).
    pub fn signatures(&self) -> &[String] {
        &self.signatures
    }
}

impl fmt::Display for SignatureHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t={}", self.timestamp)?;
        for sig in &self.signatures {
            write!(f, ",v1={sig}")?;
        }
        Ok(())
    }
}

impl FromStr for SignatureHeader {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        SignatureHeader::parse(s)
    }
}

struct ParsedHeader<'a> {
    /// `None` when the digits do not fit in a `u64`: such a timestamp is
    /// well-formed but can never be within tolerance.
    timestamp: Option<u64>,
    signatures: Vec<&'a str>,
}

/// Trims like the other SDKs do (Unicode whitespace plus the ASCII
/// information separators U+001C..U+001F).
fn trim_item(item: &str) -> &str {
    item.trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
}

fn parse_header(header: &str) -> Result<ParsedHeader<'_>, WebhookRejection> {
    if header.is_empty() {
        return Err(WebhookRejection::missing());
    }
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for item in header.split(',').map(trim_item) {
        if let Some(t) = item.strip_prefix("t=") {
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(WebhookRejection::malformed(
                    "invalid rstream-signature timestamp",
                ));
            }
            // All digits: the only possible failure is overflow.
            timestamp = Some(t.parse::<u64>().ok());
        } else if let Some(sig) = item.strip_prefix("v1=") {
            signatures.push(sig);
        }
    }
    match timestamp {
        Some(timestamp) if !signatures.is_empty() => Ok(ParsedHeader {
            timestamp,
            signatures,
        }),
        _ => Err(WebhookRejection::malformed(
            "malformed rstream-signature header",
        )),
    }
}

/// Whether a candidate `v1` value matches the expected MAC. Wrong length or
/// non-hex is simply "no match"; the bytes are compared in constant time.
fn candidate_matches(candidate: &str, expected: &[u8; 32]) -> Choice {
    let mut decoded = [0u8; 32];
    if candidate.len() != 64 || hex::decode_to_slice(candidate, &mut decoded).is_err() {
        return Choice::from(0);
    }
    decoded.ct_eq(expected)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Options for [`verify`]: the timestamp tolerance and, for tests, the
/// current time.
///
/// ```
/// use std::time::Duration;
/// use rstream::webhook::VerifyOptions;
///
/// let opts = VerifyOptions::new().tolerance(Duration::from_secs(60)).now(1_700_000_000);
/// # let _ = opts;
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "a builder does nothing unless its result is used"]
pub struct VerifyOptions {
    tolerance: Duration,
    now: Option<u64>,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            tolerance: DEFAULT_TOLERANCE,
            now: None,
        }
    }
}

impl VerifyOptions {
    /// The defaults: a tolerance of 300 s and the system clock.
    pub fn new() -> Self {
        Self::default()
    }

    /// How far the signed timestamp may be from now, in either direction.
    /// A delivery exactly `tolerance` away passes; one second more fails.
    pub fn tolerance(mut self, tolerance: Duration) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// Uses `unix_seconds` as "now" instead of the system clock (tests,
    /// replays of recorded deliveries).
    pub fn now(mut self, unix_seconds: u64) -> Self {
        self.now = Some(unix_seconds);
        self
    }

    fn now_secs(&self) -> u64 {
        self.now.unwrap_or_else(unix_now)
    }
}

/// Parses the header and checks the timestamp: everything that can be
/// rejected before the body is read.
pub(crate) fn precheck(header: &str, options: &VerifyOptions) -> Result<(), WebhookRejection> {
    let parsed = parse_header(header)?;
    check_timestamp(parsed.timestamp, options).map(|_| ())
}

fn check_timestamp(
    timestamp: Option<u64>,
    options: &VerifyOptions,
) -> Result<u64, WebhookRejection> {
    let timestamp = timestamp.ok_or_else(WebhookRejection::stale)?;
    let skew = Duration::from_secs(options.now_secs().abs_diff(timestamp));
    if skew > options.tolerance {
        return Err(WebhookRejection::stale());
    }
    Ok(timestamp)
}

/// The whole check: header, timestamp, signature against every secret, then
/// the payload.
pub(crate) fn verify_inner(
    payload: &[u8],
    header: &str,
    secrets: &[WebhookSecret],
    options: &VerifyOptions,
) -> Result<WebhookEvent, WebhookRejection> {
    let parsed = parse_header(header)?;
    let timestamp = check_timestamp(parsed.timestamp, options)?;
    let mut matched = Choice::from(0);
    for secret in secrets {
        let expected = mac(secret, timestamp, payload);
        for candidate in &parsed.signatures {
            matched |= candidate_matches(candidate, &expected);
        }
    }
    if !bool::from(matched) {
        return Err(WebhookRejection::mismatch());
    }
    WebhookEvent::parse(payload)
}

/// Verifies a delivery and returns its event.
///
/// `header` is the `rstream-signature` value (if a request carries several,
/// pass the first). The timestamp is checked first, then the signature, and
/// only then is the payload parsed.
///
/// # Errors
///
/// Kind [`ErrorKind::Webhook`] with code `ERR_RSTREAM_WEBHOOK_SIGNATURE`
/// (empty or malformed header, timestamp outside tolerance, no matching
/// signature) or `ERR_RSTREAM_WEBHOOK_PAYLOAD` (the signature is fine but
/// the body is not a valid event).
///
/// ```
/// use rstream::webhook::{sign, verify, VerifyOptions, WebhookEventType, WebhookSecret};
///
/// let secret = WebhookSecret::generate();
/// let body = br#"{"id":"evt_1","type":"client.created","object":{"id":"c1"}}"#;
/// let header = sign(body, &secret, 1_700_000_000);
///
/// let opts = VerifyOptions::new().now(1_700_000_100);
/// let event = verify(body, &header, &secret, &opts)?;
/// assert_eq!(event.event_type(), WebhookEventType::ClientCreated);
///
/// let tampered = br#"{"id":"evt_2","type":"client.created","object":{"id":"c1"}}"#;
/// let err = verify(tampered, &header, &secret, &opts).unwrap_err();
/// assert_eq!(err.code(), rstream::error::code::WEBHOOK_SIGNATURE);
/// # Ok::<(), rstream::Error>(())
/// ```
pub fn verify(
    payload: impl AsRef<[u8]>,
    header: &str,
    secret: &WebhookSecret,
    options: &VerifyOptions,
) -> Result<WebhookEvent, Error> {
    verify_inner(
        payload.as_ref(),
        header,
        std::slice::from_ref(secret),
        options,
    )
    .map_err(Error::from)
}

/// Like [`verify`], accepting a signature made with any of `secrets`
/// (secret rotation on the receiving side: list the new and the old one).
///
/// # Errors
///
/// As [`verify`]; `ERR_RSTREAM_WEBHOOK_SECRET_REQUIRED` when `secrets` is
/// empty.
pub fn verify_with_secrets(
    payload: impl AsRef<[u8]>,
    header: &str,
    secrets: &[WebhookSecret],
    options: &VerifyOptions,
) -> Result<WebhookEvent, Error> {
    if secrets.is_empty() {
        return Err(Error::new(
            ErrorKind::Webhook,
            code::WEBHOOK_SECRET_REQUIRED,
            "at least one webhook signing secret is required",
        ));
    }
    verify_inner(payload.as_ref(), header, secrets, options).map_err(Error::from)
}

/// Verifies a request given as headers and its complete body, and tells
/// *why* it was refused: the same decision [`WebhookLayer`](super::WebhookLayer)
/// makes, for servers that are not built on tower.
///
/// Uses the first `rstream-signature` header. An empty `secrets` slice
/// matches nothing.
///
/// # Errors
///
/// A [`WebhookRejection`] with its HTTP status (400 or 401).
pub fn verify_request(
    headers: &HeaderMap,
    payload: &[u8],
    secrets: &[WebhookSecret],
    options: &VerifyOptions,
) -> Result<WebhookEvent, WebhookRejection> {
    let header = signature_header(headers)?;
    verify_inner(payload, header, secrets, options)
}

pub(crate) fn signature_header(headers: &HeaderMap) -> Result<&str, WebhookRejection> {
    let value = headers
        .get(SIGNATURE_HEADER)
        .ok_or_else(WebhookRejection::missing)?;
    value
        .to_str()
        .map_err(|_| WebhookRejection::malformed("rstream-signature header is not visible ASCII"))
}

/// Builds the five headers of a delivery: `rstream-signature` (signed at
/// `timestamp`, Unix seconds), `rstream-event-id` and `rstream-event-type`
/// (from `event`), `rstream-webhook-id` and `rstream-delivery-id` (trimmed).
///
/// For senders and tests; `event` usually comes from
/// [`WebhookEvent::from_json`] on the same `payload`.
///
/// # Errors
///
/// `ERR_RSTREAM_WEBHOOK_PAYLOAD` when `webhook_id` or `delivery_id` is
/// blank, or an id cannot be a header value.
pub fn build_headers(
    payload: impl AsRef<[u8]>,
    event: &WebhookEvent,
    secret: &WebhookSecret,
    webhook_id: &str,
    delivery_id: &str,
    timestamp: u64,
) -> Result<HeaderMap, Error> {
    fn value(v: &str, blank: &'static str, invalid: &'static str) -> Result<HeaderValue, Error> {
        let v = v.trim();
        if v.is_empty() {
            return Err(WebhookRejection::payload(blank).into());
        }
        HeaderValue::from_str(v).map_err(|_| WebhookRejection::payload(invalid).into())
    }
    let signature = sign(payload, secret, timestamp);
    let mut headers = HeaderMap::with_capacity(5);
    let mut put = |name: &'static str, value: HeaderValue| {
        headers.insert(HeaderName::from_static(name), value);
    };
    put(
        SIGNATURE_HEADER,
        value(&signature, "", "invalid signature")?,
    );
    put(
        EVENT_ID_HEADER,
        value(
            event.id(),
            "webhook event id is required",
            "webhook event id is not a valid header value",
        )?,
    );
    put(
        EVENT_TYPE_HEADER,
        HeaderValue::from_static(event.event_type().as_str()),
    );
    put(
        WEBHOOK_ID_HEADER,
        value(
            webhook_id,
            "webhook id is required",
            "webhook id is not a valid header value",
        )?,
    );
    put(
        DELIVERY_ID_HEADER,
        value(
            delivery_id,
            "webhook delivery id is required",
            "webhook delivery id is not a valid header value",
        )?,
    );
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::RejectionKind;

    fn secret() -> WebhookSecret {
        WebhookSecret::new("whsec_test").unwrap()
    }

    #[test]
    fn parse_rules() {
        let p = parse_header(" v0=zz , t=0012 ,v1=a,t=34, v1=b ").unwrap();
        assert_eq!(p.timestamp, Some(34));
        assert_eq!(p.signatures, ["a", "b"]);
        let p = parse_header("t=99999999999999999999999,v1=").unwrap();
        assert_eq!(p.timestamp, None);
        assert_eq!(p.signatures, [""]);
        for bad in [
            "t=1",
            "v1=aa",
            "t=,v1=a",
            "t=1a,v1=a",
            "t=-1,v1=a",
            "t=+1,v1=a",
            ",",
            "T=1,V1=a",
        ] {
            let err = parse_header(bad).err().unwrap();
            assert_eq!(err.kind(), RejectionKind::MalformedSignature, "{bad}");
        }
        assert_eq!(
            parse_header("").err().unwrap().kind(),
            RejectionKind::MissingSignature
        );
    }

    #[test]
    fn leading_zeros_sign_the_integer() {
        let s = secret();
        let good = sign(b"x", &s, 12);
        let v1 = good.split_once(",v1=").unwrap().1;
        let header = format!("t=0012,v1={v1}");
        let opts = VerifyOptions::new().now(12);
        let err = verify_inner(b"x", &header, std::slice::from_ref(&s), &opts).unwrap_err();
        // Signature matched (the body is not an event), so the MAC used "12.".
        assert_eq!(err.kind(), RejectionKind::InvalidPayload);
    }

    #[test]
    fn overflowing_timestamp_is_stale() {
        let opts = VerifyOptions::new().tolerance(Duration::MAX);
        let err =
            verify_inner(b"x", "t=99999999999999999999,v1=00", &[secret()], &opts).unwrap_err();
        assert_eq!(err.kind(), RejectionKind::TimestampOutOfTolerance);
        assert!(SignatureHeader::parse("t=99999999999999999999,v1=00").is_err());
    }

    #[test]
    fn candidates() {
        let expected = [0xabu8; 32];
        let lower = "ab".repeat(32);
        assert!(bool::from(candidate_matches(&lower, &expected)));
        assert!(bool::from(candidate_matches(
            &lower.to_uppercase(),
            &expected
        )));
        assert!(!bool::from(candidate_matches(&lower[..62], &expected)));
        assert!(!bool::from(candidate_matches(
            &format!("{lower}ab"),
            &expected
        )));
        assert!(!bool::from(candidate_matches(&"zz".repeat(32), &expected)));
        assert!(!bool::from(candidate_matches("", &expected)));
        assert!(!bool::from(candidate_matches(&"é".repeat(32), &expected)));
    }

    #[test]
    fn build_headers_checks_ids() {
        let body = br#"{"id":"evt","type":"tunnel.deleted","object":{}}"#;
        let event = WebhookEvent::from_json(body).unwrap();
        let h = build_headers(body, &event, &secret(), " wh_1 ", "dl_1", 5).unwrap();
        assert_eq!(h[WEBHOOK_ID_HEADER], "wh_1");
        assert_eq!(h[EVENT_TYPE_HEADER], "tunnel.deleted");
        assert_eq!(h[SIGNATURE_HEADER], sign(body, &secret(), 5).as_str());
        let err = build_headers(body, &event, &secret(), "wh", "  ", 5).unwrap_err();
        assert_eq!(err.code(), code::WEBHOOK_PAYLOAD);
        let err = build_headers(body, &event, &secret(), "wh\n1", "d", 5).unwrap_err();
        assert_eq!(err.code(), code::WEBHOOK_PAYLOAD);
    }
}
