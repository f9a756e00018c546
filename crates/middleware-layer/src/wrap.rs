//! The tower plumbing both layers share. A layer only [`judges`](Around::judge) a request:
//! pass it on with what it found (inserted into the request's extensions, where the app's
//! handler reads it) and what the response needs afterwards, or answer it itself. The service
//! here does the rest.
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
use axum::http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use tower::Service;

/// What a layer decided about one request.
pub enum Verdict<F, A> {
    /// Call the app with `F` in the request's extensions; `A` then goes to [`Around::after`].
    Pass(F, A),
    /// Answer with this instead of calling the app.
    Answer(Response<Bytes>),
}

/// A verdict being reached.
pub type Judging<F, A> = Pin<Box<dyn Future<Output = Verdict<F, A>> + Send>>;

/// What a layer does around the app.
pub trait Around: Clone {
    /// What the app's handler finds in the request's extensions.
    type Found: Clone + Send + Sync + 'static;
    /// What the response needs once the app answered.
    type After: Send + 'static;

    /// Reads what it needs from `request` now and judges it in the returned future.
    fn judge<B>(&self, request: &Request<B>) -> Judging<Self::Found, Self::After>;

    /// Adjusts the app's response headers.
    fn after(after: Self::After, headers: &mut HeaderMap);
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
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let judging = self.layer.judge(&request);
        let fresh = self.inner.clone();
        let mut readied = std::mem::replace(&mut self.inner, fresh);
        Box::pin(async move {
            match judging.await {
                Verdict::Answer(answer) => Ok(answer.map(ResBody::from)),
                Verdict::Pass(found, after) => {
                    request.extensions_mut().insert(found);
                    let mut response = readied.call(request).await?;
                    L::after(after, response.headers_mut());
                    Ok(response)
                }
            }
        })
    }
}

/// An answer of a layer itself, in sessiond's error shape (`{"error": {code, message}}`).
pub(crate) fn json_error(status: StatusCode, code: &str, message: &str) -> Response<Bytes> {
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    let mut response = Response::new(Bytes::from(body.to_string()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
