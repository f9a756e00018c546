//! The realtime bus on Redis ([`sessiond_store::RealtimeBus`]): what lets N sessiond nodes
//! share realtime channels.
//!
//! - **Publish = one script, one round trip.** Under the channel's hash tag, the script sets
//!   the epoch if absent, `HINCRBY`s the top offset, `XADD`s the message to the channel's
//!   Redis Stream with the offset as its entry id and `MAXLEN` = the cap, drops entries
//!   beyond `keep` that are older than the window (a few per call, so the cost stays
//!   constant), renews the TTL of both keys, and `PUBLISH`es the message with its offset and
//!   epoch. Redis runs scripts one at a time, so offsets are gap-free and every node receives
//!   one channel's messages in offset order.
//! - **Recovery = one script.** Epoch, top and `XRANGE` after an offset, atomically.
//! - **One subscriber connection per node**, on one pub/sub channel for every delivery
//!   (messages and signals): every node receives every publish, which is the simple choice
//!   for a handful of nodes (with Redis Cluster, `PUBLISH` reaches every shard anyway). The
//!   connection is re-established after any failure with a growing delay, and each
//!   (re)subscription is announced to the listeners as [`BusEvent::Resync`], since
//!   deliveries may have been missed meanwhile.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::Script;
use sessiond_store::realtime::{
    BusEvent, BusListener, BusMessage, History, HistoryLimits, RealtimeBus,
};
use sessiond_store::{Millis, Result, StoreError};

use crate::conn::Con;
use crate::keys::Keys;
use crate::{lock, map_err, redis_count};

/// KEYS: meta, log. ARGV: channel, payload, ts, new epoch, keep, window ms, max, ttl ms,
/// pub/sub channel. Returns {epoch, offset}.
const PUBLISH: &str = r"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[4]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
end
local offset = redis.call('HINCRBY', KEYS[1], 'top', 1)
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[7], offset .. '-0', 't', ARGV[3], 'p', ARGV[2])
local keep = tonumber(ARGV[5])
local oldest = tonumber(ARGV[3]) - tonumber(ARGV[6])
for _ = 1, 8 do
  if redis.call('XLEN', KEYS[2]) <= keep then break end
  local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)[1]
  if tonumber(first[2][2]) >= oldest then break end
  redis.call('XDEL', KEYS[2], first[1])
end
redis.call('PEXPIRE', KEYS[1], ARGV[8])
redis.call('PEXPIRE', KEYS[2], ARGV[8])
redis.call('PUBLISH', ARGV[9], 'm' .. cjson.encode({c = ARGV[1], e = epoch,
  o = tostring(offset), t = ARGV[3], p = ARGV[2]}))
return {epoch, offset}
";

/// KEYS: meta, log. ARGV: new epoch, ttl ms, first offset wanted. Returns {epoch, top,
/// entries}.
const HISTORY: &str = r"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'top', 0)
end
local top = tonumber(redis.call('HGET', KEYS[1], 'top') or '0')
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local entries = {}
if tonumber(ARGV[3]) <= top then
  entries = redis.call('XRANGE', KEYS[2], ARGV[3] .. '-0', '+')
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
return {epoch, top, entries}
";

/// The listeners, and whether the subscriber is subscribed now.
#[derive(Default)]
struct Shared {
    listeners: Mutex<Vec<Arc<dyn BusListener>>>,
    subscribed: AtomicBool,
}

type Listeners = Arc<Shared>;

/// The Redis [`RealtimeBus`]. Dropping it ends its subscriber task.
pub struct RedisBus {
    con: Con,
    keys: Keys,
    publish: Script,
    history: Script,
    listeners: Listeners,
}

/// The message a publish announces (the script's `cjson` encoding).
#[derive(serde::Deserialize)]
struct Wire {
    c: String,
    e: String,
    o: String,
    t: String,
    p: String,
}

impl RedisBus {
    /// A bus on `con` (commands) and the first answering of `seeds` (its own subscriber
    /// connection), with the keys of `keys`. Starts the subscriber task.
    pub(crate) fn start(con: Con, seeds: Arc<Vec<redis::Client>>, keys: Keys) -> RedisBus {
        let listeners: Listeners = Arc::default();
        tokio::spawn(subscriber(seeds, keys.rt_bus(), Arc::downgrade(&listeners)));
        RedisBus {
            con,
            keys,
            publish: Script::new(PUBLISH),
            history: Script::new(HISTORY),
            listeners,
        }
    }
}

fn ms(n: Millis) -> String {
    n.max(1).to_string()
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("realtime bus: {what}"))
}

/// One `XRANGE` entry: `(id, [field, value, …])`.
type Entry = (String, Vec<String>);

fn entry_message(channel: &str, epoch: &str, (id, fields): Entry) -> Result<BusMessage> {
    let offset = id
        .split_once('-')
        .and_then(|(o, _)| o.parse().ok())
        .ok_or_else(|| corrupt("entry id"))?;
    let field = |name: &str| {
        fields
            .chunks(2)
            .find(|kv| kv.first().is_some_and(|k| k == name))
            .and_then(|kv| kv.get(1).cloned())
    };
    Ok(BusMessage {
        channel: channel.to_string(),
        epoch: epoch.to_string(),
        offset,
        ts: field("t")
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| corrupt("entry time"))?,
        payload: field("p").ok_or_else(|| corrupt("entry payload"))?,
    })
}

#[async_trait]
impl RealtimeBus for RedisBus {
    async fn publish(
        &self,
        channel: &str,
        payload: &str,
        new_epoch: &str,
        now: Millis,
        limits: &HistoryLimits,
    ) -> Result<(String, u64)> {
        let mut con = self.con.clone();
        let mut inv = self.publish.key(self.keys.rt_meta(channel));
        inv.key(self.keys.rt_log(channel))
            .arg(channel)
            .arg(payload)
            .arg(now)
            .arg(new_epoch)
            .arg(redis_count(limits.keep))
            .arg(limits.window_ms)
            .arg(redis_count(limits.max.max(1)))
            .arg(ms(limits.ttl_ms))
            .arg(self.keys.rt_bus());
        let start = std::time::Instant::now();
        let out: redis::RedisResult<(String, u64)> = inv.invoke_async(&mut con).await;
        crate::round_trip("rt_publish", start);
        out.map_err(map_err)
    }

    async fn history(
        &self,
        channel: &str,
        after: u64,
        new_epoch: &str,
        _now: Millis,
        limits: &HistoryLimits,
    ) -> Result<History> {
        let mut con = self.con.clone();
        let mut inv = self.history.key(self.keys.rt_meta(channel));
        inv.key(self.keys.rt_log(channel))
            .arg(new_epoch)
            .arg(ms(limits.ttl_ms))
            .arg(after.saturating_add(1));
        let start = std::time::Instant::now();
        let out: redis::RedisResult<(String, u64, Vec<Entry>)> = inv.invoke_async(&mut con).await;
        crate::round_trip("rt_history", start);
        let (epoch, top, entries) = out.map_err(map_err)?;
        let messages = entries
            .into_iter()
            .map(|e| entry_message(channel, &epoch, e))
            .collect::<Result<Vec<_>>>()?;
        Ok(History {
            epoch,
            top,
            messages,
        })
    }

    async fn signal(&self, payload: &str) -> Result<()> {
        let mut con = self.con.clone();
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(self.keys.rt_bus()).arg(format!("s{payload}"));
        let start = std::time::Instant::now();
        let out: redis::RedisResult<i64> = cmd.query_async(&mut con).await;
        crate::round_trip("rt_signal", start);
        out.map_err(map_err)?;
        Ok(())
    }

    fn listen(&self, listener: Arc<dyn BusListener>) {
        // Pushed before the flag is read, so a subscription in between reaches it either way
        // (at worst twice, which is harmless).
        lock(&self.listeners.listeners).push(listener.clone());
        if self.listeners.subscribed.load(Ordering::Acquire) {
            listener.deliver(&BusEvent::Resync);
        }
    }
}

/// Parses one pub/sub payload.
fn parse(raw: &[u8]) -> Option<BusEvent> {
    match raw.split_first()? {
        (b'm', json) => {
            let w: Wire = serde_json::from_slice(json).ok()?;
            Some(BusEvent::Message(BusMessage {
                channel: w.c,
                epoch: w.e,
                offset: w.o.parse().ok()?,
                ts: w.t.parse().ok()?,
                payload: w.p,
            }))
        }
        (b's', rest) => Some(BusEvent::Signal(String::from_utf8(rest.to_vec()).ok()?)),
        _ => None,
    }
}

/// Calls every listener; false once the bus is gone.
fn deliver(shared: &Weak<Shared>, event: &BusEvent) -> bool {
    let Some(shared) = shared.upgrade() else {
        return false;
    };
    if *event == BusEvent::Resync {
        shared.subscribed.store(true, Ordering::Release);
    }
    let all: Vec<Arc<dyn BusListener>> = lock(&shared.listeners).clone();
    for listener in all {
        listener.deliver(event);
    }
    true
}

/// The subscriber: one pub/sub connection, re-established after any failure.
async fn subscriber(seeds: Arc<Vec<redis::Client>>, channel: String, listeners: Weak<Shared>) {
    let mut delay = Duration::from_millis(100);
    let mut seed = 0;
    loop {
        if listeners.strong_count() == 0 {
            return;
        }
        if let Some(mut pubsub) = crate::conn::pubsub_any(&seeds, &mut seed).await {
            if pubsub.subscribe(&channel).await.is_ok() {
                delay = Duration::from_millis(100);
                metrics::counter!("sessiond_realtime_bus_subscriptions_total").increment(1);
                if !deliver(&listeners, &BusEvent::Resync) {
                    return;
                }
                let mut messages = pubsub.on_message();
                while let Some(msg) = messages.next().await {
                    let Some(event) = parse(msg.get_payload_bytes()) else {
                        metrics::counter!("sessiond_realtime_bus_bad_payloads_total").increment(1);
                        continue;
                    };
                    if let BusEvent::Message(m) = &event {
                        // Publish time (carried in the message) to receipt on this node.
                        let lag_ms = (sessiond_store::now_ms() - m.ts).max(0);
                        metrics::histogram!("sessiond_realtime_bus_lag_seconds")
                            .record(lag_ms as f64 / 1000.0);
                    }
                    if !deliver(&listeners, &event) {
                        return;
                    }
                }
            }
        }
        if let Some(shared) = listeners.upgrade() {
            shared.subscribed.store(false, Ordering::Release);
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn payloads_parse() {
        use sessiond_store::realtime::BusEvent;
        let m =
            super::parse(br#"m{"c":"room:a","e":"E","o":"7","t":"1700000000123","p":"{\"x\":1}"}"#);
        match m {
            Some(BusEvent::Message(m)) => {
                assert_eq!(
                    (m.channel.as_str(), m.epoch.as_str(), m.offset),
                    ("room:a", "E", 7)
                );
                assert_eq!(
                    (m.ts, m.payload.as_str()),
                    (1_700_000_000_123, r#"{"x":1}"#)
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            super::parse(b"shello"),
            Some(BusEvent::Signal("hello".into()))
        );
        assert_eq!(super::parse(b"x"), None);
        assert_eq!(super::parse(b""), None);
    }
}
