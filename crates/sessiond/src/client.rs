//! The operator commands that talk to a running server over its `/v1` API (`sessiond
//! sessions …`, `sessiond streams …`): the same routes and credentials as any other client, so
//! the CLI can do nothing an API key could not.
//!
//! Why `SESSIONCTL_URL` / `SESSIONCTL_API_KEY` and not `SESSIOND_*`: the server reads every
//! `SESSIOND_*` variable as configuration and refuses unknown keys, so a client variable under
//! that prefix, exported in an operator's shell, would stop `sessiond serve` from starting.
//! The key comes from the environment only (a command-line argument shows up in `ps`).

use std::io::Write as _;

use anyhow::{bail, Context as _};
use base64::Engine as _;
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;

/// Environment variable with the server's base URL.
pub const URL_ENV: &str = "SESSIONCTL_URL";
/// Environment variable with the API key sent as `Authorization: Bearer`.
pub const KEY_ENV: &str = "SESSIONCTL_API_KEY";
/// Base URL when neither `--url` nor [`URL_ENV`] is given.
pub const DEFAULT_URL: &str = "http://127.0.0.1:7700";

/// A connection to one server.
pub struct Client {
    base: Url,
    key: Option<String>,
    http: reqwest::Client,
}

impl Client {
    /// `url`: `--url`, else [`URL_ENV`], else [`DEFAULT_URL`]; the key from [`KEY_ENV`].
    pub fn new(url: Option<String>) -> anyhow::Result<Client> {
        let url = url
            .or_else(|| std::env::var(URL_ENV).ok())
            .unwrap_or_else(|| DEFAULT_URL.to_owned());
        let base = Url::parse(&url).with_context(|| format!("--url {url:?} is not a URL"))?;
        if base.cannot_be_a_base() || !matches!(base.scheme(), "http" | "https") {
            bail!("--url {url:?} must be an http:// or https:// URL");
        }
        let key = std::env::var(KEY_ENV).ok().filter(|k| !k.is_empty());
        let http = reqwest::Client::builder()
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Client { base, key, http })
    }

    /// The base URL with `segments` appended, each percent-encoded as one path segment.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    async fn send(&self, method: Method, url: Url) -> anyhow::Result<reqwest::Response> {
        let mut request = self.http.request(method, url.clone());
        if let Some(key) = &self.key {
            request = request.bearer_auth(key);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body = response.bytes().await.unwrap_or_default();
        let message = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        let hint = if status == StatusCode::UNAUTHORIZED && self.key.is_none() {
            format!(" (set {KEY_ENV})")
        } else {
            String::new()
        };
        let message = if message.is_empty() {
            String::new()
        } else {
            format!(": {message}")
        };
        bail!("{status} from {url}{message}{hint}")
    }

    async fn json(&self, method: Method, url: Url) -> anyhow::Result<Value> {
        let body = self.send(method, url).await?.bytes().await?;
        serde_json::from_slice(&body).context("the server answered with invalid JSON")
    }
}

fn out() -> std::io::StdoutLock<'static> {
    std::io::stdout().lock()
}

/// `sessiond sessions list --user U`: one line per session, oldest first.
pub async fn sessions_list(client: &Client, user: &str, json: bool) -> anyhow::Result<()> {
    let url = client.url(&["v1", "users", user, "sessions"]);
    let answer = client.json(Method::GET, url).await?;
    let mut out = out();
    if json {
        writeln!(out, "{answer}")?;
        return Ok(());
    }
    let sessions = answer["sessions"].as_array().cloned().unwrap_or_default();
    writeln!(out, "id\tcreated_at\tlast_seen_at\texpires_at\tdevice")?;
    for s in &sessions {
        writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}",
            s["id"].as_str().unwrap_or_default(),
            s["created_at"],
            s["last_seen_at"],
            s["expires_at"],
            s["device"]
        )?;
    }
    eprintln!("{} session(s) of {user}", sessions.len());
    Ok(())
}

/// `sessiond sessions revoke --user U`: ends every session of the user.
pub async fn sessions_revoke(client: &Client, user: &str) -> anyhow::Result<()> {
    let url = client.url(&["v1", "users", user, "sessions"]);
    let answer = client.json(Method::DELETE, url).await?;
    let mut out = out();
    for id in answer["ids"].as_array().into_iter().flatten() {
        writeln!(out, "{}", id.as_str().unwrap_or_default())?;
    }
    eprintln!("revoked {} session(s) of {user}", answer["revoked"]);
    Ok(())
}

/// `sessiond streams ls [PREFIX]`: every stream, following the listing's cursor to the end.
pub async fn streams_ls(
    client: &Client,
    prefix: &str,
    page: Option<u32>,
    json: bool,
) -> anyhow::Result<()> {
    let mut cursor: Option<String> = None;
    let mut count = 0usize;
    let mut out = out();
    loop {
        let mut url = client.url(&["v1", "streams"]);
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("prefix", prefix);
            if let Some(limit) = page {
                q.append_pair("limit", &limit.to_string());
            }
            if let Some(c) = &cursor {
                q.append_pair("cursor", c);
            }
        }
        let answer = client.json(Method::GET, url).await?;
        for s in answer["streams"].as_array().into_iter().flatten() {
            count += 1;
            if json {
                writeln!(out, "{s}")?;
            } else {
                writeln!(
                    out,
                    "{}\t{}\t{}\t{}",
                    s["path"].as_str().unwrap_or_default(),
                    s["content_type"].as_str().unwrap_or_default(),
                    s["bytes"],
                    if s["closed"] == true {
                        "closed"
                    } else {
                        "open"
                    }
                )?;
            }
        }
        match answer["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    eprintln!("{count} stream(s)");
    Ok(())
}

/// What `streams tail` prints from one SSE event.
fn print_data(data: &str, encoding: Encoding) -> anyhow::Result<()> {
    let mut out = out();
    match encoding {
        Encoding::Json => match serde_json::from_str::<Vec<Box<serde_json::value::RawValue>>>(data)
        {
            Ok(messages) => {
                for m in messages {
                    writeln!(out, "{}", m.get())?;
                }
            }
            Err(_) => writeln!(out, "{data}")?,
        },
        Encoding::Text => out.write_all(data.as_bytes())?,
        Encoding::Base64 => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(data)
                .context("the server sent invalid base64")?;
            out.write_all(&bytes)?;
        }
    }
    out.flush()?;
    Ok(())
}

#[derive(Clone, Copy)]
enum Encoding {
    Json,
    Text,
    Base64,
}

/// `sessiond streams tail PATH`: follows the stream over SSE from `offset` (`now` by default,
/// `-1` for the start), reconnecting where it left off, until the stream is closed.
pub async fn streams_tail(client: &Client, path: &str, offset: &str) -> anyhow::Result<()> {
    let mut stream_url = client.base.clone();
    let base_path = stream_url.path().trim_end_matches('/').to_owned();
    // The path goes in as given: it is the stream's name as in its URL (`streams ls` prints
    // it that way), already percent-encoded where needed.
    stream_url.set_path(&format!(
        "{base_path}/v1/stream/{}",
        path.trim_start_matches('/')
    ));
    // SSE answers are text/event-stream; the stream's own type says how to print the data.
    let head = client.send(Method::HEAD, stream_url.clone()).await?;
    let json = head
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.contains("json"));
    let mut offset = offset.to_owned();
    loop {
        let mut url = stream_url.clone();
        url.query_pairs_mut()
            .append_pair("offset", &offset)
            .append_pair("live", "sse");
        let mut response = client.send(Method::GET, url).await?;
        let encoding = match response
            .headers()
            .get("stream-sse-data-encoding")
            .and_then(|v| v.to_str().ok())
        {
            Some("base64") => Encoding::Base64,
            _ if json => Encoding::Json,
            _ => Encoding::Text,
        };
        let mut parser = SseParser::default();
        while let Some(chunk) = response.chunk().await.context("reading the event stream")? {
            for event in parser.push(&chunk) {
                match event.name.as_str() {
                    "data" => print_data(&event.data, encoding)?,
                    "control" => {
                        let control: Value = serde_json::from_str(&event.data)
                            .context("the server sent an invalid control event")?;
                        if let Some(next) = control["streamNextOffset"].as_str() {
                            offset = next.to_owned();
                        }
                        if control["streamClosed"] == true {
                            eprintln!("stream closed at {offset}");
                            return Ok(());
                        }
                    }
                    _ => {}
                }
            }
        }
        // The server ends SSE responses after `sse_reconnect_s`: resume where it stopped.
    }
}

/// One server-sent event.
struct Event {
    name: String,
    data: String,
}

/// Incremental `text/event-stream` parser (only what sessiond sends: `event:` and `data:`).
#[derive(Default)]
struct SseParser {
    buffer: Vec<u8>,
    name: String,
    data: Vec<String>,
}

impl SseParser {
    fn push(&mut self, chunk: &[u8]) -> Vec<Event> {
        self.buffer.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buffer.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line[..line.len() - 1]);
            let line = line.strip_suffix('\r').unwrap_or(&line);
            if line.is_empty() {
                if !self.data.is_empty() || !self.name.is_empty() {
                    events.push(Event {
                        name: std::mem::take(&mut self.name),
                        data: std::mem::take(&mut self.data).join("\n"),
                    });
                }
            } else if let Some(value) = field(line, "event") {
                self.name = value.to_owned();
            } else if let Some(value) = field(line, "data") {
                self.data.push(value.to_owned());
            }
        }
        events
    }
}

/// The value of `name: value` (one leading space stripped), if `line` is that field.
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let rest = line.strip_prefix(name)?.strip_prefix(':')?;
    Some(rest.strip_prefix(' ').unwrap_or(rest))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sse_parser_joins_lines_and_splits_events_across_chunks() {
        let mut p = SseParser::default();
        assert!(p.push(b"event: data\ndata:[1,\nda").is_empty());
        let events = p.push(b"ta:  2]\n\nevent: control\ndata:{}\n\n");
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].name, "data");
        assert_eq!(events[0].data, "[1,\n 2]");
        assert_eq!(events[1].name, "control");
        assert_eq!(events[1].data, "{}");
    }
}
