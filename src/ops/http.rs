//! The HTTP server of `--metrics-addr`, fit to face a network: hyper's HTTP/1 on a runtime of one
//! thread of its own, whatever the clients do.
//!
//! * a request's head (line and headers) is at most [`MAX_HEAD_BYTES`], and must arrive within
//!   [`HEAD_TIMEOUT`], which is also how long a kept-alive connection may sit idle;
//! * request bodies are never read: every route is a `GET` or `HEAD`;
//! * a connection whose answers the client does not read for [`WRITE_TIMEOUT`] is closed, so a
//!   client pipelining requests without reading holds one answer at a time, and not for long
//!   (hyper reads the next request only once the previous answer is written);
//! * at most [`MAX_CONNECTIONS`] connections are open: a new one closes the oldest, so that a
//!   flood of idle connections cannot keep a probe out; probes are answered in microseconds.
//!
//! Scrapes, probes and the page's polls are a few requests a second, so one thread serves them.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Result;
use hyper::body::Incoming;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::task::AbortHandle;
use tokio::time::Sleep;

use super::Telemetry;
use super::prometheus;

/// The live page: plain HTML and a little JavaScript that polls `/status`; no build step, and
/// nothing fetched from elsewhere, so it works with no internet.
const STATUS_PAGE: &str = include_str!("status.html");

/// Open connections at most: Prometheus, the kubelet's probes and a few browsers need a handful.
const MAX_CONNECTIONS: usize = 64;
/// A request's line and headers at most (hyper's smallest buffer is 8 KiB); a longer head gets
/// `431` and the connection is closed.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// How long a request's head may take to arrive, and a kept-alive connection may stay idle.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an answer may wait for the client to read it.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The listening socket and the runtime that serves it.
pub(super) struct Listener {
    runtime: Runtime,
    listener: TcpListener,
}

pub(super) fn bind(addr: SocketAddr) -> Result<Listener> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the metrics server's runtime: {e}"))?;
    let listener = runtime.block_on(TcpListener::bind(addr)).map_err(|e| {
        anyhow::anyhow!(
            "cannot serve metrics on {addr}: {e}; choose a free address for --metrics-addr \
                 (e.g. 127.0.0.1:9464)"
        )
    })?;
    Ok(Listener { runtime, listener })
}

pub(super) fn spawn(Listener { runtime, listener }: Listener, telemetry: &'static Telemetry) {
    std::thread::Builder::new()
        .name("sessionize-ops-http".into())
        .spawn(move || runtime.block_on(serve(listener, telemetry)))
        .expect("cannot start the metrics server thread");
}

async fn serve(listener: TcpListener, telemetry: &'static Telemetry) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES);
    let mut open: VecDeque<AbortHandle> = VecDeque::with_capacity(MAX_CONNECTIONS);
    loop {
        let accepted = listener.accept().await;
        open.retain(|connection| !connection.is_finished());
        if open.len() >= MAX_CONNECTIONS || accepted.is_err() {
            // Out of connections, or of file descriptors: the oldest connection makes way.
            if let Some(oldest) = open.pop_front() {
                oldest.abort();
            }
        }
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::debug!("the metrics server cannot accept a connection: {e}");
                // Until the closed connection's descriptor is free (or it was not our doing).
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let service = service_fn(move |request: Request<Incoming>| {
            let response = respond(&request, telemetry);
            async move { Ok::<_, Infallible>(response) }
        });
        let connection = http.serve_connection(TokioIo::new(WriteDeadline::new(stream)), service);
        // A client that misbehaves or goes away is no concern of the pipeline's.
        let task = tokio::spawn(async move { drop(connection.await) });
        open.push_back(task.abort_handle());
    }
}

fn respond(request: &Request<Incoming>, telemetry: &Telemetry) -> Response<String> {
    let read = matches!(*request.method(), Method::GET | Method::HEAD);
    let (status, content_type, body) = match (read, request.uri().path()) {
        (true, "/metrics") => (200, prometheus::CONTENT_TYPE, telemetry.encode_metrics()),
        (true, "/healthz") => probe(telemetry.health.liveness(std::time::Instant::now())),
        (true, "/readyz") => probe(telemetry.health.readiness(std::time::Instant::now())),
        (true, "/status") => (
            200,
            "application/json",
            serde_json::to_string(&telemetry.status()).expect("the status serializes"),
        ),
        (true, "/" | "/index.html") => (200, "text/html; charset=utf-8", STATUS_PAGE.to_string()),
        (true, _) => (
            404,
            "text/plain; charset=utf-8",
            "not found: try /, /status, /metrics, /healthz or /readyz\n".to_string(),
        ),
        (false, _) => (
            405,
            "text/plain; charset=utf-8",
            "only GET and HEAD\n".to_string(),
        ),
    };
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, content_type)
        .header(CACHE_CONTROL, "no-store")
        .body(body)
        .expect("a valid response")
}

fn probe(verdict: super::health::Verdict) -> (u16, &'static str, String) {
    (
        if verdict.ok { 200 } else { 503 },
        "text/plain; charset=utf-8",
        format!("{}\n", verdict.reason),
    )
}

/// A connection whose writes fail once they have made no progress for [`WRITE_TIMEOUT`]: hyper
/// has no write timeout of its own, and a client that never reads would hold the connection and
/// its pending answer for ever.
struct WriteDeadline {
    stream: TcpStream,
    /// Running while a write waits for the client.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl WriteDeadline {
    fn new(stream: TcpStream) -> Self {
        WriteDeadline {
            stream,
            stalled: None,
        }
    }

    /// `poll`, the outcome of a write or flush, unless the client has not read for too long.
    fn timed<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(WRITE_TIMEOUT)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client does not read its answers",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for WriteDeadline {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteDeadline {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.timed(cx, poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.timed(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.stream).poll_flush(cx);
        this.timed(cx, poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.stream).poll_shutdown(cx);
        this.timed(cx, poll)
    }
}
