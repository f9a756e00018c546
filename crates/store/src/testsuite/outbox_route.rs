//! Routed events (`Outbox::outbox_route`): an engine that routes writes the route's appends in
//! the event's own write, at the stream's stored tail (creating it from the route's metadata),
//! queues only the rest, announces the appended paths once the write is answered, and keeps
//! its first route; an engine that does not route keeps queuing events whole.

use std::sync::{Arc, Mutex, PoisonError};

use super::outbox::ours;
use super::{session, unique, C};
use crate::streams::StreamWake;
use crate::{OutboxRoute, Result, Routed, RoutedAppend, Stores, StreamMeta};

/// Routes the events that start with `tag`: `"m"` to `<tag>/s`, the rest queued as
/// `<tag>:rest`; other events are queued whole.
struct Tagged {
    tag: String,
}

impl OutboxRoute for Tagged {
    fn split(&self, event: &[u8]) -> Routed {
        if !event.starts_with(self.tag.as_bytes()) {
            return Routed {
                appends: Vec::new(),
                queue: Some(event.to_vec()),
            };
        }
        Routed {
            appends: vec![RoutedAppend {
                path: format!("{}/s", self.tag),
                data: br#""m""#.to_vec(),
            }],
            queue: Some(format!("{}:rest", self.tag).into_bytes()),
        }
    }

    fn new_stream(&self, path: &str) -> Result<StreamMeta> {
        Ok(StreamMeta {
            path: path.to_owned(),
            tail: 99,
            start: 99,
            expires_at: None,
            state: b"new".to_vec(),
        })
    }
}

pub(super) async fn outbox_route(s: &Stores) {
    let tag = unique("route");
    let route = Arc::new(Tagged { tag: tag.clone() });
    let event = || Some(format!("{tag}:event").into_bytes());
    let rec = session(&unique("route-s"), Some("route-user"));
    if !s.outbox.outbox_route(route) {
        assert!(s
            .sessions
            .insert_session_with(&rec, event(), C)
            .await
            .expect("insert"));
        let queued: Vec<String> = ours(s, &tag).await.into_iter().map(|(_, e)| e).collect();
        assert_eq!(queued, [format!("{tag}:event")], "queued whole");
        return;
    }
    let woken: Arc<Mutex<Vec<String>>> = Arc::default();
    if let Some(wakes) = &s.stream_wakes {
        let woken = woken.clone();
        wakes.listen(Arc::new(move |wake| {
            if let StreamWake::Changed(path) = wake {
                woken
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(path.to_owned());
            }
        }));
    }
    let path = format!("{tag}/s");
    assert!(s
        .sessions
        .insert_session_with(&rec, event(), C)
        .await
        .expect("insert"));
    // A refused write routes nothing.
    assert!(!s
        .sessions
        .insert_session_with(&rec, event(), C)
        .await
        .expect("insert"));
    s.outbox
        .outbox_push(
            vec![event().unwrap_or_default()],
            crate::Durability::Unconfirmed,
        )
        .await
        .expect("push");
    let queued: Vec<String> = ours(s, &tag).await.into_iter().map(|(_, e)| e).collect();
    assert_eq!(queued, [format!("{tag}:rest"), format!("{tag}:rest")]);
    let streams = s
        .streams
        .as_ref()
        .expect("an engine that routes stores streams");
    let meta = streams
        .stream_meta(&path)
        .await
        .expect("meta")
        .expect("created");
    assert_eq!((meta.tail, meta.start, meta.state), (6, 0, b"new".to_vec()));
    let chunks = streams.read_chunks(&path, 0, 100).await.expect("read");
    let chunks: Vec<(u64, &[u8])> = chunks.iter().map(|c| (c.offset, &c.data[..])).collect();
    assert_eq!(chunks, [(0, &br#""m""#[..]), (3, &br#""m""#[..])]);
    if s.stream_wakes.is_some() {
        let woken = woken.lock().unwrap_or_else(PoisonError::into_inner).clone();
        assert_eq!(
            woken,
            [path.clone(), path],
            "each append announced once written"
        );
    }
    let again = Arc::new(Tagged {
        tag: unique("route"),
    });
    assert!(!s.outbox.outbox_route(again), "the first route stays");
}
