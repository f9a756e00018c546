//! Per-route request metrics.
//!
//! Labels use the matched route template (`/v1/sessions/{id}`), never the raw path, so an id in
//! a URL cannot explode the series count.
//!
//! The metric handles are cached per (route, method, status): building label sets and looking
//! them up in the recorder on every request cost more than a whole session read (measured with
//! the sessions benchmark), while a cached handle is one read lock, a hash lookup by `&str` and
//! an atomic add.

use axum::http::Method;
use metrics::{Counter, Histogram};
use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

/// Handles of one route: a latency histogram per method, a counter per (method, status).
#[derive(Default)]
struct RouteHandles {
    latency: Vec<(&'static str, Histogram)>,
    requests: Vec<(&'static str, u16, Counter)>,
}

/// The cache of metric handles.
#[derive(Clone, Default)]
pub struct RequestMetrics {
    routes: Arc<RwLock<HashMap<String, RouteHandles>>>,
}

/// A static name for every method (labels must not allocate per request).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

impl RequestMetrics {
    /// Records one request in `sessiond_http_requests_total{route,method,status}` and
    /// `sessiond_http_request_duration_seconds{route,method}` (called by
    /// [`crate::server_layer`] with the route template, never the raw path).
    pub fn observe(&self, route: &str, method: &Method, status: u16, seconds: f64) {
        let method = method_label(method);
        if !self.record(route, method, status, seconds) {
            let (latency, counter) = self.register(route, method, status);
            latency.record(seconds);
            counter.increment(1);
        }
    }

    /// Records with cached handles; false when they are not cached yet.
    fn record(&self, route: &str, method: &'static str, status: u16, seconds: f64) -> bool {
        let routes = self.routes.read().unwrap_or_else(PoisonError::into_inner);
        let Some(handles) = routes.get(route) else {
            return false;
        };
        let latency = handles.latency.iter().find(|(m, _)| *m == method);
        let counter = handles
            .requests
            .iter()
            .find(|(m, s, _)| *m == method && *s == status);
        match (latency, counter) {
            (Some((_, latency)), Some((_, _, counter))) => {
                latency.record(seconds);
                counter.increment(1);
                true
            }
            _ => false,
        }
    }

    fn register(&self, route: &str, method: &'static str, status: u16) -> (Histogram, Counter) {
        let mut routes = self.routes.write().unwrap_or_else(PoisonError::into_inner);
        let handles = routes.entry(route.to_owned()).or_default();
        let latency = match handles.latency.iter().find(|(m, _)| *m == method) {
            Some((_, h)) => h.clone(),
            None => {
                let h = metrics::histogram!("sessiond_http_request_duration_seconds",
                    "route" => route.to_owned(), "method" => method);
                handles.latency.push((method, h.clone()));
                h
            }
        };
        let counter = match handles
            .requests
            .iter()
            .find(|(m, s, _)| *m == method && *s == status)
        {
            Some((_, _, c)) => c.clone(),
            None => {
                let c = metrics::counter!("sessiond_http_requests_total",
                    "route" => route.to_owned(), "method" => method, "status" => status.to_string());
                handles.requests.push((method, status, c.clone()));
                c
            }
        };
        (latency, counter)
    }
}
