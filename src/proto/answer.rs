//! Unpacking the engine's answers, written once: `into_result()` on each
//! response message turns "ok or error" into a [`Result`], and
//! [`Message::into_answer`] checks that a frame is the expected response.

use std::time::Duration;

use tokio::io::AsyncRead;

use super::message::Payload;
use super::{
    open_control_channel_rsp, open_tunnel_rsp, stream_rsp, Message, OpenControlChannelRsp,
    OpenTunnelRsp, ProxyRsp, StreamRsp, TunnelProperties,
};
use crate::error::{Error, Result};

impl super::Error {
    /// The crate's [`Error`] for this wire error
    /// ([`Error::engine`]: kind by code class, the code kept as sent).
    pub fn into_error(self) -> Error {
        Error::engine(self.code, self.message.as_deref())
    }
}

impl OpenControlChannelRsp {
    /// The `ok` answer, or the engine's error; an answer with neither is a
    /// protocol error.
    pub fn into_result(self) -> Result<open_control_channel_rsp::Ok> {
        match self.payload {
            Some(open_control_channel_rsp::Payload::Ok(ok)) => Ok(ok),
            Some(open_control_channel_rsp::Payload::Error(e)) => Err(e.into_error()),
            None => Err(Error::protocol(
                "OpenControlChannelRsp with neither ok nor error",
            )),
        }
    }
}

impl OpenTunnelRsp {
    /// The tunnel as created, or the engine's error; an answer with
    /// neither is a protocol error. (Read `request_id` first.)
    pub fn into_result(self) -> Result<TunnelProperties> {
        match self.payload {
            Some(open_tunnel_rsp::Payload::TunnelProperties(p)) => Ok(p),
            Some(open_tunnel_rsp::Payload::Error(e)) => Err(e.into_error()),
            None => Err(Error::protocol(
                "OpenTunnelRsp with neither properties nor error",
            )),
        }
    }
}

impl StreamRsp {
    /// The stream id, or the engine's error; an answer with neither is a
    /// protocol error.
    pub fn into_result(self) -> Result<String> {
        match self.payload {
            Some(stream_rsp::Payload::StreamId(id)) => Ok(id),
            Some(stream_rsp::Payload::Error(e)) => Err(e.into_error()),
            None => Err(Error::protocol(
                "StreamRsp with neither stream id nor error",
            )),
        }
    }
}

impl ProxyRsp {
    /// `Ok` unless the engine sent an error (an absent error is success).
    pub fn into_result(self) -> Result<()> {
        match self.error {
            Some(e) => Err(e.into_error()),
            None => Ok(()),
        }
    }
}

/// A response message that [`Message::into_answer`] extracts from a frame.
pub(crate) trait Answer: Sized {
    /// The message's schema name, for "expected X, got Y".
    const NAME: &'static str;
    /// The message when `payload` is one.
    fn from_payload(payload: Payload) -> Option<Self>;
}

macro_rules! answers {
    ($($ty:ident),*) => {$(
        impl Answer for $ty {
            const NAME: &'static str = stringify!($ty);
            fn from_payload(payload: Payload) -> Option<Self> {
                match payload {
                    Payload::$ty(rsp) => Some(rsp),
                    _ => None,
                }
            }
        }
    )*};
}
answers!(OpenControlChannelRsp, ProxyRsp, StreamRsp);

impl Message {
    /// This frame as the response `T`; anything else (another message, an
    /// empty frame) is a protocol error naming both.
    pub(crate) fn into_answer<T: Answer>(self) -> Result<T> {
        let Some(payload) = self.payload else {
            return Err(Error::protocol(format!(
                "expected {}, got an empty frame",
                T::NAME
            )));
        };
        let got = payload.name();
        T::from_payload(payload)
            .ok_or_else(|| Error::protocol(format!("expected {}, got {got}", T::NAME)))
    }
}

/// Reads the engine's answer to a request: one frame, which must be `T`.
/// `closed` is the error for an engine that closes the connection before
/// answering (each exchange calls that something else).
pub(crate) async fn read_answer<T: Answer, R: AsyncRead + Unpin>(
    r: &mut R,
    closed: impl FnOnce() -> Error,
) -> Result<T> {
    super::read_frame(r)
        .await?
        .ok_or_else(closed)?
        .into_answer::<T>()
}

/// [`read_answer`] within `timeout`; "no T within …" when it passes.
pub(crate) async fn read_answer_within<T: Answer, R: AsyncRead + Unpin>(
    r: &mut R,
    timeout: Duration,
    closed: impl FnOnce() -> Error,
) -> Result<T> {
    tokio::time::timeout(timeout, read_answer(r, closed))
        .await
        .map_err(|_| Error::timeout(format!("no {} within {timeout:?}", T::NAME)))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{code, ErrorKind};
    use crate::proto::{ErrorCode, Heartbeat};

    #[test]
    fn answers_unpack_ok_error_and_neither() {
        let ok = StreamRsp {
            payload: Some(stream_rsp::Payload::StreamId("s1".into())),
        };
        assert_eq!(ok.into_result().unwrap(), "s1");
        let refused = StreamRsp {
            payload: Some(stream_rsp::Payload::Error(super::super::Error {
                code: ErrorCode::Unauthorized as i32,
                message: Some("no".into()),
            })),
        };
        let e = refused.into_result().unwrap_err();
        assert_eq!((e.kind(), e.code()), (ErrorKind::Auth, code::ENGINE));
        let neither = OpenTunnelRsp::default().into_result().unwrap_err();
        assert_eq!(neither.code(), code::PROTOCOL);
        assert!(neither.message().contains("neither"), "{neither}");
        assert!(OpenControlChannelRsp::default().into_result().is_err());
        assert!(ProxyRsp::default().into_result().is_ok());
    }

    #[test]
    fn frames_must_be_the_expected_answer() {
        let rsp = Message::new(Payload::ProxyRsp(ProxyRsp::default()));
        assert!(rsp.into_answer::<ProxyRsp>().is_ok());
        let other = Message::new(Payload::Heartbeat(Heartbeat::default()));
        let e = other.into_answer::<StreamRsp>().unwrap_err();
        assert_eq!(e.code(), code::PROTOCOL);
        assert_eq!(e.message(), "expected StreamRsp, got Heartbeat");
        let empty = Message { payload: None };
        let e = empty.into_answer::<OpenControlChannelRsp>().unwrap_err();
        assert_eq!(
            e.message(),
            "expected OpenControlChannelRsp, got an empty frame"
        );
    }
}
