//! Reading a request: its protocol headers and the stream name in its path; and the headers
//! every response carries. (The names themselves are [`crate::protocol`]'s.)
//!
//! Parsing is strict where the protocol says MUST (TTL digits without leading zeros, producer
//! numbers as plain digits ≤ 2^53−1) and lenient where it says to ignore (`Stream-Closed` is
//! present only when its value is `true`, case-insensitively; anything else is absent, never an
//! error).

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::Response;
use sessiond_store::Millis;

use crate::error::{StreamError, StreamResult};
use crate::protocol::{
    CLOSED, COMPACT_BEFORE, EXPIRES_AT, NEXT_OFFSET, PRODUCER_EPOCH, PRODUCER_ID, PRODUCER_SEQ,
    SEQ, STREAM_PREFIX, TRIM_BEFORE, TTL,
};
use crate::state::ProducerTuple;

const EXPOSED: &str = "Stream-Next-Offset, Stream-Cursor, Stream-Up-To-Date, Stream-Closed, \
    Stream-TTL, Stream-Expires-At, Stream-SSE-Data-Encoding, ETag, Location, Content-Type, \
    Producer-Epoch, Producer-Seq, Producer-Expected-Seq, Producer-Received-Seq, Server-Timing, \
    Stream-Start-Offset, Stream-Retention-Max-Age, Stream-Retention-Max-Bytes, Stream-Compaction, \
    Stream-Compact-Before";
const ALLOWED: &str = "Authorization, Content-Type, If-None-Match, Stream-TTL, Stream-Expires-At, \
    Stream-Closed, Stream-Seq, Stream-Forked-From, Stream-Fork-Offset, Stream-Fork-Sub-Offset, \
    Producer-Id, Producer-Epoch, Producer-Seq, X-Debug-Timing, Stream-Trim-Before, \
    Stream-Retention-Max-Age, Stream-Retention-Max-Bytes, Stream-Compaction, Stream-Compact-Before";
const METHODS: &str = "GET, HEAD, PUT, POST, PATCH, DELETE, OPTIONS";

/// The request headers every append reads, as names: a lookup by `&str` parses and checks
/// the name each time (nine lookups per append).
pub(crate) const CLOSED_NAME: HeaderName = HeaderName::from_static(CLOSED);
/// `Stream-Next-Offset`, which every append answers.
pub(crate) const NEXT_OFFSET_NAME: HeaderName = HeaderName::from_static(NEXT_OFFSET);
const DURABILITY_NAME: HeaderName = HeaderName::from_static("sessiond-durability");
const SEQ_NAME: HeaderName = HeaderName::from_static(SEQ);
const PRODUCER_ID_NAME: HeaderName = HeaderName::from_static(PRODUCER_ID);
const PRODUCER_EPOCH_NAME: HeaderName = HeaderName::from_static(PRODUCER_EPOCH);
const PRODUCER_SEQ_NAME: HeaderName = HeaderName::from_static(PRODUCER_SEQ);
pub(crate) const TRIM_BEFORE_NAME: HeaderName = HeaderName::from_static(TRIM_BEFORE);
pub(crate) const COMPACT_BEFORE_NAME: HeaderName = HeaderName::from_static(COMPACT_BEFORE);

/// A header as a string (non-UTF-8 is a 400).
pub fn get<K>(headers: &HeaderMap, name: K) -> StreamResult<Option<&str>>
where
    K: axum::http::header::AsHeaderName + std::fmt::Display + Copy,
{
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(Some)
            .map_err(|_| StreamError::bad_request(format!("header {name} is not valid text"))),
    }
}

/// Whether `headers` holds any header an append reads besides `Content-Type`: every one of
/// them is named `stream-*`, `producer-*` or `sessiond-*` (names are stored lowercase).
pub fn any_append_header(headers: &HeaderMap) -> bool {
    headers.keys().any(|name| {
        let name = name.as_str();
        name.starts_with("stream-")
            || name.starts_with("producer-")
            || name.starts_with("sessiond-")
    })
}

/// `Stream-Closed: true` (case-insensitive); any other value counts as absent.
pub fn closed_flag(headers: &HeaderMap) -> bool {
    headers
        .get(CLOSED_NAME)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// A decimal without sign, leading zeros, point or exponent.
fn strict_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

/// The requested expiry: `Stream-TTL` seconds or `Stream-Expires-At` (both → 400).
pub fn expiry(headers: &HeaderMap) -> StreamResult<(Option<u64>, Option<Millis>)> {
    let ttl = match get(headers, TTL)? {
        None => None,
        Some(v) => Some(
            strict_decimal(v.trim())
                .filter(|t| *t <= 100 * 365 * 86_400)
                .ok_or_else(|| StreamError::bad_request("Stream-TTL must be a non-negative integer number of seconds without leading zeros"))?,
        ),
    };
    let at = match get(headers, EXPIRES_AT)? {
        None => None,
        Some(v) => Some(crate::time::parse_rfc3339(v).ok_or_else(|| {
            StreamError::bad_request("Stream-Expires-At must be an RFC 3339 timestamp")
        })?),
    };
    if ttl.is_some() && at.is_some() {
        return Err(StreamError::bad_request(
            "send either Stream-TTL or Stream-Expires-At, not both",
        ));
    }
    Ok((ttl, at))
}

/// `Sessiond-Durability: unconfirmed` opts an append out of waiting for the sync (acknowledged
/// once its place in the log is fixed; readers still see it only once durable); absent or
/// `confirmed` is the durable default.
pub fn durability(headers: &HeaderMap) -> StreamResult<sessiond_store::Durability> {
    use sessiond_store::Durability;
    match get(headers, &DURABILITY_NAME)?.map(str::trim) {
        None => Ok(Durability::Confirmed),
        Some(v) if v.eq_ignore_ascii_case("confirmed") => Ok(Durability::Confirmed),
        Some(v) if v.eq_ignore_ascii_case("unconfirmed") => Ok(Durability::Unconfirmed),
        Some(_) => Err(StreamError::bad_request(
            "Sessiond-Durability must be `confirmed` or `unconfirmed`",
        )),
    }
}

/// `Stream-Seq`, at most `max_bytes` long.
pub fn stream_seq(headers: &HeaderMap, max_bytes: usize) -> StreamResult<Option<String>> {
    let seq = get(headers, &SEQ_NAME)?;
    if seq.is_some_and(|s| s.len() > max_bytes) {
        return Err(StreamError::bad_request(format!(
            "Stream-Seq is longer than {max_bytes} bytes"
        )));
    }
    Ok(seq.map(str::to_owned))
}

/// `Producer-Id`/`-Epoch`/`-Seq`: all three or none; the id at most `max_id_bytes` long.
pub fn producer(headers: &HeaderMap, max_id_bytes: usize) -> StreamResult<Option<ProducerTuple>> {
    let id = get(headers, &PRODUCER_ID_NAME)?;
    let epoch = get(headers, &PRODUCER_EPOCH_NAME)?;
    let seq = get(headers, &PRODUCER_SEQ_NAME)?;
    let (id, epoch, seq) = match (id, epoch, seq) {
        (None, None, None) => return Ok(None),
        (Some(i), Some(e), Some(s)) => (i, e, s),
        _ => {
            return Err(StreamError::bad_request(
                "Producer-Id, Producer-Epoch and Producer-Seq must be sent together",
            ))
        }
    };
    if id.trim().is_empty() {
        return Err(StreamError::bad_request("Producer-Id must not be empty"));
    }
    if id.len() > max_id_bytes {
        return Err(StreamError::bad_request(format!(
            "Producer-Id is longer than {max_id_bytes} bytes"
        )));
    }
    let number = |name: &str, v: &str| {
        let v = v.trim();
        v.parse::<u64>()
            .ok()
            .filter(|n| v.bytes().all(|b| b.is_ascii_digit()) && *n < (1u64 << 53))
            .ok_or_else(|| {
                StreamError::bad_request(format!("{name} must be an integer in 0..2^53"))
            })
    };
    Ok(Some(ProducerTuple {
        id: id.to_owned(),
        epoch: number("Producer-Epoch", epoch)?,
        seq: number("Producer-Seq", seq)?,
    }))
}

/// Validates the stream name in a request path.
pub fn stream_name(path: &str, max: usize) -> StreamResult<&str> {
    let name = path
        .strip_prefix(STREAM_PREFIX)
        .ok_or_else(StreamError::not_found)?;
    if name.is_empty() {
        return Err(StreamError::bad_request("stream name is empty"));
    }
    if name.len() > max {
        return Err(StreamError::bad_request(format!(
            "stream name longer than {max} bytes"
        )));
    }
    if name.bytes().any(|b| b.is_ascii_control())
        || name
            .split('/')
            .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err(StreamError::bad_request(
            "stream name has an empty, `.` or `..` segment or a control character",
        ));
    }
    if name == "__ds" || name.starts_with("__ds/") {
        return Err(StreamError::new(
            StatusCode::NOT_IMPLEMENTED,
            "not_implemented",
            "the reserved __ds control APIs are not served yet",
        ));
    }
    Ok(name)
}

/// Security and CORS headers on every stream response (errors, SSE included), and the answer
/// to CORS preflights: a middleware step (`step::layer(CommonHeaders)`).
pub struct CommonHeaders;

const NOSNIFF: HeaderName = HeaderName::from_static("x-content-type-options");
const CORP: HeaderName = HeaderName::from_static("cross-origin-resource-policy");

impl sessiond_http::step::Step for CommonHeaders {
    /// (a preflight, a HEAD)
    type Seen = (bool, bool);

    fn before(&self, request: &mut Request) -> ((bool, bool), Option<Response>) {
        let preflight = request.method() == Method::OPTIONS;
        let is_head = request.method() == Method::HEAD;
        let answer = preflight.then(|| {
            let mut r = Response::new(axum::body::Body::empty());
            *r.status_mut() = axum::http::StatusCode::NO_CONTENT;
            r
        });
        ((preflight, is_head), answer)
    }

    fn after(&self, (preflight, is_head): (bool, bool), mut response: Response) -> Response {
        use axum::http::header;
        let h = response.headers_mut();
        h.insert(NOSNIFF, HeaderValue::from_static("nosniff"));
        h.insert(CORP, HeaderValue::from_static("cross-origin"));
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSED),
        );
        if preflight {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static(METHODS),
            );
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static(ALLOWED),
            );
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("86400"),
            );
        }
        if is_head {
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An append skips its header lookups when this says no: every name it reads must count.
    #[test]
    fn every_header_an_append_reads_counts() {
        let read = [
            CLOSED_NAME,
            DURABILITY_NAME,
            SEQ_NAME,
            PRODUCER_ID_NAME,
            PRODUCER_EPOCH_NAME,
            PRODUCER_SEQ_NAME,
            TRIM_BEFORE_NAME,
            COMPACT_BEFORE_NAME,
        ];
        for name in read {
            let mut h = HeaderMap::new();
            h.insert(
                axum::http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain"),
            );
            h.insert(name.clone(), HeaderValue::from_static("1"));
            assert!(any_append_header(&h), "{name}");
        }
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain"),
        );
        h.insert("x-request-id", HeaderValue::from_static("1"));
        assert!(!any_append_header(&h));
    }

    #[test]
    fn ttl_is_strict() {
        for bad in ["03600", "+3600", "3600.0", "3.6e3", "-1", "abc", ""] {
            let mut h = HeaderMap::new();
            h.insert(TTL, HeaderValue::from_static(bad));
            assert!(expiry(&h).is_err(), "{bad}");
        }
        let mut h = HeaderMap::new();
        h.insert(TTL, HeaderValue::from_static("0"));
        assert_eq!(expiry(&h).ok(), Some((Some(0), None)));
    }
}
