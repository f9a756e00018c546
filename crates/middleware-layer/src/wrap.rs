//! The tower plumbing both layers share: a service holding the app's inner service and its
//! layer, which hands each request to the layer's [`Around::around`].
//!
//! The services are generic over request and response bodies, so they fit axum routers and
//! any other tower service whose response body can be built from bytes (for the answers a
//! layer gives itself). The inner service is cloned per call and the clone that `poll_ready`
//! readied handles the call (tower's usual rule for services that call their inner service
//! in a future); a fresh clone waits for the next `poll_ready`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Bytes;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, Request, Response, StatusCode};
use tower::Service;

/// The response future of a layer's service.
pub type Answer<B, E> = Pin<Box<dyn Future<Output = Result<Response<B>, E>> + Send>>;

/// What a layer does around the app for one request: answer itself, or call `inner`.
pub trait Around: Clone {
    /// Handles `request`; `inner` is the app's service, ready for one call.
    fn around<S, ReqBody, ResBody>(
        &self,
        request: Request<ReqBody>,
        inner: S,
    ) -> Answer<ResBody, S::Error>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>> + Send + 'static,
        S::Future: Send + 'static,
        ReqBody: Send + 'static,
        ResBody: From<Bytes> + Send + 'static;
}

/// The service a layer `L` produces around the app's service `S`.
#[derive(Clone, Debug)]
pub struct Wrapped<L, S> {
    inner: S,
    layer: L,
}

impl<L, S> Wrapped<L, S> {
    pub(crate) fn new(layer: L, inner: S) -> Self {
        Wrapped { inner, layer }
    }
}

impl<L, S, ReqBody, ResBody> Service<Request<ReqBody>> for Wrapped<L, S>
where
    L: Around,
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: From<Bytes> + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Answer<ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let fresh = self.inner.clone();
        let readied = std::mem::replace(&mut self.inner, fresh);
        self.layer.around(request, readied)
    }
}

/// An answer of a layer itself, in sessiond's error shape (`{"error": {code, message}}`).
pub(crate) fn json_error<B: From<Bytes>>(
    status: StatusCode,
    code: &str,
    message: &str,
) -> Response<B> {
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    let mut response = Response::new(B::from(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
