//! The HTTP ceiling of sessiond's stack: axum + tokio (same versions and features as the
//! server) answering every request with a short body and no work.
//!
//! `sessiond-bench-hello 127.0.0.1:PORT` — answers `GET` on any path (so the sessions GET wrk
//! script can hit `/v1/sessions/<id>` here too, and `/healthz` works for readiness).

use axum::Router;

async fn hello() -> &'static str {
    "hello, world\n"
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let Some(addr) = std::env::args().nth(1) else {
        eprintln!("usage: sessiond-bench-hello LISTEN_ADDR (e.g. 127.0.0.1:7800)");
        return std::process::ExitCode::FAILURE;
    };
    let listener = match tokio::net::TcpListener::bind(&addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("sessiond-bench-hello: cannot listen on {addr}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let app = Router::new().fallback(hello);
    match axum::serve(listener, app).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sessiond-bench-hello: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
