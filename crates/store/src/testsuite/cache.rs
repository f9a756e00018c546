//! The shared suite's checks of `CacheStore` (values, expiry, exact clears, namespace limit).

use super::{session, unique, C, HOUR};
use crate::cache::{CacheEntry, CachePut};
use crate::{now_ms, Stores};

pub(super) async fn cache_values_and_expiry(s: &Stores) {
    let ns = unique("ns");
    let now = now_ms();
    for (i, value) in ["0", "false", "\"\"", "null", r#"{"x":[1,2]}"#]
        .iter()
        .enumerate()
    {
        let key = format!("k{i}");
        let entry = CacheEntry {
            value: value.to_string(),
            stored_at: now - 5,
            expires_at: Some(now + HOUR),
        };
        assert_eq!(
            s.cache
                .cache_put(&ns, &key, &entry, usize::MAX, now, C)
                .await
                .expect("store call"),
            CachePut::Stored
        );
        let got = s.cache.cache_get(&ns, &key, now).await.expect("store call");
        assert_eq!(
            got.as_ref(),
            Some(&entry),
            "value {value} comes back as stored"
        );
    }
    assert!(
        s.cache
            .cache_get(&ns, "k0", now + HOUR)
            .await
            .expect("store call")
            .is_none(),
        "expired entry is a miss"
    );
    let forever = CacheEntry {
        value: "1".into(),
        stored_at: now,
        expires_at: None,
    };
    s.cache
        .cache_put(&ns, "forever", &forever, usize::MAX, now, C)
        .await
        .expect("store call");
    assert!(s
        .cache
        .cache_get(&ns, "forever", now + 1000 * HOUR)
        .await
        .expect("store call")
        .is_some());
    assert!(s
        .cache
        .cache_delete(&ns, "k1", now, C)
        .await
        .expect("store call"));
    assert!(!s
        .cache
        .cache_delete(&ns, "k1", now, C)
        .await
        .expect("store call"));
    assert!(s
        .cache
        .cache_get(&ns, "k1", now)
        .await
        .expect("store call")
        .is_none());
    // The cache keyspace is not the session keyspace.
    let sid = unique("shared-key");
    s.sessions
        .insert_session(&session(&sid, None), C)
        .await
        .expect("store call");
    assert!(s
        .cache
        .cache_get(&ns, &sid, now)
        .await
        .expect("store call")
        .is_none());
    s.cache
        .cache_put(&ns, &sid, &forever, usize::MAX, now, C)
        .await
        .expect("store call");
    assert!(s
        .cache
        .cache_delete(&ns, &sid, now, C)
        .await
        .expect("store call"));
    assert!(s
        .sessions
        .get_session(&sid, now)
        .await
        .expect("store call")
        .is_some());
    // Sweeping removes only expired entries.
    for _ in 0..1000 {
        if s.cache
            .sweep_cache(now + HOUR, 50)
            .await
            .expect("store call")
            == 0
        {
            break;
        }
    }
    assert!(s
        .cache
        .cache_get(&ns, "forever", now)
        .await
        .expect("store call")
        .is_some());
}

pub(super) async fn cache_clear_is_exact(s: &Stores) {
    let a = unique("clear");
    let ab = format!("{a}b");
    let now = now_ms();
    let e = CacheEntry {
        value: "true".into(),
        stored_at: now,
        expires_at: Some(now + HOUR),
    };
    for k in ["calendars", "events:x", "preferences"] {
        s.cache
            .cache_put(&a, k, &e, usize::MAX, now, C)
            .await
            .expect("store call");
        s.cache
            .cache_put(&ab, k, &e, usize::MAX, now, C)
            .await
            .expect("store call");
    }
    assert_eq!(
        s.cache.cache_clear(&a, now, C).await.expect("store call"),
        3
    );
    assert!(s
        .cache
        .cache_get(&a, "calendars", now)
        .await
        .expect("store call")
        .is_none());
    assert!(
        s.cache
            .cache_get(&ab, "calendars", now)
            .await
            .expect("store call")
            .is_some(),
        "clearing `a` spares `ab`"
    );
    assert_eq!(
        s.cache.cache_clear(&a, now, C).await.expect("store call"),
        0
    );
}

pub(super) async fn cache_namespace_limit(s: &Stores) {
    let ns = unique("limit");
    let now = now_ms();
    let e = CacheEntry {
        value: "1".into(),
        stored_at: now,
        expires_at: Some(now + HOUR),
    };
    assert_eq!(
        s.cache
            .cache_put(&ns, "a", &e, usize::MAX, now, C)
            .await
            .expect("store call"),
        CachePut::Stored
    );
    assert_eq!(
        s.cache
            .cache_put(&ns, "b", &e, 0, now, C)
            .await
            .expect("store call"),
        CachePut::Stored,
        "an existing namespace takes more keys at any limit"
    );
    let fresh = unique("limit-new");
    assert_eq!(
        s.cache
            .cache_put(&fresh, "a", &e, 1, now, C)
            .await
            .expect("store call"),
        CachePut::NamespaceLimit
    );
    assert!(
        s.cache
            .cache_get(&fresh, "a", now)
            .await
            .expect("store call")
            .is_none(),
        "refused write left nothing"
    );
    // Reserved (`_…`) namespaces are a separate budget: the native namespace above does not
    // count against them, and they do not count against native ones.
    let reserved = format!("_{}", unique("limit-reserved"));
    assert_eq!(
        s.cache
            .cache_put(&reserved, "a", &e, 1, now, C)
            .await
            .expect("store call"),
        CachePut::Stored,
        "native namespaces do not count against the reserved budget"
    );
    let reserved_two = format!("_{}", unique("limit-reserved"));
    assert_eq!(
        s.cache
            .cache_put(&reserved_two, "a", &e, 1, now, C)
            .await
            .expect("store call"),
        CachePut::NamespaceLimit,
        "the reserved budget counts reserved namespaces"
    );
    s.cache
        .cache_clear(&reserved, now, C)
        .await
        .expect("store call");
    s.cache.cache_clear(&ns, now, C).await.expect("store call");
}
