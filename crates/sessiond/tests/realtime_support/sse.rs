//! A minimal SSE client for the realtime tests: `/v1/realtime/sse` read event by event from a
//! streaming response, each wait bounded by [`WAIT`].

use serde_json::Value;

use super::WAIT;
use crate::common::TestServer;

/// A minimal SSE reader over a streaming reqwest response.
pub struct SseReader {
    response: reqwest::Response,
    buffer: String,
}

/// One parsed event.
#[derive(Debug)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<String>,
    pub data: Value,
}

impl SseReader {
    pub async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut event, mut id, mut data) = (String::new(), None, String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_string());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if event.is_empty() && data.is_empty() {
                    continue; // a keep-alive comment
                }
                return Some(SseEvent {
                    event,
                    id,
                    data: serde_json::from_str(&data).unwrap_or(Value::Null),
                });
            }
            let chunk = tokio::time::timeout(WAIT, self.response.chunk())
                .await
                .expect("SSE event in time")
                .unwrap()?;
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// The next event named `event`, skipping others (panics if the stream ends first).
    pub async fn until(&mut self, event: &str) -> SseEvent {
        loop {
            let got = self.next().await.expect("stream ended");
            if got.event == event {
                return got;
            }
        }
    }

    pub async fn expect(&mut self, event: &str) -> SseEvent {
        let got = self.next().await.expect("stream ended");
        assert_eq!(got.event, event, "{got:?}");
        got
    }
}

pub async fn open(
    s: &TestServer,
    query: &str,
    last_id: Option<&str>,
) -> Result<SseReader, (u16, Value)> {
    let mut req = s
        .get(&format!("/v1/realtime/sse?{query}"))
        .header("accept", "text/event-stream");
    if let Some(id) = last_id {
        req = req.header("last-event-id", id);
    }
    let response = req.send().await.unwrap();
    let status = response.status().as_u16();
    if status != 200 {
        let body = response.json().await.unwrap_or(Value::Null);
        return Err((status, body));
    }
    Ok(SseReader {
        response,
        buffer: String::new(),
    })
}
