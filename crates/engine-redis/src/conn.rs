//! The engine's command connection: one standalone server or a Redis Cluster, behind one type.
//!
//! Why one type: every store module sends commands, pipelines and scripts the same way on
//! both, so the difference is confined here. A standalone server is reached through a
//! [`ConnectionManager`] (one multiplexed socket, reconnecting by itself); a cluster through
//! the client's [`ClusterConnection`], which routes each command by its key's slot, follows
//! `MOVED`/`ASK` redirections and refreshes its slot map on its own (and which
//! [`ClusterCon`] rebuilds when it stalls).
//!
//! Pipelines: the cluster client sends a pipeline to one node only and refuses one whose keys
//! span slots. The engine's pipelines do span slots (a batch of commits to many streams, an
//! index update next to another), so on a cluster [`Con`] splits a pipeline by slot, sends
//! the parts concurrently (one round trip each, in parallel) and puts the replies back in the
//! original order. Commands of one slot keep their relative order (they are one part); the
//! engine never relies on order across slots (see the key table in [`crate::keys`]).
//! Transactions (`MULTI`) are never split (the engine sends none).

use std::collections::HashMap;

use futures_util::future::try_join_all;
use futures_util::FutureExt;
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo, Slot};
use redis::{Arg, Cmd, Pipeline, RedisFuture, RedisResult, Value};

pub(crate) use crate::cluster_con::ClusterCon;

/// A command connection to a standalone server or to a cluster (cheap to clone).
#[derive(Clone)]
pub(crate) enum Con {
    Single(ConnectionManager),
    Cluster(ClusterCon),
}

/// The slot of a command's first key; `None` for commands without a key (`PUBLISH`, `TIME`,
/// a script without keys), which any node can run.
fn command_slot(cmd: &Cmd) -> Option<Slot> {
    let mut args = cmd.args_iter().map(|a| match a {
        Arg::Simple(bytes) => bytes,
        _ => &b""[..],
    });
    let name = args.next()?.to_ascii_uppercase();
    match name.as_slice() {
        b"EVAL" | b"EVALSHA" | b"EVAL_RO" | b"EVALSHA_RO" | b"FCALL" => {
            let _script = args.next()?;
            let numkeys: usize = std::str::from_utf8(args.next()?).ok()?.parse().ok()?;
            if numkeys == 0 {
                return None;
            }
            args.next().map(Slot::for_key)
        }
        b"PUBLISH" | b"TIME" | b"PING" | b"SCAN" | b"CLUSTER" | b"SCRIPT" => None,
        _ => args.next().map(Slot::for_key),
    }
}

/// Splits `pipeline` into per-slot parts: `(indexes of its commands, the part)`, in order of
/// first appearance. Commands without a key join the first part.
fn split_by_slot(pipeline: &Pipeline) -> Vec<(Vec<usize>, Pipeline)> {
    let mut parts: Vec<(Vec<usize>, Pipeline)> = Vec::new();
    let mut by_slot: HashMap<Option<Slot>, usize> = HashMap::new();
    for (i, cmd) in pipeline.cmd_iter().enumerate() {
        let slot = command_slot(cmd);
        let part = match slot {
            None if !parts.is_empty() => 0,
            _ => *by_slot.entry(slot).or_insert_with(|| {
                parts.push((Vec::new(), redis::pipe()));
                parts.len() - 1
            }),
        };
        parts[part].0.push(i);
        parts[part].1.add_command(cmd.clone());
    }
    parts
}

/// Sends `pipeline` (of one slot) to the cluster in one round trip.
async fn send_pipeline(con: &ClusterCon, pipeline: &Pipeline) -> RedisResult<Vec<Value>> {
    con.run(|mut con| async move { con.req_packed_commands(pipeline, 0, pipeline.len()).await })
        .await
}

/// Sends `pipeline` to the cluster, split by slot, and returns the replies in its order.
async fn cluster_pipeline(con: &ClusterCon, pipeline: &Pipeline) -> RedisResult<Vec<Value>> {
    let parts = split_by_slot(pipeline);
    if parts.len() <= 1 {
        return send_pipeline(con, pipeline).await;
    }
    let replies = try_join_all(parts.iter().map(|(_, part)| send_pipeline(con, part))).await?;
    let mut out = vec![Value::Nil; pipeline.len()];
    for ((indexes, _), values) in parts.iter().zip(replies) {
        if values.len() != indexes.len() {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Parse,
                "short pipeline reply from a cluster node",
            )));
        }
        for (i, v) in indexes.iter().zip(values) {
            out[*i] = v;
        }
    }
    Ok(out)
}

/// A pub/sub connection to the first of `seeds` that answers, starting after the one used
/// last (`next`), so a subscriber whose node died moves on to another seed. Classic
/// `PUBLISH` reaches every node of a cluster, so any node will do.
pub(crate) async fn pubsub_any(
    seeds: &[redis::Client],
    next: &mut usize,
) -> Option<redis::aio::PubSub> {
    for _ in 0..seeds.len() {
        let client = &seeds[*next % seeds.len()];
        *next = next.wrapping_add(1);
        if let Ok(pubsub) = client.get_async_pubsub().await {
            // Stay on this seed while it works.
            *next = next.wrapping_sub(1);
            return Some(pubsub);
        }
    }
    None
}

impl Con {
    /// Whether this is a cluster connection.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Con::Cluster(_))
    }

    /// The masters of the cluster as `(host, port)` (from `CLUSTER SLOTS`); a standalone
    /// server is its own single "master", named by `None`.
    pub(crate) async fn masters(&self) -> RedisResult<Vec<Option<(String, u16)>>> {
        let Con::Cluster(con) = self else {
            return Ok(vec![None]);
        };
        let slots: Vec<Vec<Value>> = con
            .run(|mut con| async move {
                redis::cmd("CLUSTER")
                    .arg("SLOTS")
                    .query_async(&mut con)
                    .await
            })
            .await?;
        let mut out: Vec<Option<(String, u16)>> = Vec::new();
        for range in slots {
            let Some(Value::Array(master)) = range.into_iter().nth(2) else {
                continue;
            };
            let mut it = master.into_iter();
            let (Some(host), Some(port)) = (it.next(), it.next()) else {
                continue;
            };
            let host: String = redis::from_redis_value(host)?;
            let port: u16 = redis::from_redis_value(port)?;
            if !out.contains(&Some((host.clone(), port))) {
                out.push(Some((host, port)));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Sends `cmd` to one node (`None`: the standalone server), e.g. a `SCAN`, which walks the
    /// keys of the node it runs on.
    pub(crate) async fn query_on<T: redis::FromRedisValue>(
        &self,
        node: &Option<(String, u16)>,
        cmd: &Cmd,
    ) -> RedisResult<T> {
        match (self, node) {
            (Con::Cluster(con), Some((host, port))) => {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port: *port,
                });
                let value = con
                    .run(|mut con| async move { con.route_command(cmd.clone(), routing).await })
                    .await?;
                Ok(redis::from_redis_value(value)?)
            }
            (con, _) => cmd.query_async(&mut con.clone()).await,
        }
    }
}

impl ConnectionLike for Con {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Con::Single(con) => con.req_packed_command(cmd),
            Con::Cluster(con) => {
                let con = con.clone();
                async move {
                    con.run(|mut con| async move { con.req_packed_command(cmd).await })
                        .await
                }
                .boxed()
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Con::Single(con) => con.req_packed_commands(pipeline, offset, count),
            Con::Cluster(con) => {
                if pipeline.is_transaction() {
                    let con = con.clone();
                    async move {
                        con.run(|mut con| async move {
                            con.req_packed_commands(pipeline, offset, count).await
                        })
                        .await
                    }
                    .boxed()
                } else {
                    cluster_pipeline(con, pipeline).boxed()
                }
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Con::Single(con) => con.get_db(),
            Con::Cluster(con) => con.get().1.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipelines_split_by_slot_and_keep_order_within_a_slot() {
        let mut pipe = redis::pipe();
        pipe.cmd("SET").arg("{a}:1").arg("x");
        pipe.cmd("SET").arg("{b}:1").arg("y");
        pipe.cmd("EVAL").arg("return 1").arg(1).arg("{a}:2");
        pipe.cmd("PUBLISH").arg("ch").arg("m");
        let parts = split_by_slot(&pipe);
        let indexes: Vec<Vec<usize>> = parts.iter().map(|(i, _)| i.clone()).collect();
        assert_eq!(indexes, [vec![0, 2, 3], vec![1]]);
        assert_eq!(command_slot(&redis::cmd("TIME")), None);
        assert_eq!(
            command_slot(redis::cmd("EVALSHA").arg("h").arg(0)),
            None,
            "a script without keys runs anywhere"
        );
    }
}
