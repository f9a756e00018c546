//! kill -9 under mixed load, many times: the real binary on SQLite is killed at a random
//! moment while session merges, idempotent-producer stream appends, cache writes and
//! middleware decisions are in flight, restarted, and checked: every acknowledged write is
//! there, a write in flight at the kill is either wholly there or wholly absent, a producer's
//! retry of its unacknowledged append is never applied twice, and a middleware cookie still
//! names its client.
//!
//! `KILL9_ROUNDS` sets the number of kills (10 by default, well under a minute);
//! `scripts/kill9-soak` runs 100 against the release binary (`TEST_SESSIOND_BIN`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/binary.rs"]
mod binary;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use binary::serve;
use reqwest::Client;
use serde_json::{json, Value};

const WORKERS: usize = 6;
const SIGNING_KEY: &str = "kill9-soak-signing-key-with-more-than-32-bytes";

/// A tiny deterministic generator (xorshift), seeded from the clock and printed, so a failing
/// run can be repeated with `KILL9_SEED`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A value acknowledged by the server, and one written but not (yet) acknowledged.
#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    acked: Option<u64>,
    pending: Option<u64>,
}

impl Slot {
    /// After a restart the stored value must be the acknowledged one or the pending one.
    fn settle(&mut self, seen: Option<u64>, what: &str) {
        assert!(
            seen == self.acked || (self.pending.is_some() && seen == self.pending),
            "{what}: stored {seen:?}, acknowledged {:?}, in flight {:?}",
            self.acked,
            self.pending
        );
        *self = Slot {
            acked: seen,
            pending: None,
        };
    }
}

/// One worker's entities (no two workers touch the same one) and what it knows of them.
#[derive(Debug, Default)]
struct Worker {
    id: usize,
    rng: u64,
    counter: u64,
    sessions: BTreeMap<String, Slot>,
    cache: BTreeMap<String, Slot>,
    /// Producer sequence numbers acknowledged (contiguous from 0) and the one in flight.
    next_seq: u64,
    pending_seq: Option<u64>,
    /// Middleware clients: cookie header → cID.
    clients: Vec<(String, String)>,
}

impl Worker {
    fn stream(&self) -> String {
        format!("/v1/stream/kill9/w{}", self.id)
    }

    /// Runs operations until one fails (the server was killed).
    async fn run(mut self, http: Client, base: String) -> Worker {
        let mut rng = Rng(self.rng);
        loop {
            self.counter += 1;
            let ok = match rng.below(5) {
                0 => self.create_session(&http, &base).await,
                1 => self.patch_session(&http, &base, &mut rng).await,
                2 => self.put_cache(&http, &base, &mut rng).await,
                3 => self.append(&http, &base).await,
                _ => self.decide(&http, &base).await,
            };
            if !ok {
                self.rng = rng.0;
                return self;
            }
        }
    }

    async fn create_session(&mut self, http: &Client, base: &str) -> bool {
        // One user per session: a user's oldest sessions are evicted past a per-user cap.
        let user = format!("w{}-{}", self.id, self.counter);
        let body = json!({"user_id": user, "data": {"n": 0}});
        // An unacknowledged create is not tracked: its id was never learned.
        let Ok(res) = http
            .post(format!("{base}/v1/sessions"))
            .json(&body)
            .send()
            .await
        else {
            return false;
        };
        let Ok(created) = res.json::<Value>().await else {
            return false;
        };
        let id = created["id"].as_str().expect("session id").to_owned();
        let slot = Slot {
            acked: Some(0),
            pending: None,
        };
        self.sessions.insert(id, slot);
        true
    }

    async fn patch_session(&mut self, http: &Client, base: &str, rng: &mut Rng) -> bool {
        if self.sessions.is_empty() {
            return true;
        }
        let at = rng.below(self.sessions.len() as u64) as usize;
        let (id, slot) = self.sessions.iter_mut().nth(at).expect("index in range");
        let value = self.counter;
        slot.pending = Some(value);
        let patch = json!({"data": {"n": value}});
        match http
            .patch(format!("{base}/v1/sessions/{id}"))
            .json(&patch)
            .send()
            .await
        {
            Ok(res) if res.status() == 200 => {
                *slot = Slot {
                    acked: Some(value),
                    pending: None,
                };
                true
            }
            Ok(res) => panic!("patch answered {}", res.status()),
            Err(_) => false,
        }
    }

    async fn put_cache(&mut self, http: &Client, base: &str, rng: &mut Rng) -> bool {
        let key = format!("w{}-k{}", self.id, rng.below(8));
        let value = self.counter;
        let slot = self.cache.entry(key.clone()).or_default();
        slot.pending = Some(value);
        match http
            .put(format!("{base}/v1/cache/kill9/{key}"))
            .json(&json!({"data": value}))
            .send()
            .await
        {
            Ok(res) if res.status() == 204 => {
                *slot = Slot {
                    acked: Some(value),
                    pending: None,
                };
                true
            }
            Ok(res) => panic!("cache put answered {}", res.status()),
            Err(_) => false,
        }
    }

    async fn send_append(&self, http: &Client, base: &str, seq: u64) -> Option<u16> {
        let res = http
            .post(format!("{base}{}", self.stream()))
            .header("content-type", "text/plain")
            .header("producer-id", format!("w{}", self.id))
            .header("producer-epoch", "0")
            .header("producer-seq", seq.to_string())
            .body(format!("{seq}\n"))
            .send()
            .await
            .ok()?;
        Some(res.status().as_u16())
    }

    async fn append(&mut self, http: &Client, base: &str) -> bool {
        let seq = self.next_seq;
        self.pending_seq = Some(seq);
        match self.send_append(http, base, seq).await {
            Some(200 | 204) => {
                self.next_seq += 1;
                self.pending_seq = None;
                true
            }
            Some(status) => panic!("append {seq} answered {status}"),
            None => false,
        }
    }

    async fn decide(&mut self, http: &Client, base: &str) -> bool {
        let Some((cookie, cid)) = decide_once(http, base, None).await else {
            return false;
        };
        // The first return stores the client; its cookie must keep naming it from then on.
        let Some((_, again)) = decide_once(http, base, Some(&cookie)).await else {
            return false;
        };
        assert_eq!(again, cid, "a returning client keeps its cID");
        self.clients.push((cookie, cid));
        true
    }

    /// After a restart: every acknowledged write is there, in-flight ones whole or absent.
    async fn verify(&mut self, http: &Client, base: &str) {
        for (id, slot) in &mut self.sessions {
            let res = http
                .get(format!("{base}/v1/sessions/{id}"))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200, "acknowledged session {id}");
            let body: Value = res.json().await.unwrap();
            slot.settle(body["data"]["n"].as_u64(), &format!("session {id}"));
        }
        for (key, slot) in &mut self.cache {
            let res = http
                .get(format!("{base}/v1/cache/kill9/{key}"))
                .send()
                .await
                .unwrap();
            let seen = match res.status().as_u16() {
                200 => Some(res.json::<Value>().await.unwrap().as_u64().expect("number")),
                404 => None,
                other => panic!("cache {key} answered {other}"),
            };
            slot.settle(seen, &format!("cache {key}"));
        }
        // The stream holds exactly the acknowledged appends, plus the one in flight if it
        // landed; the producer's retry of that one is applied at most once.
        let lines = read_stream(http, base, &self.stream()).await;
        let expected: Vec<u64> = (0..self.next_seq).collect();
        let landed = matches!(self.pending_seq, Some(seq) if lines.len() as u64 == seq + 1);
        let mut want = expected.clone();
        if landed {
            want.push(self.next_seq);
        }
        assert_eq!(lines, want, "stream {} after the kill", self.stream());
        if let Some(seq) = self.pending_seq.take() {
            let status = self.send_append(http, base, seq).await;
            assert!(
                matches!(status, Some(200 | 204)),
                "retry of {seq}: {status:?}"
            );
            self.next_seq = seq + 1;
            let lines = read_stream(http, base, &self.stream()).await;
            let want: Vec<u64> = (0..self.next_seq).collect();
            assert_eq!(lines, want, "a retried append is applied once");
        }
        for (cookie, cid) in &self.clients {
            let (_, seen) = decide_once(http, base, Some(cookie))
                .await
                .expect("decide after restart");
            assert_eq!(&seen, cid, "a middleware cookie still names its client");
        }
    }
}

/// One middleware decision; returns the cookie header for the next request and the cID.
async fn decide_once(http: &Client, base: &str, cookie: Option<&str>) -> Option<(String, String)> {
    let mut body = json!({"ip": "203.0.113.9", "user_agent": "kill9-soak"});
    if let Some(cookie) = cookie {
        body["cookie"] = json!(cookie);
    }
    let res = http
        .post(format!("{base}/v1/middleware/decide"))
        .json(&body)
        .send()
        .await
        .ok()?;
    assert_eq!(res.status(), 200, "decide");
    let answer: Value = res.json().await.ok()?;
    assert_eq!(answer["session"]["isFallback"], false, "{answer}");
    let cid = answer["session"]["cID"].as_str()?.to_owned();
    let set: Vec<String> = answer["set_cookies"]
        .as_array()?
        .iter()
        .filter_map(|c| c.as_str()?.split(';').next().map(str::to_owned))
        .collect();
    let header = match (set.is_empty(), cookie) {
        (true, Some(old)) => old.to_owned(),
        _ => set.join("; "),
    };
    Some((header, cid))
}

/// The whole text of a stream, as the numbers on its lines.
async fn read_stream(http: &Client, base: &str, stream: &str) -> Vec<u64> {
    let mut text = String::new();
    let mut offset = "-1".to_owned();
    loop {
        let res = http
            .get(format!("{base}{stream}?offset={offset}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "read {stream}");
        let done = res.headers().contains_key("stream-up-to-date");
        let next = res.headers()["stream-next-offset"]
            .to_str()
            .unwrap()
            .to_owned();
        text.push_str(&res.text().await.unwrap());
        if done {
            break;
        }
        offset = next;
    }
    text.lines().map(|l| l.parse().expect("a number")).collect()
}

fn start(dir: &Path, config: &Path) -> (std::process::Child, String) {
    let args = [
        OsStr::new("--config"),
        config.as_os_str(),
        OsStr::new("--engine"),
        OsStr::new("sqlite"),
        OsStr::new("--data-dir"),
        dir.as_os_str(),
    ];
    serve(args, &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_repeated_kill_9_under_mixed_load() {
    let rounds: usize = std::env::var("KILL9_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let seed = std::env::var("KILL9_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    eprintln!("kill9 soak: {rounds} kills, KILL9_SEED={seed}");
    let mut rng = Rng(seed);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let config = tmp.path().join("sessiond.toml");
    std::fs::write(
        &config,
        format!("[middleware]\nsigning_keys = [\"{SIGNING_KEY}\"]\n"),
    )
    .unwrap();
    let http = Client::new();
    let mut workers: Vec<Worker> = (0..WORKERS)
        .map(|id| Worker {
            id,
            rng: rng.next() | 1,
            ..Worker::default()
        })
        .collect();

    let (mut child, base) = start(&dir, &config);
    for w in &workers {
        let res = http
            .put(format!("{base}{}", w.stream()))
            .header("content-type", "text/plain")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
    }
    let mut base = base;
    for round in 0..rounds {
        let tasks: Vec<_> = workers
            .drain(..)
            .map(|w| tokio::spawn(w.run(http.clone(), base.clone())))
            .collect();
        // The kill lands at a random moment of the load (this wait is the experiment's
        // randomness, not a synchronization).
        tokio::time::sleep(Duration::from_millis(50 + rng.below(400))).await;
        child.kill().unwrap();
        child.wait().unwrap();
        for task in tasks {
            workers.push(task.await.expect("worker"));
        }
        (child, base) = start(&dir, &config);
        for w in &mut workers {
            w.verify(&http, &base).await;
        }
        let acked: u64 = workers.iter().map(|w| w.next_seq).sum();
        eprintln!("kill {}: verified ({acked} appends so far)", round + 1);
    }
    let total: usize = workers
        .iter()
        .map(|w| w.sessions.len() + w.cache.len() + w.clients.len())
        .sum();
    assert!(total > 0, "the load wrote something");
    child.kill().unwrap();
    child.wait().unwrap();
}
