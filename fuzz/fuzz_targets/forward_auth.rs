//! Forward-auth as a proxy calls it: the original request's headers (cookies, forwarded
//! address chain, URL parts, method, client metadata) through the real route and decider on
//! an in-memory store. The answer is a decision or a rate-limit refusal, never a 5xx.
#![no_main]
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderName, HeaderValue, Request, StatusCode};
use libfuzzer_sys::fuzz_target;
use sessiond_middleware::{Decider, MiddlewareConfig, NoSink};
use sessiond_runtime::{Runtime, RuntimeConfig};
use sessiond_store::memory::MemoryEngine;
use tower::ServiceExt;

const NAMES: [&str; 16] = [
    "cookie",
    "x-forwarded-for",
    "x-forwarded-uri",
    "x-original-uri",
    "x-forwarded-host",
    "host",
    "x-forwarded-proto",
    "x-forwarded-method",
    "x-original-method",
    "user-agent",
    "accept-language",
    "accept-encoding",
    "accept",
    "x-forwarded-tls-cipher",
    "x-forwarded-http-protocol",
    "x-forwarded-region",
];

/// The decider and its runtime, rebuilt now and then so the in-memory store stays small.
struct Harness {
    rt: tokio::runtime::Runtime,
    decider: Decider,
    _runtime: Runtime,
    uses: u32,
}

fn harness() -> Harness {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let (decider, runtime) = rt.block_on(async {
        let mut builder = Runtime::builder(Arc::new(MemoryEngine::new()), RuntimeConfig::default());
        let config = MiddlewareConfig {
            signing_keys: vec!["fuzz".repeat(8)],
            trusted_proxies: vec!["10.0.0.0/8".parse().expect("net")],
            ..MiddlewareConfig::default()
        };
        let decider = Decider::new(
            config,
            &mut builder,
            Arc::new(MemoryEngine::new()),
            true,
            Arc::new(NoSink),
        )
        .expect("decider");
        (decider, builder.start())
    });
    Harness {
        rt,
        decider,
        _runtime: runtime,
        uses: 0,
    }
}

static HARNESS: Mutex<Option<Harness>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    let mut request = Request::builder().uri("/v1/middleware/forward-auth");
    for line in data.split(|b| *b == b'\n') {
        let Some((&selector, value)) = line.split_first() else {
            continue;
        };
        let name = HeaderName::from_static(NAMES[usize::from(selector) % NAMES.len()]);
        if let Ok(value) = HeaderValue::from_bytes(value) {
            request = request.header(name, value);
        }
    }
    let Ok(mut request) = request.body(Body::empty()) else {
        return;
    };
    let peer: SocketAddr = "10.1.2.3:4567".parse().expect("addr");
    request.extensions_mut().insert(ConnectInfo(peer));

    let mut slot = HARNESS.lock().unwrap_or_else(|e| e.into_inner());
    if slot.as_ref().is_none_or(|h| h.uses >= 20_000) {
        *slot = None;
        *slot = Some(harness());
    }
    let Some(h) = slot.as_mut() else { return };
    h.uses += 1;
    let app = sessiond_middleware::router(h.decider.clone());
    let response = h.rt.block_on(app.oneshot(request)).expect("infallible");
    let status = response.status();
    assert!(
        status == StatusCode::OK || status == StatusCode::TOO_MANY_REQUESTS,
        "forward-auth answered {status}"
    );
});
