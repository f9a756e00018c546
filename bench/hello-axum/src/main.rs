//! The HTTP ceiling of sessiond's stack: axum + tokio (same versions and features as the
//! server) answering every request with a short body and no work.
//!
//! `sessiond-bench-hello 127.0.0.1:PORT` — answers `GET` on any path (so the sessions GET wrk
//! script can hit `/v1/sessions/<id>` here too, and `/healthz` works for readiness).
//!
//! `sessiond-bench-hello 127.0.0.1:PORT auth` — the same, plus the two headers a forward-auth
//! service answers with (`X-Session-CID`, `Set-Cookie`): the trivial auth backend of
//! bench/middleware/run, the ceiling of any forward-auth service behind nginx.

use axum::http::header::SET_COOKIE;
use axum::http::HeaderName;
use axum::response::IntoResponse;
use axum::Router;

async fn hello() -> &'static str {
    "hello, world\n"
}

/// A fixed 30-character id, the length of sessiond's ids.
const FIXED_ID: &str = "AZrN0bench0trivial0auth0000000";

async fn auth() -> impl IntoResponse {
    (
        [
            (HeaderName::from_static("x-session-cid"), FIXED_ID),
            (
                SET_COOKIE,
                "_ss_eID=AZrN0bench0trivial0auth0000000; Path=/; HttpOnly; SameSite=Strict",
            ),
        ],
        "",
    )
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let Some(addr) = std::env::args().nth(1) else {
        eprintln!("usage: sessiond-bench-hello LISTEN_ADDR [auth]  (e.g. 127.0.0.1:7800)");
        return std::process::ExitCode::FAILURE;
    };
    let listener = match tokio::net::TcpListener::bind(&addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("sessiond-bench-hello: cannot listen on {addr}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let app = match std::env::args().nth(2).as_deref() {
        Some("auth") => Router::new().fallback(auth),
        _ => Router::new().fallback(hello),
    };
    match axum::serve(listener, app).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sessiond-bench-hello: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
