//! An axum app whose handlers read the session context the layer puts in each request.
//!
//! ```sh
//! # in-process, on the embedded SQLite engine in ./axum-app-data:
//! cargo run -p sessiond-layer --example axum_app
//! # or against a running sessiond:
//! SESSIOND_URL=http://127.0.0.1:7700 SESSIOND_API_KEY=… cargo run -p sessiond-layer --example axum_app
//! curl -si http://127.0.0.1:3000/          # Set-Cookie on the first visit
//! ```
//!
//! Environment: `LISTEN` (default `127.0.0.1:3000`), `DATA_DIR` (default `./axum-app-data`),
//! `SESSION_SIGNING_KEY` (≥ 32 bytes; without it cookies are forgotten at restart).

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::routing::get;
use axum::{Extension, Json, Router};
use sessiond_engine_sqlite::{SqliteEngine, SqliteOptions};
use sessiond_layer::{Embedded, MiddlewareConfig, SessionContext, SessionLayer};
use sessiond_store::Stores;

/// A page that greets returning visitors.
async fn page(Extension(session): Extension<SessionContext>) -> String {
    let who = if session.is_new_client {
        "Welcome, new visitor"
    } else {
        "Welcome back"
    };
    let fallback = if session.is_fallback {
        " (sessiond unavailable: this visit is not remembered)"
    } else {
        ""
    };
    format!(
        "{who}{fallback}.\nclient {} since {}, session {}{}, event {}\n",
        session.cid,
        session.client_time,
        session.sid,
        if session.is_new_session { " (new)" } else { "" },
        session.eid,
    )
}

/// The whole context as JSON.
async fn context(Extension(session): Extension<SessionContext>) -> Json<SessionContext> {
    Json(session)
}

fn routes() -> Router {
    Router::new()
        .route("/", get(page))
        .route("/context", get(context))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber_init();
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };

    if let Ok(url) = std::env::var("SESSIOND_URL") {
        // Remote: one line.
        let key = std::env::var("SESSIOND_API_KEY").unwrap_or_default();
        let app = routes().layer(SessionLayer::remote(&url, &key));
        println!("http://{listen}/ (decisions by the sessiond at {url})");
        serve(listener, app, shutdown).await?;
        return Ok(());
    }

    // In-process: the app opens the embedded engine and hands its handles to the layer.
    let dir = PathBuf::from(std::env::var("DATA_DIR").unwrap_or_else(|_| "axum-app-data".into()));
    let engine = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || SqliteEngine::open(&dir, SqliteOptions::default())
    })
    .await??;
    let stores = Stores::from_engine(engine);
    let mut config = MiddlewareConfig {
        signing_keys: std::env::var("SESSION_SIGNING_KEY").into_iter().collect(),
        ..MiddlewareConfig::default()
    };
    config.analytics.sink = sessiond_middleware::AnalyticsTarget::Off;
    let embedded = Embedded::start(config, &stores).map_err(anyhow::Error::msg)?;
    let app = routes().layer(embedded.layer());
    println!(
        "http://{listen}/ (decisions in-process, data in {})",
        dir.display()
    );
    serve(listener, app, shutdown).await?;
    embedded.shutdown().await;
    stores.admin.close().await?;
    Ok(())
}

async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // ConnectInfo gives the layer the client's address (part of the fingerprint).
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// Logs to stderr (`RUST_LOG` filters), so fallbacks are visible.
fn tracing_subscriber_init() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
}
