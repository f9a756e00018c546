//! [`AccountLayer`]: only requests with a live sessiond *account* session reach the app — the
//! edge check of `GET /v1/sessions/forward-auth`, in the app's own process.
//!
//! Why a second layer beside [`crate::SessionLayer`]: that one tracks anonymous clients and
//! fails open (a session-service failure never breaks a page); this one authenticates, so it
//! fails closed. A request passes only with a cookie naming a live session created with a
//! service credential and owned by a user (and, with [`AccountLayer::max_age`], a recent
//! enough `auth_time`); the handler then finds the [`AccountSession`] in the request's
//! extensions. Otherwise the layer answers itself: 401 (with RFC 9470's
//! `insufficient_user_authentication` challenge when only freshness is missing), or 503 when
//! the backend cannot answer. The rules are sessiond's
//! ([`sessiond_sessions::SessionService::edge_check`]), in-process on the app's engine
//! ([`AccountLayer::in_process`]) or over HTTP ([`AccountLayer::remote`]).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Bytes;
use axum::http::header::WWW_AUTHENTICATE;
use axum::http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use sessiond_http::auth::cookie_value;
use sessiond_sessions::routes::edge::{AUTH_TIME_HEADER, SESSION_ID_HEADER, USER_ID_HEADER};
use sessiond_sessions::service::{EdgeVerdict, MAX_AGE_HEADER};
use sessiond_sessions::SessionService;
use tower::Layer;

use crate::wrap::{json_error, Around, Judging, Verdict, Wrapped};

/// The verified account of a request (in its extensions).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountSession {
    /// The session's user.
    pub user_id: String,
    /// The session id.
    pub session_id: String,
    /// When the user last proved who they are (unix ms).
    pub auth_time: i64,
}

/// How a backend judged one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccountOutcome {
    /// A live account session, fresh enough.
    Allowed(AccountSession),
    /// Not an account session (absent, unknown, ended, open-route): 401.
    Denied,
    /// The login is older than the demanded maximum age (seconds): 401 with the challenge.
    TooOld(u64),
    /// No answer could be had: 503, never a pass.
    Unavailable(String),
}

/// Something that judges a session id.
#[async_trait]
pub trait AccountBackend: Send + Sync + 'static {
    /// Judges `session_id` (`None`: no cookie) against an optional maximum age (seconds).
    async fn check(&self, session_id: Option<&str>, max_age_s: Option<u64>) -> AccountOutcome;
}

#[async_trait]
impl AccountBackend for SessionService {
    async fn check(&self, session_id: Option<&str>, max_age_s: Option<u64>) -> AccountOutcome {
        match self.edge_check(session_id, max_age_s).await {
            Ok(EdgeVerdict::Allowed(record)) => AccountOutcome::Allowed(AccountSession {
                user_id: record.user_id.unwrap_or_default(),
                session_id: record.id,
                auth_time: record.auth_time,
            }),
            Ok(EdgeVerdict::Denied) => AccountOutcome::Denied,
            Ok(EdgeVerdict::TooOld { max_age_s }) => AccountOutcome::TooOld(max_age_s),
            Err(e) => AccountOutcome::Unavailable(e.message),
        }
    }
}

/// A sessiond reached over HTTP: its `GET /v1/sessions/forward-auth`, with a full key.
#[derive(Clone, Debug)]
pub struct RemoteAccounts {
    client: reqwest::Client,
    endpoint: String,
    api_key: String,
    timeout: Duration,
    cookie: String,
}

impl RemoteAccounts {
    /// The sessiond at `base_url` (e.g. `http://127.0.0.1:7700`) with a full `api_key`.
    pub fn new(base_url: &str, api_key: &str) -> Self {
        RemoteAccounts {
            client: reqwest::Client::new(),
            endpoint: format!(
                "{}/v1/sessions/forward-auth",
                base_url.trim_end_matches('/')
            ),
            api_key: api_key.to_string(),
            timeout: crate::remote::DEFAULT_TIMEOUT,
            cookie: sessiond_sessions::config::DEFAULT_SESSION_COOKIE.to_string(),
        }
    }

    /// The cookie name the session id is sent to sessiond under: one of the server's
    /// `sessions.cookies` (default `sessiond_session`).
    pub fn cookie(mut self, name: &str) -> Self {
        self.cookie = name.to_string();
        self
    }

    /// Deadline of one check, connection included (default 500 ms); past it: 503.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

#[async_trait]
impl AccountBackend for RemoteAccounts {
    async fn check(&self, session_id: Option<&str>, max_age_s: Option<u64>) -> AccountOutcome {
        let remote = self;
        let Some(id) = session_id else {
            return AccountOutcome::Denied;
        };
        let mut request = remote
            .client
            .get(&remote.endpoint)
            .timeout(remote.timeout)
            .header("cookie", format!("{}={id}", remote.cookie));
        if !remote.api_key.is_empty() {
            request = request.bearer_auth(&remote.api_key);
        }
        if let Some(max_age) = max_age_s {
            request = request.header(MAX_AGE_HEADER, max_age);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => return AccountOutcome::Unavailable(format!("sessiond unreachable: {e}")),
        };
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        match response.status() {
            StatusCode::OK => {
                let auth_time = header(AUTH_TIME_HEADER).and_then(|t| t.parse().ok());
                match (header(USER_ID_HEADER), header(SESSION_ID_HEADER), auth_time) {
                    (Some(user_id), Some(session_id), Some(auth_time)) => {
                        AccountOutcome::Allowed(AccountSession {
                            user_id,
                            session_id,
                            auth_time,
                        })
                    }
                    _ => AccountOutcome::Unavailable("sessiond's answer lacks headers".into()),
                }
            }
            StatusCode::UNAUTHORIZED => match (max_age_s, header("www-authenticate")) {
                (Some(max_age), Some(challenge)) if challenge.contains("max_age") => {
                    AccountOutcome::TooOld(max_age)
                }
                _ => AccountOutcome::Denied,
            },
            status => AccountOutcome::Unavailable(format!("sessiond answered {status}")),
        }
    }
}

/// Lets only requests with a live account session through (see the module docs).
#[derive(Clone)]
pub struct AccountLayer {
    backend: Arc<dyn AccountBackend>,
    cookies: Arc<Vec<String>>,
    max_age_s: Option<u64>,
}

impl AccountLayer {
    /// Checks in this process with the app's own [`SessionService`] (its cookie names are
    /// the service's `sessions.cookies`).
    pub fn in_process(sessions: SessionService) -> Self {
        let cookies = sessions.config().cookie_names();
        AccountLayer {
            backend: Arc::new(sessions),
            cookies: Arc::new(cookies),
            max_age_s: None,
        }
    }

    /// Checks with the sessiond at `base_url` and a full `api_key`; the session id is read
    /// from the `sessiond_session` cookie (see [`AccountLayer::cookie`]).
    pub fn remote(base_url: &str, api_key: &str) -> Self {
        Self::remote_with(RemoteAccounts::new(base_url, api_key))
    }

    /// As [`AccountLayer::remote`] with a tuned client; the session id is read from the
    /// cookie the client sends it under.
    pub fn remote_with(remote: RemoteAccounts) -> Self {
        let cookie = remote.cookie.clone();
        AccountLayer {
            backend: Arc::new(remote),
            cookies: Arc::new(vec![cookie]),
            max_age_s: None,
        }
    }

    /// Reads the session id from the browser's cookie `name` instead.
    pub fn cookie(mut self, name: &str) -> Self {
        self.cookies = Arc::new(vec![name.to_string()]);
        self
    }

    /// Demands a login (or reauth) at most `seconds` old, like `X-Sessiond-Max-Age`.
    pub fn max_age(mut self, seconds: u64) -> Self {
        self.max_age_s = Some(seconds);
        self
    }
}

impl std::fmt::Debug for AccountLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountLayer")
            .field("cookies", &self.cookies)
            .field("max_age_s", &self.max_age_s)
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for AccountLayer {
    type Service = AccountService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Wrapped::new(self.clone(), inner)
    }
}

/// The service [`AccountLayer`] produces.
pub type AccountService<S> = Wrapped<AccountLayer, S>;

impl Around for AccountLayer {
    type Found = AccountSession;
    type After = ();

    fn judge<B>(&self, request: &Request<B>) -> Judging<AccountSession, ()> {
        let layer = self.clone();
        let id = cookie_value(request.headers(), &layer.cookies).map(str::to_string);
        Box::pin(async move {
            match layer.backend.check(id.as_deref(), layer.max_age_s).await {
                AccountOutcome::Allowed(account) => Verdict::Pass(account, ()),
                AccountOutcome::Denied => Verdict::Answer(error(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "no live account session",
                    None,
                )),
                AccountOutcome::TooOld(max_age) => Verdict::Answer(error(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "the login is too old: re-authenticate",
                    Some(format!(
                        "Bearer error=\"insufficient_user_authentication\", max_age={max_age}"
                    )),
                )),
                AccountOutcome::Unavailable(reason) => {
                    tracing::warn!(%reason, "account check unavailable; request denied");
                    Verdict::Answer(error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "unavailable",
                        "the session service cannot check this request",
                        None,
                    ))
                }
            }
        })
    }

    fn after((): (), _: &mut HeaderMap) {}
}

/// An answer of the layer itself, in sessiond's error shape.
fn error(
    status: StatusCode,
    code: &str,
    message: &str,
    challenge: Option<String>,
) -> Response<Bytes> {
    let mut response = json_error(status, code, message);
    if let Some(value) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().insert(WWW_AUTHENTICATE, value);
    }
    response
}
