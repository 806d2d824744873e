//! The crate's one error type.
//!
//! Every fallible operation in `rstream` returns [`Error`]. Match on
//! [`Error::kind`] to decide what to do, and log or compare [`Error::code`],
//! a stable machine-readable string (the same `ERR_RSTREAM_*` codes the other
//! rstream SDKs use), listed in [`code`]. The `Display` text is for humans and may be reworded.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use crate::proto::ErrorCode;

pub mod code;

/// A boxed error source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with [`Error`] as the error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, broadly. New kinds may be added.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Invalid options, environment or configuration file.
    Config,
    /// Credentials were refused or are missing.
    Auth,
    /// The peer broke the wire protocol (malformed, unexpected or oversized frames).
    Protocol,
    /// The engine answered with an error; see [`Error::engine_code`].
    Engine,
    /// An operation did not finish in time.
    Timeout,
    /// The control channel, tunnel or client is closed.
    Closed,
    /// The feature is not supported by this SDK (or by the engine).
    Unsupported,
    /// A transport I/O error (connect, read, write).
    Io,
    /// A TLS setup or handshake error.
    Tls,
    /// Webhook signature or payload verification failed.
    Webhook,
    /// An HTTP-level error (Engine API, control-plane API, HTTP serving).
    Http,
}

/// The crate's error (cheap to clone): a [`kind`](Error::kind), a stable [`code`](Error::code),
/// the engine's error code when the engine sent one, and a human message.
///
/// `Display` prints `"{code}: {message}"`; the message may change between
/// releases, the code does not. Errors never contain tokens or secrets.
#[derive(Clone)]
pub struct Error(Box<Inner>);

#[derive(Clone)]
struct Inner {
    kind: ErrorKind,
    code: &'static str,
    engine_code: Option<i32>,
    message: Cow<'static, str>,
    source: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    /// Creates an error from its parts. Prefer the named constructors.
    pub fn new(kind: ErrorKind, code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Error(Box::new(Inner {
            kind,
            code,
            engine_code: None,
            message: message.into(),
            source: None,
        }))
    }

    /// Attaches an underlying cause, returned by `source()`.
    #[must_use]
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.0.source = Some(Arc::from(source.into()));
        self
    }

    /// The broad category of this error.
    pub fn kind(&self) -> ErrorKind {
        self.0.kind
    }

    /// A stable machine-readable code, one of the [`code`] constants
    /// (e.g. [`code::OPERATION_TIMEOUT`], `"ERR_RSTREAM_OPERATION_TIMEOUT"`).
    pub fn code(&self) -> &'static str {
        self.0.code
    }

    /// The raw engine `ErrorCode` when the engine reported this error.
    /// Unknown values are preserved as sent.
    pub fn engine_code(&self) -> Option<i32> {
        self.0.engine_code
    }

    /// The human-readable message (without the code).
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// Whether a later retry of the same operation may succeed: timeouts,
    /// I/O errors, and the engine's "unavailable" and "capacity" classes.
    /// Authentication, validation and protocol errors are permanent.
    pub fn is_transient(&self) -> bool {
        matches!(self.0.kind, ErrorKind::Timeout | ErrorKind::Io)
            || matches!(self.0.engine_code, Some(6000..=7999) | Some(9000..=9999))
    }

    // ----- constructors used across the crate -----

    /// An error the engine sent (`Error{code, message}` on the wire).
    pub fn engine(code: i32, message: Option<&str>) -> Self {
        let kind = match code {
            1000..=1999 => ErrorKind::Auth,
            5000..=5999 => ErrorKind::Unsupported,
            _ => ErrorKind::Engine,
        };
        let name = ErrorCode::try_from(code)
            .map(|c| c.as_str_name().trim_start_matches("ERROR_CODE_"))
            .unwrap_or("UNKNOWN");
        let text = match message.map(str::trim).filter(|m| !m.is_empty()) {
            Some(m) => format!("engine error {name} ({code}): {m}"),
            None => format!("engine error {name} ({code}): Engine error."),
        };
        let mut e = Error::new(kind, code::ENGINE, text);
        e.0.engine_code = Some(code);
        e
    }

    /// The peer broke the protocol.
    pub fn protocol(message: impl Into<Cow<'static, str>>) -> Self {
        Error::new(ErrorKind::Protocol, code::PROTOCOL, message)
    }

    /// A frame larger than the 65,535-byte cap.
    pub fn frame_too_large(len: usize) -> Self {
        Error::new(
            ErrorKind::Protocol,
            code::FRAME_TOO_LARGE,
            format!("frame of {len} bytes exceeds the 65535-byte limit"),
        )
    }

    /// An operation timed out.
    pub fn timeout(what: impl Into<Cow<'static, str>>) -> Self {
        Error::new(ErrorKind::Timeout, code::OPERATION_TIMEOUT, what)
    }

    /// Invalid configuration or options.
    pub fn config(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Error::new(ErrorKind::Config, code, message)
    }

    /// An unsupported feature.
    pub fn unsupported(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Error::new(ErrorKind::Unsupported, code, message)
    }

    /// The control channel is closed.
    pub fn control_closed(message: impl Into<Cow<'static, str>>) -> Self {
        Error::new(ErrorKind::Closed, code::CONTROL_CLOSED, message)
    }

    /// The tunnel is closed.
    pub fn tunnel_closed(message: impl Into<Cow<'static, str>>) -> Self {
        Error::new(ErrorKind::Closed, code::TUNNEL_CLOSED, message)
    }

    /// A transport I/O error: the message is `context` alone and `err` is
    /// the [`source`](std::error::Error::source), so a report that walks the
    /// chain (anyhow, `tracing` with `&dyn Error`) prints the cause once.
    pub fn io(context: impl Into<Cow<'static, str>>, err: std::io::Error) -> Self {
        Error::new(ErrorKind::Io, code::IO, context).with_source(err)
    }

    /// A TLS error: the message is `context` alone and `err` is the
    /// [`source`](std::error::Error::source) (see [`Error::io`]).
    pub fn tls(context: impl Into<Cow<'static, str>>, err: impl Into<BoxError>) -> Self {
        Error::new(ErrorKind::Tls, code::TLS, context).with_source(err)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.0.kind).field("code", &self.0.code);
        if let Some(c) = self.0.engine_code {
            d.field("engine_code", &c);
        }
        d.field("message", &self.0.message);
        if let Some(s) = &self.0.source {
            d.field("source", s);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.0.code, self.0.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0
            .source
            .as_ref()
            .map(|s| &**s as &(dyn std::error::Error + 'static))
    }
}

/// Displays an error followed by its `source()` chain, `": "`-separated, for
/// logs and reports that would otherwise show the outer message alone. A
/// source whose text the chain already shows (errors from other crates
/// often repeat their cause) is left out.
pub(crate) struct Chain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = self.0.to_string();
        let mut next = self.0.source();
        while let Some(s) = next {
            let s_text = s.to_string();
            if !text.contains(&s_text) {
                text.push_str(": ");
                text.push_str(&s_text);
            }
            next = s.source();
        }
        f.write_str(&text)
    }
}

impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Self {
        Error::io("I/O error", err)
    }
}

impl From<Error> for std::io::Error {
    fn from(err: Error) -> Self {
        let kind = match err.kind() {
            ErrorKind::Timeout => std::io::ErrorKind::TimedOut,
            ErrorKind::Closed => std::io::ErrorKind::NotConnected,
            ErrorKind::Auth => std::io::ErrorKind::PermissionDenied,
            ErrorKind::Config | ErrorKind::Unsupported => std::io::ErrorKind::InvalidInput,
            ErrorKind::Protocol => std::io::ErrorKind::InvalidData,
            _ => std::io::ErrorKind::Other,
        };
        std::io::Error::new(kind, err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_errors_keep_code_and_message() {
        let e = Error::engine(3000, Some("no such tunnel"));
        assert_eq!(e.kind(), ErrorKind::Engine);
        assert_eq!(e.engine_code(), Some(3000));
        assert!(e.to_string().contains("TUNNEL_NOT_FOUND"));
        assert!(e.to_string().contains("no such tunnel"));
        let unknown = Error::engine(4242, None);
        assert_eq!(unknown.engine_code(), Some(4242));
        assert!(unknown.to_string().contains("Engine error."));
        assert_eq!(Error::engine(1000, None).kind(), ErrorKind::Auth);
    }

    /// What anyhow's `{:#}` prints: each error of the chain, joined by ": ".
    fn chain(e: &(dyn std::error::Error + 'static)) -> String {
        Chain(e).to_string()
    }

    #[test]
    fn io_and_tls_errors_do_not_repeat_their_source() {
        let io = Error::io(
            "connecting to the engine",
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused-xyz"),
        );
        assert_eq!(io.code(), code::IO);
        assert_eq!(io.message(), "connecting to the engine");
        let source = std::error::Error::source(&io).expect("the cause is the source");
        assert_eq!(source.to_string(), "refused-xyz");
        assert_eq!(
            chain(&io).matches("refused-xyz").count(),
            1,
            "{}",
            chain(&io)
        );

        let tls = Error::tls("TLS handshake", "bad-certificate-xyz");
        assert_eq!(tls.kind(), ErrorKind::Tls);
        assert_eq!(tls.message(), "TLS handshake");
        assert_eq!(
            chain(&tls),
            "ERR_RSTREAM_TLS: TLS handshake: bad-certificate-xyz"
        );

        // `From<io::Error>` goes through `Error::io`.
        let from: Error = std::io::Error::other("eof-xyz").into();
        assert_eq!(chain(&from).matches("eof-xyz").count(), 1);
    }

    #[test]
    fn error_is_one_pointer() {
        assert_eq!(std::mem::size_of::<Error>(), std::mem::size_of::<usize>());
    }
}
