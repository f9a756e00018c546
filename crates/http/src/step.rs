//! Synchronous request steps as tower layers whose futures are not boxed.
//!
//! Why not `axum::middleware::from_fn`: each `from_fn` layer boxes its future and boxes a
//! clone of the inner service for `Next` on every request, on top of the boxed route
//! `Router::layer` puts around each layer; a session GET went through nine such services and a
//! third of its instructions were malloc/free (docs/benchmarks.md). The server's middleware
//! decides from headers and adjusts the response's headers, so it needs no `async`: a
//! [`Step`] looks at the request before the handler (and may answer for it) and at the response
//! after it, and [`layer`] runs it around the inner service with one small state per request.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::Response;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

/// One synchronous middleware step.
pub trait Step: Send + Sync + 'static {
    /// What `before` leaves for `after`.
    type Seen: Send + 'static;

    /// Before the inner service: what to remember, and an answer when the request must not
    /// reach the inner service (a refusal). `after` sees either answer.
    fn before(&self, request: &mut Request) -> (Self::Seen, Option<Response>);

    /// After the inner service (or `before`'s own answer): the response to send.
    fn after(&self, seen: Self::Seen, response: Response) -> Response {
        let _ = seen;
        response
    }
}

/// Two steps as one layer: `(outer, inner)` runs exactly as `inner`'s layer inside `outer`'s
/// (an answer of `outer` skips `inner`; `inner`'s `after` runs first), without the boxed
/// route `Router::layer` adds per layer, which is cloned, allocated and dropped on every
/// request (a stream append went through eight of them).
impl<A: Step, B: Step> Step for (A, B) {
    type Seen = (A::Seen, Option<B::Seen>);

    fn before(&self, request: &mut Request) -> (Self::Seen, Option<Response>) {
        let (outer, answer) = self.0.before(request);
        if answer.is_some() {
            return ((outer, None), answer);
        }
        let (inner, answer) = self.1.before(request);
        ((outer, Some(inner)), answer)
    }

    fn after(&self, (outer, inner): Self::Seen, response: Response) -> Response {
        let response = match inner {
            Some(inner) => self.1.after(inner, response),
            None => response,
        };
        self.0.after(outer, response)
    }
}

/// The layer of `step` (for `Router::layer` and `Router::route_layer`).
pub fn layer<T: Step>(step: T) -> StepLayer<T> {
    StepLayer(Arc::new(step))
}

/// `tower::Layer` of a [`Step`].
pub struct StepLayer<T>(Arc<T>);

impl<T> Clone for StepLayer<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T, S> Layer<S> for StepLayer<T> {
    type Service = StepService<T, S>;

    fn layer(&self, inner: S) -> Self::Service {
        StepService {
            step: self.0.clone(),
            inner,
        }
    }
}

/// The service of a [`StepLayer`].
pub struct StepService<T, S> {
    step: Arc<T>,
    inner: S,
}

impl<T, S: Clone> Clone for StepService<T, S> {
    fn clone(&self) -> Self {
        Self {
            step: self.step.clone(),
            inner: self.inner.clone(),
        }
    }
}

impl<T, S> Service<Request> for StepService<T, S>
where
    T: Step,
    S: Service<Request, Response = Response, Error = Infallible> + Clone,
{
    type Response = Response;
    type Error = Infallible;
    type Future = StepFuture<T, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let (seen, answer) = self.step.before(&mut request);
        let state = match answer {
            Some(response) => State::Answered {
                response: Some(response),
            },
            None => {
                // The service that was polled ready answers; its clone stays for the next call.
                let clone = self.inner.clone();
                let mut ready = std::mem::replace(&mut self.inner, clone);
                State::Running {
                    future: ready.call(request),
                }
            }
        };
        StepFuture {
            state,
            after: Some((self.step.clone(), seen)),
        }
    }
}

pin_project! {
    /// The response future of a [`StepService`].
    pub struct StepFuture<T: Step, F> {
        #[pin]
        state: State<F>,
        after: Option<(Arc<T>, T::Seen)>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Running { #[pin] future: F },
        Answered { response: Option<Response> },
    }
}

impl<T, F> Future for StepFuture<T, F>
where
    T: Step,
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = match this.state.project() {
            StateProj::Running { future } => match std::task::ready!(future.poll(cx)) {
                Ok(response) => response,
                Err(never) => match never {},
            },
            StateProj::Answered { response } => match response.take() {
                Some(response) => response,
                // Polled again after its answer: like any finished future, nothing more.
                None => return Poll::Pending,
            },
        };
        match this.after.take() {
            Some((step, seen)) => Poll::Ready(Ok(step.after(seen, response))),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{HeaderValue, StatusCode};

    use super::*;

    /// Appends its name to the request's and the response's `trace` header.
    struct Tag(&'static str);

    fn trace(headers: &mut axum::http::HeaderMap, name: &str) {
        let before = headers
            .get("trace")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let after = HeaderValue::from_str(&format!("{before}{name};")).expect("header value");
        headers.insert("trace", after);
    }

    impl Step for Tag {
        type Seen = ();

        fn before(&self, request: &mut Request) -> ((), Option<Response>) {
            trace(request.headers_mut(), self.0);
            ((), None)
        }

        fn after(&self, (): (), mut response: Response) -> Response {
            trace(response.headers_mut(), self.0);
            response
        }
    }

    /// Answers every request itself.
    struct Refuse;

    impl Step for Refuse {
        type Seen = ();

        fn before(&self, _: &mut Request) -> ((), Option<Response>) {
            let mut refusal = Response::new(Body::empty());
            *refusal.status_mut() = StatusCode::FORBIDDEN;
            ((), Some(refusal))
        }
    }

    fn header(headers: &axum::http::HeaderMap) -> &str {
        headers
            .get("trace")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    #[test]
    fn a_pair_runs_as_the_inner_step_inside_the_outer() {
        let pair = (Tag("outer"), Tag("inner"));
        let mut request = Request::new(Body::empty());
        let (seen, answer) = pair.before(&mut request);
        assert!(answer.is_none());
        assert_eq!(header(request.headers()), "outer;inner;");
        let response = pair.after(seen, Response::new(Body::empty()));
        assert_eq!(header(response.headers()), "inner;outer;");

        // An answer of the outer step: the inner one sees neither the request nor the answer.
        let refused = (Tag("outer"), (Refuse, Tag("inner")));
        let mut request = Request::new(Body::empty());
        let (seen, answer) = refused.before(&mut request);
        let answer = answer.expect("the refusal");
        assert_eq!(header(request.headers()), "outer;");
        let response = refused.after(seen, answer);
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(header(response.headers()), "outer;");
    }
}
