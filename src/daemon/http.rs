//! `http_listen`: Prometheus `/metrics` and JSON `/status`, over a deliberately tiny HTTP/1.1.
//!
//! Only `GET` of two paths, one request per connection, bounded request size and read time:
//! a monitoring endpoint, not a web server, so no HTTP stack is pulled in for it.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

use super::metrics::Metrics;

pub use super::status::StatusDoc;

const MAX_REQUEST: usize = 8192;
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds `addr`; the returned future serves until dropped.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves `/metrics` and `/status` on `listener` forever.
pub async fn serve(listener: TcpListener, metrics: Metrics, status: StatusDoc) {
    if let Ok(a) = listener.local_addr() {
        info!(listen = %a, "http: serving /metrics and /status");
    }
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "http: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (m, s) = (metrics.clone(), status.clone());
        tokio::spawn(async move {
            if let Err(e) = handle(stream, &m, &s).await {
                debug!(%peer, error = %e, "http: request failed");
            }
        });
    }
}

async fn handle(
    mut stream: TcpStream,
    metrics: &Metrics,
    status: &StatusDoc,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let head_done =
        |b: &[u8]| b.windows(4).any(|w| w == b"\r\n\r\n") || b.windows(2).any(|w| w == b"\n\n");
    while !head_done(&buf) {
        let n = tokio::time::timeout(READ_TIMEOUT, stream.read(&mut chunk))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "request read timed out")
            })??;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_REQUEST {
            return respond(&mut stream, 431, "text/plain", b"request too large\n").await;
        }
    }
    let line = buf.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "GET" {
        return respond(&mut stream, 405, "text/plain", b"only GET\n").await;
    }
    match path.split('?').next().unwrap_or("") {
        "/metrics" => {
            let body = metrics.render();
            respond(
                &mut stream,
                200,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                body.as_bytes(),
            )
            .await
        }
        "/status" => {
            let mut body = serde_json::to_vec_pretty(&status.get()).unwrap_or_default();
            body.push(b'\n');
            respond(&mut stream, 200, "application/json", &body).await
        }
        _ => respond(&mut stream, 404, "text/plain", b"try /metrics or /status\n").await,
    }
}

async fn respond(
    stream: &mut TcpStream,
    code: u16,
    ctype: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Error",
    };
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.shutdown().await
}

/// Blocking GET of `path` from a daemon's `http_listen` (for `status` and `monitor`).
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.take(64 << 20).read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP answer")
        })?;
    Ok((code, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn serves_metrics_status_and_404() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Metrics::new(super::super::metrics::Role::Client);
        metrics.bgp_announces.inc();
        let status = StatusDoc::default();
        status.set(super::super::status::Status::Client(
            super::super::status::ClientStatus {
                tree_serial: 42,
                ..Default::default()
            },
        ));
        tokio::spawn(serve(listener, metrics, status));
        let fetch = |path: &'static str| {
            tokio::task::spawn_blocking(move || get(addr, path, Duration::from_secs(2)).unwrap())
        };
        let (code, body) = fetch("/metrics").await.unwrap();
        assert_eq!(code, 200);
        assert!(body.contains("ipvs_sync_bgp_announces_total 1"), "{body}");
        let (code, body) = fetch("/status").await.unwrap();
        assert_eq!(code, 200);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["tree_serial"], 42);
        let (code, _) = fetch("/nope").await.unwrap();
        assert_eq!(code, 404);
    }
}
