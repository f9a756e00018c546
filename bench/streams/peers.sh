# bench/streams/peers.sh — how bench/streams/run installs, starts and stops each server
# (sourced by run; needs common.sh, $CACHE, $HERE, $WORK and $SESSIOND).
#
# Why separate: the start recipes are the facts most likely to change with a peer's version
# (flags, env names, limits), so they live in one place, next to the pinned versions.

ELECTRIC_VERSION=0.1.5     # crate durable-streams, binary durable-streams-server
SAMPATON_VERSION=0.3.0     # crate durable-streams-server
NODE_SERVER_VERSION=$(awk -F'"' '/"@durable-streams\/server"/ {print $4; exit}' "$HERE/package.json")

peer_bin() { echo "$CACHE/$1/bin/durable-streams-server"; }

# cargo install into the cache: its own --root per peer, one shared target dir, the crate's lock file.
cargo_install_peer() { # dir crate version
    [[ -x $(peer_bin "$1") ]] && return 0
    say "== installing $2 $3 into ${CACHE#"$ROOT"/}/$1 (cargo install, release; a few minutes once)"
    cargo install --quiet --locked --root "$CACHE/$1" --target-dir "$CACHE/cargo-target" "$2" --version "$3" >&2 \
        || die "cargo install $2 $3 failed"
    rm -rf "$CACHE/cargo-target" # hundreds of MB of build products; the binary is installed
}

# npm into the cache from the committed package.json + package-lock.json (versions as locked).
npm_install_node_peer() {
    local dir="$CACHE/node"
    if [[ -f $dir/node_modules/.package-lock.json ]] && cmp -s "$HERE/package-lock.json" "$dir/package-lock.json"; then
        return 0
    fi
    say "== installing @durable-streams/server $NODE_SERVER_VERSION into ${dir#"$ROOT"/} (npm, from the lock file)"
    mkdir -p "$dir"
    cp "$HERE/package.json" "$HERE/package-lock.json" "$dir/"
    (cd "$dir" && npm install --no-save --no-audit --no-fund --loglevel=error >&2) || die "npm install failed"
}

install_peers() {
    local peer
    for peer in "$@"; do
        case $peer in
            electric) cargo_install_peer electric durable-streams "$ELECTRIC_VERSION" ;;
            sampaton) cargo_install_peer sampaton durable-streams-server "$SAMPATON_VERSION" ;;
            node-file | node-memory) npm_install_node_peer ;;
            *) die "unknown peer $peer (known: electric sampaton node-file node-memory)" ;;
        esac
    done
}

# One-line description of a server as the report shows it.
server_label() {
    case $1 in
        sessiond) echo "sessiond $(git_rev_of "$ROOT"), --engine sqlite (default config)" ;;
        electric) echo "Electric durable-streams $ELECTRIC_VERSION, --durability wal" ;;
        sampaton) echo "thesampaton durable-streams-server $SAMPATON_VERSION, file-durable" ;;
        node-file) echo "Node @durable-streams/server $NODE_SERVER_VERSION, dataDir (LMDB + files)" ;;
        node-memory) echo "Node @durable-streams/server $NODE_SERVER_VERSION, in memory" ;;
    esac
}

# Starts SERVER on a free port with a fresh data dir; sets SRV_PID, SRV_PORT, SRV_DATA.
start_server() { # server tag
    local server=$1 tag=$2 log probe=/v1/stream/__bench_probe__
    SRV_PORT=$(free_port)
    SRV_DATA="$WORK/data-$server-$tag"
    log="$WORK/$server-$tag.log"
    mkdir -p "$SRV_DATA"
    case $server in
        sessiond)
            "$SESSIOND" serve --listen "127.0.0.1:$SRV_PORT" --engine sqlite --data-dir "$SRV_DATA" >"$log" 2>&1 &
            probe=/healthz ;;
        electric)
            "$(peer_bin electric)" --host 127.0.0.1 --port "$SRV_PORT" --data-dir "$SRV_DATA" \
                --long-poll-timeout-ms 500 --durability wal >"$log" 2>&1 & ;;
        sampaton)
            # Default limits (10 MiB per stream, 100 MiB in total) would refuse the catch-up fill.
            DS_SERVER__BIND_ADDRESS="127.0.0.1:$SRV_PORT" DS_STORAGE__MODE=file-durable DS_STORAGE__DATA_DIR="$SRV_DATA" \
                DS_TRANSPORT__CONNECTION__LONG_POLL_TIMEOUT_SECS=1 \
                DS_LIMITS__MAX_STREAM_BYTES=$((4 << 30)) DS_LIMITS__MAX_MEMORY_BYTES=$((8 << 30)) \
                "$(peer_bin sampaton)" serve >"$log" 2>&1 &
            probe=/healthz ;;
        node-file)
            DS_NODE_MODULES="$CACHE/node/node_modules" node "$HERE/node-server.mjs" "$SRV_PORT" "$SRV_DATA" >"$log" 2>&1 & ;;
        node-memory)
            DS_NODE_MODULES="$CACHE/node/node_modules" node "$HERE/node-server.mjs" "$SRV_PORT" >"$log" 2>&1 & ;;
        *) die "unknown server $server" ;;
    esac
    SRV_PID=$!
    pids+=("$SRV_PID")
    # A peer that does not start loses its row (start_server returns 1); sessiond ends the run.
    local soft=1
    [[ $server == sessiond ]] && soft=0
    if [[ $probe == /healthz ]]; then
        SOFT=$soft wait_http "$server" "http://127.0.0.1:$SRV_PORT$probe" "$SRV_PID" "$log"
    else # no health endpoint: any HTTP answer (a 404 for the unknown stream) means it serves
        SOFT=$soft ANY=1 wait_http "$server" "http://127.0.0.1:$SRV_PORT$probe" "$SRV_PID" "$log"
    fi
}

# Stops the server start_server started and removes its data dir (always: 30 of them would
# fill a small disk; KEEP=1 keeps only the logs and load tool outputs).
stop_server() {
    stop_pid "$SRV_PID"
    local rest=() pid
    for pid in "${pids[@]}"; do [[ $pid == "$SRV_PID" ]] || rest+=("$pid"); done
    pids=("${rest[@]}")
    rm -rf "$SRV_DATA"
}
