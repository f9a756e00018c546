//! Routed events (`Outbox::outbox_route`): an engine that routes writes the route's appends in
//! the event's own write, at the stream's stored tail (creating it from the route's metadata),
//! gives the route the objects of that transaction (`RouteObjects`), queues only the rest,
//! runs the route's `committed` and announces the appended paths once the write is answered,
//! and keeps its first route; an engine that does not route keeps queuing events whole.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::outbox::ours;
use super::{session, unique, C};
use crate::streams::StreamWake;
use crate::{OutboxRoute, Result, RouteObjects, Routed, RoutedAppend, Stores, StreamMeta};

/// Routes the events that start with `tag`: `"m"` to `<tag>/s` when the route's object
/// `(route-test, <tag>)` was absent (it creates it in the event's transaction), `"p"` when it
/// was present, the rest queued as `<tag>:rest`; other events are queued whole. Counts the
/// routed events' `committed` calls.
struct Tagged {
    tag: String,
    committed: Arc<AtomicUsize>,
}

const KIND: &str = "route-test";

impl OutboxRoute for Tagged {
    fn split(&self, event: &[u8], objects: &mut dyn RouteObjects) -> Routed {
        if !event.starts_with(self.tag.as_bytes()) {
            return Routed {
                queue: Some(event.to_vec()),
                ..Routed::default()
            };
        }
        let found = objects
            .load(KIND, &self.tag)
            .expect("load in the transaction");
        let created = objects
            .create(KIND, &self.tag, b"1")
            .expect("create in the transaction");
        assert_eq!(found.is_none(), created, "created only when absent");
        let committed = self.committed.clone();
        Routed {
            appends: vec![RoutedAppend {
                path: format!("{}/s", self.tag),
                data: if created { br#""m""# } else { br#""p""# }.to_vec(),
            }],
            queue: Some(format!("{}:rest", self.tag).into_bytes()),
            committed: Some(Box::new(move || {
                committed.fetch_add(1, Ordering::SeqCst);
            })),
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
    let committed = Arc::new(AtomicUsize::new(0));
    let route = Arc::new(Tagged {
        tag: tag.clone(),
        committed: committed.clone(),
    });
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
    assert_eq!(committed.load(Ordering::SeqCst), 1, "run before the answer");
    let object = s.objects.load_object(KIND, &tag).await.expect("load");
    assert_eq!(object.as_deref(), Some(&b"1"[..]), "created with the event");
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
    assert_eq!(
        (meta.tail, meta.start, &meta.state[..]),
        (6, 0, &b"new"[..])
    );
    let chunks = streams.read_chunks(&path, 0, 100).await.expect("read");
    let chunks: Vec<(u64, &[u8])> = chunks.iter().map(|c| (c.offset, &c.data[..])).collect();
    assert_eq!(chunks, [(0, &br#""m""#[..]), (3, &br#""p""#[..])]);
    assert_eq!(committed.load(Ordering::SeqCst), 2, "once per routed event");
    if s.stream_wakes.is_some() {
        let woken = woken.lock().unwrap_or_else(PoisonError::into_inner).clone();
        assert_eq!(
            woken,
            [path.clone(), path.clone()],
            "each append announced once written"
        );
    }
    interleaved_with_commits(s, &tag, &path, meta).await;
    let again = Arc::new(Tagged {
        tag: unique("route"),
        committed,
    });
    assert!(!s.outbox.outbox_route(again), "the first route stays");
}

/// Routed appends and the capability's own commits to one stream, alternating: each lands at
/// the tail the other left (an engine that remembers stream tails across writes keeps them
/// true through routed appends), and a commit that expects the tail before a routed append
/// loses.
async fn interleaved_with_commits(s: &Stores, tag: &str, path: &str, mut meta: StreamMeta) {
    let streams = s.streams.as_ref().expect("streams");
    let chunk = |offset: u64| crate::streams::StreamChunk {
        offset,
        data: b"x".to_vec(),
    };
    let push = || async {
        let event = format!("{tag}:event").into_bytes();
        s.outbox.outbox_push(vec![event], C).await.expect("push");
    };
    for tail in [6, 10] {
        meta.tail = tail + 1;
        let written = streams
            .commit(path, tail, &[chunk(tail)], &meta, C)
            .await
            .expect("commit");
        assert_eq!(written, crate::Commit::Written, "at the routed tail {tail}");
        push().await;
    }
    meta.tail = 15;
    let stale = streams
        .commit(path, 11, &[chunk(11)], &meta, C)
        .await
        .expect("commit");
    assert_eq!(
        stale,
        crate::Commit::Conflict,
        "the routed append moved the tail"
    );
    let chunks = streams.read_chunks(path, 0, 100).await.expect("read");
    let offsets: Vec<u64> = chunks.iter().map(|c| c.offset).collect();
    assert_eq!(offsets, [0, 3, 6, 7, 10, 11]);
    let stored = streams
        .stream_meta(path)
        .await
        .expect("meta")
        .expect("there");
    assert_eq!(stored.tail, 14);
}
