//! An axum app behind a [`SessionLayer`] on a free loopback port, and a minimal browser that
//! keeps the cookies it is given.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use axum::http::header::SET_COOKIE;
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde_json::Value;
use sessiond_layer::{SessionContext, SessionLayer};

/// Signing key shared by the tests' deciders.
pub const SIGNING_KEY: &str = "layer-tests-signing-key-of-32-bytes-or-more";
/// The cookie the app sets itself (must survive next to the session cookies).
pub const APP_COOKIE: &str = "app=1; Path=/";

/// The app under test: `/` answers the session context as JSON and sets its own cookie.
pub struct App {
    pub addr: SocketAddr,
    http: reqwest::Client,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for App {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn context(
    Extension(session): Extension<SessionContext>,
) -> impl axum::response::IntoResponse {
    ([(SET_COOKIE, APP_COOKIE)], Json(session))
}

/// Serves the test app behind `layer`, with peer addresses (ConnectInfo).
pub async fn serve_app(layer: SessionLayer) -> App {
    let app = Router::new().route("/", get(context)).layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    App {
        addr,
        http: reqwest::Client::new(),
        task,
    }
}

/// One response as the tests look at it.
#[derive(Debug)]
pub struct Visit {
    pub status: u16,
    /// `Set-Cookie` values other than the app's own.
    pub session_cookies: Vec<String>,
    /// Whether the app's own cookie was there too.
    pub app_cookie: bool,
    pub body: Value,
    pub retry_after: Option<String>,
}

/// A cookie jar: name → value, replaced by later `Set-Cookie`s.
#[derive(Default)]
pub struct Browser {
    jar: Vec<(String, String)>,
}

impl Browser {
    /// GET `/` with the jar's cookies and `headers`; stores the cookies of the answer.
    pub async fn visit(&mut self, app: &App, headers: &[(&str, &str)]) -> Visit {
        let mut request = app.http.get(format!("http://{}/", app.addr));
        if !self.jar.is_empty() {
            let cookie = self
                .jar
                .iter()
                .map(|(n, v)| format!("{n}={v}"))
                .collect::<Vec<_>>()
                .join("; ");
            request = request.header("cookie", cookie);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        let set: Vec<String> = response
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        for cookie in &set {
            let pair = cookie.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            self.jar.retain(|(n, _)| n != name);
            self.jar.push((name.to_string(), value.to_string()));
        }
        let app_cookie = set.iter().any(|c| c == APP_COOKIE);
        let body = serde_json::from_str(&response.text().await.unwrap()).unwrap_or(Value::Null);
        Visit {
            status,
            session_cookies: set.into_iter().filter(|c| c != APP_COOKIE).collect(),
            app_cookie,
            body,
            retry_after,
        }
    }
}

/// A first visit gets cookies and a new client; the return keeps cID and sID (new eID) and is
/// only re-sent the cookies that changed. Returns the browser for more visits.
pub async fn first_visit_then_return(app: &App) -> Browser {
    let mut browser = Browser::default();
    let first = browser.visit(app, &[("user-agent", "layer-test/1")]).await;
    assert_eq!(first.status, 200, "{first:?}");
    assert!(first.app_cookie, "the app's own cookie is kept: {first:?}");
    let s = &first.body;
    assert_eq!(s["isNewClient"], true, "{first:?}");
    assert_eq!(s["isNewSession"], true);
    assert_eq!(s["isFallback"], false);
    assert!(s["fpID"].is_string(), "{s}");
    // Layout A: cID, sID, eID, fpID, each as an HttpOnly and a JS copy.
    assert_eq!(first.session_cookies.len(), 8, "{first:?}");

    let second = browser.visit(app, &[("user-agent", "layer-test/1")]).await;
    assert_eq!(second.status, 200, "{second:?}");
    assert!(second.app_cookie);
    let t = &second.body;
    assert_eq!(t["cID"], s["cID"], "{second:?}");
    assert_eq!(t["sID"], s["sID"]);
    assert_ne!(t["eID"], s["eID"]);
    assert_eq!(t["isNewClient"], false);
    assert_eq!(t["isNewSession"], false);
    assert_eq!(t["oldState"]["eID"], s["eID"]);
    // Only the eID changed: its two copies are the only cookies re-sent.
    assert_eq!(second.session_cookies.len(), 2, "{second:?}");
    assert!(second.session_cookies.iter().all(|c| c.contains("eID=")));
    browser
}

/// A fallback: the request reached the app, with fresh ids and no session cookies.
pub fn assert_fallback(visit: &Visit) {
    assert_eq!(visit.status, 200, "{visit:?}");
    assert!(visit.app_cookie, "{visit:?}");
    assert_eq!(visit.body["isFallback"], true, "{visit:?}");
    assert_eq!(visit.body["isNewClient"], true);
    assert!(visit.session_cookies.is_empty(), "{visit:?}");
}

/// Visits with the same cookies until one is refused (429), within `max` visits.
pub async fn visit_until_refused(browser: &mut Browser, app: &App, max: usize) -> Visit {
    for _ in 0..max {
        let visit = browser.visit(app, &[]).await;
        if visit.status != 200 {
            return visit;
        }
    }
    panic!("no refusal within {max} visits");
}

/// A refusal: 429 in sessiond's error shape, with Retry-After.
pub fn assert_refused(visit: &Visit) {
    assert_eq!(visit.status, 429, "{visit:?}");
    assert_eq!(visit.body["error"]["code"], "limit_reached", "{visit:?}");
    assert!(visit.body["error"]["message"].is_string());
    assert_eq!(visit.retry_after.as_deref(), Some("1"));
}
