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
