//! Bodies of a forwarded request: the downstream request body sent to the
//! application as it arrives ([`upload`]), and the application's response
//! body read as hyper sends it downstream ([`ResponseBody`]). Nothing is
//! buffered beyond one frame: QUIC and HTTP/2 flow control push back.

use bytes::Bytes;
use h3::error::Code;
use http_body::Body;
use http_body_util::BodyExt;
use tokio::sync::oneshot;

use crate::transport::h3_client::ResponseBody;

type SendHalf = h3::client::RequestStream<h3_quinn::SendStream<Bytes>, Bytes>;
type RecvHalf = h3::client::RequestStream<h3_quinn::RecvStream, Bytes>;

/// The running upload of a request body: dropping it (the response ended,
/// failed or timed out) cancels an upload still running, with
/// `H3_REQUEST_CANCELLED`, so the application never takes a cut body for
/// a whole one.
pub(super) struct Upload {
    _cancel: oneshot::Sender<()>,
}

/// Sends `body` (its DATA frames, then its trailers) on `tx` and finishes
/// the stream, in a task of its own. The body is a downstream request's:
/// hyper's (HTTP/1.1, h2) or the HTTP/3 adapter's.
pub(super) fn upload<B>(body: B, mut tx: SendHalf) -> Upload
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
{
    let (cancel, cancelled) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let sent = tokio::select! {
            sent = send(body, &mut tx) => sent,
            // The sender is only ever dropped: that is the cancellation.
            _ = cancelled => Err("cancelled"),
        };
        if let Err(why) = sent {
            tracing::debug!(why, "HTTP/3 upstream request body not sent whole");
            tx.stop_stream(Code::H3_REQUEST_CANCELLED);
        }
    });
    Upload { _cancel: cancel }
}

async fn send<B>(mut body: B, tx: &mut SendHalf) -> Result<(), &'static str>
where
    B: Body<Data = Bytes> + Unpin,
{
    loop {
        // The error is dropped here, before the next await: the body's
        // error type need not be `Send`.
        let frame = match body.frame().await {
            None => break,
            Some(Ok(frame)) => frame,
            Some(Err(_)) => return Err("downstream request body failed"),
        };
        match frame.into_data() {
            Ok(data) => {
                if !data.is_empty() {
                    tx.send_data(data)
                        .await
                        .map_err(|_| "the application stopped reading")?;
                }
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    tx.send_trailers(trailers)
                        .await
                        .map_err(|_| "the application stopped reading")?;
                    // Trailers end the message.
                    break;
                }
            }
        }
    }
    tx.finish()
        .await
        .map_err(|_| "the application stopped reading")
}

/// The application's response body (DATA frames as they come, then its
/// trailers), holding the request's [`Upload`] until the response ends.
pub(super) fn response_body(rx: RecvHalf, upload: Upload) -> ResponseBody {
    ResponseBody::new(rx).holding(upload)
}
