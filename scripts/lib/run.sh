# Shell helpers shared by scripts/conformance and scripts/cluster (sourced, not run).
# Needs node (for the free port and the JSON log parsing) and, for Redis, redis-server/-cli.

# A loopback port that was free a moment ago.
# cluster_signing_key: 32 random bytes as hex, for middleware.signing_keys shared by every
# node of a Redis-engine deployment (sessiond refuses to make one per process there).
cluster_signing_key() {
  od -An -tx1 -N32 /dev/urandom | tr -d ' \n'
}

free_port() {
  node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

# start_redis DIR [redis-server args...]: starts a private redis-server on a free loopback
# port with its files in DIR; sets REDIS_PORT and REDIS_PID. Retries when a port was taken.
start_redis() {
  local dir="$1"; shift
  local attempt
  for attempt in 1 2 3 4 5; do
    REDIS_PORT=$(free_port)
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$dir" "$@" \
      >"$dir/redis.log" 2>&1 &
    REDIS_PID=$!
    local _
    for _ in $(seq 1 100); do
      redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && return 0
      kill -0 "$REDIS_PID" 2>/dev/null || break
      sleep 0.05
    done
    kill "$REDIS_PID" 2>/dev/null || true
  done
  echo "redis-server did not start" >&2
  return 1
}

# start_redis_cluster DIR: starts a 3-master Redis Cluster (no replicas, no persistence) on
# free loopback ports with its files under DIR, joins it with `redis-cli --cluster create` and
# waits until every node reports cluster_state:ok; sets REDIS_CLUSTER_URLS (a TOML/env list
# of seed URLs) and REDIS_CLUSTER_PIDS.
start_redis_cluster() {
  local dir="$1" i port bus ports=() _
  REDIS_CLUSTER_PIDS=""
  for i in 1 2 3; do
    mkdir -p "$dir/node$i"
    port=$(free_port); bus=$(free_port)
    redis-server --port "$port" --bind 127.0.0.1 --dir "$dir/node$i" --save "" --appendonly no \
      --cluster-enabled yes --cluster-port "$bus" --cluster-config-file "$dir/node$i/nodes.conf" \
      --cluster-node-timeout 2000 --cluster-require-full-coverage no >"$dir/node$i/redis.log" 2>&1 &
    REDIS_CLUSTER_PIDS="$REDIS_CLUSTER_PIDS $!"
    for _ in $(seq 1 100); do
      redis-cli -p "$port" ping >/dev/null 2>&1 && break
      sleep 0.05
    done
    ports+=("127.0.0.1:$port")
  done
  redis-cli --cluster create "${ports[@]}" --cluster-replicas 0 --cluster-yes >"$dir/create.log" 2>&1 \
    || { cat "$dir/create.log" >&2; echo "redis-cli --cluster create failed" >&2; return 1; }
  for _ in $(seq 1 300); do
    local ok=1 p
    for p in "${ports[@]}"; do
      redis-cli -p "${p##*:}" cluster info 2>/dev/null | grep -q '^cluster_state:ok' || ok=0
    done
    [ "$ok" = 1 ] && break
    sleep 0.1
  done
  [ "$ok" = 1 ] || { echo "the redis cluster did not reach cluster_state:ok" >&2; return 1; }
  REDIS_CLUSTER_URLS="[$(printf 'redis://%s/,' "${ports[@]}" | sed 's/,$//')]"
}

# wait_listening LOG PID: prints the address a sessiond started with `--listen 127.0.0.1:0`
# and JSON logs reports in LOG; fails if it exits or does not report within 20 s.
wait_listening() {
  local log="$1" pid="$2" addr="" _
  for _ in $(seq 1 200); do
    addr=$(node -e '
      const fs = require("fs");
      for (const line of fs.readFileSync(process.argv[1], "utf8").split("\n")) {
        try { const e = JSON.parse(line); if (e.fields && e.fields.message === "sessiond listening") { console.log(e.fields.addr); break } } catch {}
      }' "$log")
    [ -n "$addr" ] && { echo "$addr"; return 0; }
    kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; echo "sessiond exited before listening" >&2; return 1; }
    sleep 0.1
  done
  cat "$log" >&2
  echo "sessiond did not report its address" >&2
  return 1
}
