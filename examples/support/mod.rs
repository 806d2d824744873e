//! Helpers shared by the examples: where the engine comes from, and a tiny
//! HTTPS client to prove a published address answers.
#![allow(dead_code)]

use std::error::Error;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rstream::engine::LocalEngine;
use rstream::Client;
use rstream::TlsOptions;
use tokio::net::TcpStream;

pub type BoxError = Box<dyn Error + Send + Sync>;

/// The engine the examples run against: `RSTREAM_ENGINE` (and the rest of
/// the environment) when set, otherwise a local engine started in-process.
pub struct Setup {
    pub client: Client,
    /// Trust for published addresses: the local engine's CA, or
    /// `RSTREAM_CA_FILE`, on top of the webpki roots.
    pub tls: TlsOptions,
    /// `--cacert` value for the curl hint, when there is one.
    pub ca_file: Option<String>,
    /// Keeps an in-process engine alive.
    pub engine: Option<LocalEngine>,
}

pub async fn setup() -> Result<Setup, BoxError> {
    if std::env::var("RSTREAM_ENGINE").is_ok_and(|v| !v.trim().is_empty()) {
        let ca_file = std::env::var("RSTREAM_CA_FILE")
            .ok()
            .filter(|v| !v.trim().is_empty());
        let tls = match &ca_file {
            Some(f) => TlsOptions::new().add_ca_file(f)?,
            None => TlsOptions::new(),
        };
        return Ok(Setup {
            client: Client::from_env()?,
            tls,
            ca_file,
            engine: None,
        });
    }
    let engine = LocalEngine::builder().start().await?;
    eprintln!("started a local engine on {}", engine.engine_address());
    let tls = TlsOptions::new().add_ca_pem(engine.ca_pem().as_bytes())?;
    let client = Client::builder()
        .engine(engine.engine_address())
        .tls(tls.clone())
        .build()?;
    Ok(Setup {
        client,
        tls,
        ca_file: Some(engine.ca_file().display().to_string()),
        engine: Some(engine),
    })
}

impl Setup {
    /// A curl command line for `url`.
    pub fn curl(&self, url: &str) -> String {
        match &self.ca_file {
            Some(ca) => format!("curl --cacert {ca} {url}"),
            None => format!("curl {url}"),
        }
    }
}

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
    let uri: http::Uri = url.parse()?;
    let host = uri.host().ok_or("URL has no host")?.to_owned();
    let stream = tls_connect(tls, url, &[b"http/1.1"]).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let request = http::Request::get(path)
        .header(
            http::header::HOST,
            uri.authority().map_or(host.clone(), |a| a.to_string()),
        )
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
