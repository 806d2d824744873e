//! The examples' self-checks: a tiny HTTPS client that proves a published
//! address answers. An app does not need this (a browser or curl plays this
//! part); everything an app does is in the example itself.
#![allow(dead_code)]

use std::error::Error;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rstream::TlsOptions;
use tokio::net::TcpStream;

pub type BoxError = Box<dyn Error + Send + Sync>;

/// A TLS connection to the published address `url` (`https://host[:port]…`),
/// trusting `tls`, offering `alpn`.
pub async fn tls_connect(
    tls: &TlsOptions,
    url: &str,
    alpn: &[&[u8]],
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, BoxError> {
    let uri: http::Uri = url.parse()?;
    let host = uri.host().ok_or("URL has no host")?.to_owned();
    let tcp = TcpStream::connect((host.as_str(), uri.port_u16().unwrap_or(443))).await?;
    let name = rustls::pki_types::ServerName::try_from(host)?;
    Ok(tokio_rustls::TlsConnector::from(tls.client_config(alpn)?)
        .connect(name, tcp)
        .await?)
}

/// GET `url` (an `https://host[:port]/path` address) with hyper over rustls.
pub async fn https_get(
    tls: &TlsOptions,
    url: &str,
) -> Result<(http::StatusCode, String), BoxError> {
    let response = https_get_with(tls, url, &[]).await?;
    let body = String::from_utf8_lossy(response.body()).into_owned();
    Ok((response.status(), body))
}

/// GET `url` with extra request `headers`; the whole response, body
/// collected as it came (not decoded).
pub async fn https_get_with(
    tls: &TlsOptions,
    url: &str,
    headers: &[(&str, &str)],
) -> Result<http::Response<Bytes>, BoxError> {
    let uri: http::Uri = url.parse()?;
    let host = uri.host().ok_or("URL has no host")?.to_owned();
    let stream = tls_connect(tls, url, &[b"http/1.1"]).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut request = http::Request::get(path).header(
        http::header::HOST,
        uri.authority().map_or(host.clone(), |a| a.to_string()),
    );
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = sender
        .send_request(request.body(Empty::<Bytes>::new())?)
        .await?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(http::Response::from_parts(parts, body))
}
