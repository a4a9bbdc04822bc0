//! `http_listen`: Prometheus `/metrics` and JSON `/status`, over a deliberately tiny HTTP/1.1.
//!
//! Only `GET` and `HEAD` of two paths, one request per connection, a bounded request size, one
//! deadline for the whole request (reading it and writing the answer), and at most
//! [`MAX_CONNECTIONS`] connections at once (a connection beyond is closed at once): a monitoring
//! endpoint, not a web server, so no HTTP stack is pulled in for it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

use super::metrics::Metrics;

pub use super::status::StatusDoc;

const MAX_REQUEST: usize = 8192;

/// Time for one request: read, answer, close.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 32;

/// How the endpoint limits its clients.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time for one request.
    pub deadline: Duration,
    /// Connections served at once.
    pub connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            deadline: REQUEST_DEADLINE,
            connections: MAX_CONNECTIONS,
        }
    }
}

/// Binds `addr`; the returned future serves until dropped.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves `/metrics` and `/status` on `listener` forever.
pub async fn serve(listener: TcpListener, metrics: Metrics, status: StatusDoc) {
    serve_with(listener, metrics, status, Limits::default()).await
}

/// [`serve`] with other limits.
pub async fn serve_with(listener: TcpListener, metrics: Metrics, status: StatusDoc, lim: Limits) {
    if let Ok(a) = listener.local_addr() {
        info!(listen = %a, "http: serving /metrics and /status");
    }
    let slots = Arc::new(tokio::sync::Semaphore::new(lim.connections.max(1)));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "http: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            debug!(%peer, "http: too many connections; closed");
            drop(stream);
            continue;
        };
        let (m, s) = (metrics.clone(), status.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(lim.deadline, handle(stream, &m, &s)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => debug!(%peer, error = %e, "http: request failed"),
                Err(_) => debug!(%peer, "http: request not done within its deadline; closed"),
            }
            drop(slot);
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
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_REQUEST {
            return respond(
                &mut stream,
                431,
                "text/plain",
                b"request too large\n",
                false,
            )
            .await;
        }
    }
    let line = buf.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return respond(
            &mut stream,
            405,
            "text/plain",
            b"only GET and HEAD\n",
            false,
        )
        .await;
    }
    match path.split('?').next().unwrap_or("") {
        "/metrics" => {
            let body = metrics.render();
            let ctype = "application/openmetrics-text; version=1.0.0; charset=utf-8";
            respond(&mut stream, 200, ctype, body.as_bytes(), head_only).await
        }
        "/status" => {
            let mut body = serde_json::to_vec_pretty(&status.get()).unwrap_or_default();
            body.push(b'\n');
            respond(&mut stream, 200, "application/json", &body, head_only).await
        }
        _ => {
            let body = b"try /metrics or /status\n";
            respond(&mut stream, 404, "text/plain", body, head_only).await
        }
    }
}

/// Writes the answer; for `HEAD` the head only (with the length the body would have).
async fn respond(
    stream: &mut TcpStream,
    code: u16,
    ctype: &str,
    body: &[u8],
    head_only: bool,
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
    if !head_only {
        stream.write_all(body).await?;
    }
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

    /// Sends `request` raw and reads the answer until the server closes (or resets).
    async fn raw(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let _ = s.write_all(request).await;
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn head_gives_the_head_only_and_other_methods_are_refused() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let status = StatusDoc::default();
        status.set(super::super::status::Status::Client(
            super::super::status::ClientStatus::default(),
        ));
        tokio::spawn(serve(
            listener,
            Metrics::new(super::super::metrics::Role::Client),
            status,
        ));
        let get = raw(addr, b"GET /status HTTP/1.1\r\n\r\n").await;
        let head = raw(addr, b"HEAD /status HTTP/1.1\r\n\r\n").await;
        let (get_head, get_body) = get.split_once("\r\n\r\n").unwrap();
        assert!(!get_body.is_empty());
        assert_eq!(head, format!("{get_head}\r\n\r\n"));
        assert!(head.contains(&format!("Content-Length: {}", get_body.len())));
        assert!(raw(addr, b"POST /status HTTP/1.1\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 405"));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn slow_clients_get_one_deadline_and_connections_are_capped() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let lim = Limits {
            deadline: Duration::from_millis(300),
            connections: 2,
        };
        tokio::spawn(serve_with(
            listener,
            Metrics::new(super::super::metrics::Role::Client),
            StatusDoc::default(),
            lim,
        ));
        // A client that trickles a byte at a time, each within any per-read timeout, is cut
        // at the request's deadline.
        let mut slow = TcpStream::connect(addr).await.unwrap();
        let t = std::time::Instant::now();
        let mut closed = false;
        for b in b"GET /status HTTP/1.1\r\nX-Slow: yes yes yes yes yes yes yes yes\r\n".iter() {
            if slow.write_all(&[*b]).await.is_err() {
                closed = true;
                break;
            }
            let mut probe = [0u8; 1];
            if let Ok(Ok(0)) =
                tokio::time::timeout(Duration::from_millis(50), slow.read(&mut probe)).await
            {
                closed = true;
                break;
            }
        }
        assert!(closed, "the slow client was never cut");
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        // Two idle connections take both slots: a third is closed at once, unanswered.
        // (The server accepts in order: the third comes after both hold their slot.)
        let _a = TcpStream::connect(addr).await.unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        let third = raw(addr, b"GET /status HTTP/1.1\r\n\r\n").await;
        assert_eq!(third, "");
        // Once their deadline has passed, the slots are free again.
        let t = std::time::Instant::now();
        while !raw(addr, b"GET /status HTTP/1.1\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 200")
        {
            assert!(t.elapsed() < Duration::from_secs(3), "slots never freed");
        }
    }
}
