//! The HTTP server of `--metrics-addr`: one thread, since scrapes, probes and the page's polls
//! are a few requests a second at most.

use std::net::SocketAddr;

use anyhow::Result;
use tiny_http::{Header, Method, Request, Response, Server};

use super::Telemetry;
use super::prometheus::CONTENT_TYPE;

/// The live page: plain HTML and a little JavaScript that polls `/status`; no build step, and
/// nothing fetched from elsewhere, so it works with no internet.
const STATUS_PAGE: &str = include_str!("status.html");

pub(super) fn bind(addr: SocketAddr) -> Result<Server> {
    Server::http(addr).map_err(|e| {
        anyhow::anyhow!(
            "cannot serve metrics on {addr}: {e}; choose a free address for --metrics-addr \
             (e.g. 0.0.0.0:9464)"
        )
    })
}

pub(super) fn spawn(server: Server, telemetry: &'static Telemetry) {
    std::thread::Builder::new()
        .name("sessionize-ops-http".into())
        .spawn(move || {
            for request in server.incoming_requests() {
                respond(request, telemetry);
            }
        })
        .expect("cannot start the metrics server thread");
}

fn respond(request: Request, telemetry: &Telemetry) {
    let path = request.url().split('?').next().unwrap_or("/").to_string();
    let (status, content_type, body) = match (request.method(), path.as_str()) {
        (Method::Get | Method::Head, "/metrics") => (200, CONTENT_TYPE, telemetry.encode_metrics()),
        (Method::Get | Method::Head, "/healthz") => {
            probe(telemetry.health.liveness(std::time::Instant::now()))
        }
        (Method::Get | Method::Head, "/readyz") => {
            probe(telemetry.health.readiness(std::time::Instant::now()))
        }
        (Method::Get | Method::Head, "/status") => (
            200,
            "application/json",
            serde_json::to_string(&telemetry.status()).expect("the status serializes"),
        ),
        (Method::Get | Method::Head, "/" | "/index.html") => {
            (200, "text/html; charset=utf-8", STATUS_PAGE.to_string())
        }
        (Method::Get | Method::Head, _) => (
            404,
            "text/plain; charset=utf-8",
            "not found: try /, /status, /metrics, /healthz or /readyz\n".to_string(),
        ),
        _ => (
            405,
            "text/plain; charset=utf-8",
            "only GET and HEAD\n".to_string(),
        ),
    };
    let header = Header::from_bytes("Content-Type", content_type).expect("a valid header");
    let no_cache = Header::from_bytes("Cache-Control", "no-store").expect("a valid header");
    let response = Response::from_string(body)
        .with_status_code(status)
        .with_header(header)
        .with_header(no_cache);
    // A client that went away is no concern of the pipeline's.
    let _ = request.respond(response);
}

fn probe(verdict: super::health::Verdict) -> (u16, &'static str, String) {
    (
        if verdict.ok { 200 } else { 503 },
        "text/plain; charset=utf-8",
        format!("{}\n", verdict.reason),
    )
}
