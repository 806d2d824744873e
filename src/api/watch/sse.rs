//! The SSE transport of a [`Watch`](super::Watch): `GET /api/sse` and an
//! incremental, bounded `text/event-stream` parser.

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::Method;
use http_body_util::BodyExt;
use tokio::sync::mpsc;

use super::{closed, deliver, silent, End};
use crate::api::filters::{self, WatchParams};
use crate::api::http::{headers, ApiError};
use crate::api::models::Event;
use crate::api::{EngineApi, ErrorKind};
use crate::config::Secret;
use crate::error::{code, Error, Result};

pub(super) async fn sse(
    api: &EngineApi,
    params: &WatchParams,
    read_deadline: Duration,
    tx: &mpsc::Sender<Result<Event>>,
) -> End {
    let mut synced = false;
    let fail = |error: Error, synced: bool| End::Failed { error, synced };
    let opened = async {
        let target = api.target().await?;
        let http = api.http()?;
        let headers = headers(
            "text/event-stream",
            target.token.as_ref().map(Secret::expose),
        )?;
        let url = format!(
            "https://{}/api/sse{}",
            target.authority,
            filters::query(params)
        );
        let budget = api.options().timeout;
        let response = tokio::time::timeout(budget, http.get(&url, "/api/sse", &headers))
            .await
            .map_err(|_| {
                Error::new(
                    ErrorKind::Timeout,
                    code::ENGINE_API_TIMEOUT,
                    format!("engine API GET /api/sse: no answer within {budget:?}"),
                )
            })??;
        if !response.status().is_success() {
            let status = response.status();
            let body = tokio::time::timeout(
                budget,
                crate::api::http::read_body(response.into_body(), 64 * 1024, "/api/sse"),
            )
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
            return Err(ApiError::new(Method::GET, "/api/sse", status, &body).into_error());
        }
        Ok(response.into_body())
    };
    let mut body = tokio::select! {
        r = opened => match r {
            Ok(body) => body,
            Err(e) => return fail(e, false),
        },
        () = tx.closed() => return End::Consumer,
    };
    let mut parser = SseParser::new(api.options().max_body);
    loop {
        // Any frame (events and keep-alive comments alike) proves the
        // connection alive; silence past the deadline is a half-open one.
        let frame = tokio::select! {
            f = tokio::time::timeout(read_deadline, body.frame()) => match f {
                Ok(f) => f,
                Err(_) => return fail(silent("SSE", read_deadline), synced),
            },
            () = tx.closed() => return End::Consumer,
        };
        match frame {
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                if let Err(e) = parser.push(&data) {
                    return fail(e, synced);
                }
                while let Some(payload) = parser.next_event() {
                    let event = match payload.and_then(|p| Event::from_json(&p)) {
                        Ok(e) => e,
                        Err(e) => return fail(e, synced),
                    };
                    if !deliver(tx, event, &mut synced).await {
                        return End::Consumer;
                    }
                }
            }
            Some(Err(e)) => {
                let error = Error::new(
                    ErrorKind::Io,
                    code::WATCH_CLOSED,
                    format!("the SSE watch broke: {e}{}", parser.reason()),
                );
                return fail(error, synced);
            }
            None => {
                let error = closed(format!("the engine ended the SSE watch{}", parser.reason()));
                return fail(error, synced);
            }
        }
    }
}

/// Incremental SSE parser: `data:` lines joined with `\n`, dispatched at a
/// blank line; `event:`, `id:`, `retry:` and other fields are ignored;
/// `:` comments are skipped (the last `: rstream: …` one is kept as the
/// reason a watch ended). Lines end with `\n`, `\r\n` or `\r`.
pub(crate) struct SseParser {
    buf: BytesMut,
    data: Option<String>,
    max: usize,
    last_reason: Option<String>,
    ready: std::collections::VecDeque<Result<String>>,
    skip_lf: bool,
}

impl SseParser {
    pub(crate) fn new(max: usize) -> Self {
        SseParser {
            buf: BytesMut::new(),
            data: None,
            max,
            last_reason: None,
            ready: std::collections::VecDeque::new(),
            skip_lf: false,
        }
    }

    /// Feeds bytes; fails when one event grows past the limit.
    pub(crate) fn push(&mut self, bytes: &Bytes) -> Result<()> {
        self.buf.extend_from_slice(bytes);
        loop {
            if self.skip_lf && !self.buf.is_empty() {
                if self.buf[0] == b'\n' {
                    self.buf.advance(1);
                }
                self.skip_lf = false;
            }
            let Some(end) = self.buf.iter().position(|b| *b == b'\n' || *b == b'\r') else {
                break;
            };
            let line = self.buf.split_to(end);
            let terminator = self.buf[0];
            self.buf.advance(1);
            if terminator == b'\r' {
                self.skip_lf = true;
            }
            let line = String::from_utf8_lossy(&line).into_owned();
            self.line(&line);
        }
        let pending = self.buf.len() + self.data.as_ref().map_or(0, String::len);
        if pending > self.max {
            return Err(Error::new(
                ErrorKind::Protocol,
                code::EVENT_TOO_LARGE,
                format!("an SSE event is larger than {} bytes", self.max),
            ));
        }
        Ok(())
    }

    fn line(&mut self, line: &str) {
        if line.is_empty() {
            if let Some(data) = self.data.take() {
                if !data.trim().is_empty() {
                    self.ready.push_back(Ok(data));
                }
            }
            return;
        }
        if let Some(comment) = line.strip_prefix(':') {
            if let Some(reason) = comment.trim_start().strip_prefix("rstream:") {
                self.last_reason = Some(reason.trim().to_owned());
            }
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        if field == "data" {
            match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            }
        }
    }

    /// The next complete event's data.
    pub(crate) fn next_event(&mut self) -> Option<Result<String>> {
        self.ready.pop_front()
    }

    /// `" (engine: <reason>)"` when the engine said why it ended the watch.
    fn reason(&self) -> String {
        self.last_reason
            .as_ref()
            .map(|r| format!(" (engine: {r})"))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(chunks: &[&str]) -> Vec<String> {
        let mut p = SseParser::new(1 << 20);
        let mut out = Vec::new();
        for c in chunks {
            p.push(&Bytes::copy_from_slice(c.as_bytes())).unwrap();
            while let Some(e) = p.next_event() {
                out.push(e.unwrap());
            }
        }
        out
    }

    #[test]
    fn sse_framing() {
        assert_eq!(events(&["data: {\"a\":1}\n\n"]), vec!["{\"a\":1}"]);
        assert_eq!(
            events(&[
                "da",
                "ta: 1\r",
                "\ndata:2\r\n",
                "\r\n: keepalive\n\nevent: x\nid: 3\ndata: 3\n\n"
            ]),
            vec!["1\n2", "3"]
        );
        assert_eq!(events(&["data: x\r\rdata: y\n\n"]), vec!["x", "y"]);
        let mut p = SseParser::new(10);
        assert!(p.push(&Bytes::from_static(b"data: 0123456789abc")).is_err());
        let mut p = SseParser::new(100);
        p.push(&Bytes::from_static(b": rstream: fell behind\n\n"))
            .unwrap();
        assert_eq!(p.reason(), " (engine: fell behind)");
    }
}
