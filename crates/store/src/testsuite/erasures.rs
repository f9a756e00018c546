//! The erasure list keeps each hashed id once, with its first time, and survives in the
//! engine (other runs may share it: checks look only at this run's entries).

use super::unique;
use crate::{erasure_hash, Stores};

pub(super) async fn erasure_list(s: &Stores) {
    let first = erasure_hash(&unique("erased-a"));
    let second = erasure_hash(&unique("erased-b"));
    let at = crate::now_ms();
    s.erasures
        .record_erasure(&first, at)
        .await
        .expect("store call");
    s.erasures
        .record_erasure(&second, at + 5)
        .await
        .expect("store call");
    // Recording again keeps the first time.
    s.erasures
        .record_erasure(&first, at + 10)
        .await
        .expect("store call");
    let list = s.erasures.erasures().await.expect("store call");
    let ours: Vec<&(String, i64)> = list
        .iter()
        .filter(|(hash, _)| *hash == first || *hash == second)
        .collect();
    assert_eq!(
        ours,
        vec![&(first.clone(), at), &(second.clone(), at + 5)],
        "each entry once, with its first time, oldest first"
    );
    assert!(
        list.windows(2).all(|w| w[0].1 <= w[1].1),
        "the list is ordered by time"
    );
    assert_eq!(first.len(), 43, "base64url of 32 bytes, no padding");
}
