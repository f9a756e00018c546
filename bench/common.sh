# bench/common.sh — helpers shared by the bench/*/run scripts (sourced, not run).
#
# Why a shared file: every benchmark starts several servers on free loopback ports, must stop
# exactly the processes it started (whatever way the script ends) and keep or remove its
# temporary directory. Before sourcing, set BENCH_NAME (used in messages and the temp dir name);
# after sourcing, $WORK is the temp dir and `pids` the array of started process ids.

say() { printf '%s\n' "$*" >&2; }
die() { say "$BENCH_NAME: $*"; exit 1; }

tmp_parent=${BENCH_TMPDIR:-${TMPDIR:-/tmp}}
WORK=$(mktemp -d "$tmp_parent/${BENCH_NAME//\//-}.XXXXXX")
pids=()

# Stops one started process: SIGTERM, up to 5 s to exit, then SIGKILL.
stop_pid() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

bench_cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local pid
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do stop_pid "$pid"; done
    if [[ ${KEEP:-0} == 1 ]]; then say "== kept $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap bench_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

used_ports=" "
port_in_use() {
    if command -v ss >/dev/null; then
        [[ -n $(ss -Htln "sport = :$1" 2>/dev/null) ]]
    else
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
    fi
}

# Prints a loopback port nobody listens on and this run has not handed out yet.
free_port() {
    local p
    for _ in $(seq 200); do
        p=$((20000 + RANDOM % 40000))
        [[ $used_ports == *" $p "* ]] && continue
        port_in_use "$p" && continue
        used_ports+="$p "
        echo "$p"
        return 0
    done
    die "no free loopback port found"
}

# Waits until URL answers with any HTTP status (ANY=1) or a 2xx (default); fails early when
# the process exits. SOFT=1: say so and return 1 instead of ending the script (a peer that does
# not start costs its rows, not the run). Usage: wait_http NAME URL PID [LOG]
wait_http() {
    local log=${4:-$WORK/$1.log} code
    for _ in $(seq 150); do
        if [[ ${ANY:-0} == 1 ]]; then
            code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$2" 2>/dev/null || true)
            [[ -n $code && $code != 000 ]] && return 0
        else
            curl -sf -o /dev/null --max-time 1 "$2" && return 0
        fi
        if ! kill -0 "$3" 2>/dev/null; then
            not_started "$1 exited during start; log: $log ($(tail -3 "$log" 2>/dev/null))"
            return 1
        fi
        sleep 0.1
    done
    not_started "$1 not ready at $2 after 15 s"
}
not_started() { if [[ ${SOFT:-0} == 1 ]]; then say "   $1"; return 1; else die "$1"; fi; }

# Starts a private redis-server without persistence on 127.0.0.1:PORT (its files under
# $WORK/NAME, default `redis`) and waits for PING; appends its pid to `pids` and sets REDIS_PID.
# Further arguments are redis-server options that override the defaults (e.g. persistence:
# `--appendonly yes --appendfsync always`).
# Usage: start_private_redis PORT [NAME [OPTION...]]
start_private_redis() {
    local port=$1 name=${2:-redis}
    shift $(($# > 1 ? 2 : 1))
    mkdir -p "$WORK/$name"
    redis-server --bind 127.0.0.1 --port "$port" --dir "$WORK/$name" --save "" --appendonly no \
        --daemonize no --logfile "$WORK/$name.log" "$@" &
    REDIS_PID=$!
    pids+=("$REDIS_PID")
    local _
    for _ in $(seq 100); do
        [[ $(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null) == PONG ]] && return 0
        sleep 0.1
    done
    die "redis-server not ready on port $port"
}

# Creates N sessions (users seed-0..N-1, small data) through one curl process and writes their
# ids, one a line, to IDS_FILE; with API_KEY as a bearer token.
# Usage: seed_sessions N NAME BASE_URL IDS_FILE [API_KEY]
seed_sessions() {
    local count=$1 name=$2 base=$3 ids=$4 key=${5:-} cfg="$WORK/seed-$2.curl" i n
    for ((i = 0; i < count; i++)); do
        printf 'url = "%s/v1/sessions"\nrequest = "POST"\nheader = "Content-Type: application/json"\n' "$base"
        [[ -z $key ]] || printf 'header = "Authorization: Bearer %s"\n' "$key"
        printf 'data = "{\\"user_id\\":\\"seed-%d\\",\\"data\\":{\\"seed\\":%d,\\"cart\\":[]}}"\n' "$i" "$i"
        printf 'write-out = "\\n"\nsilent\nnext\n'
    done >"$cfg"
    curl -K "$cfg" 2>>"$WORK/seed-$name.err" | grep -o '"id":"[^"]*"' | sed 's/"id":"\(.*\)"/\1/' >"$ids" || true
    n=$(wc -l <"$ids")
    [[ $n == "$count" ]] || die "seeding $name: got $n ids of $count (see $WORK/seed-$name.err)"
    say "== seeded $n sessions on $name"
}

# Type of the file system holding a directory (ext4, tmpfs, ...).
fs_type_of() {
    local t
    t=$({ df -PT "$1" 2>/dev/null || true; } | awk 'NR == 2 {print $2}')
    echo "${t:-$(stat -f -c %T "$1" 2>/dev/null || echo '?')}"
}

cpu_model() { lscpu 2>/dev/null | awk -F: '/^Model name/ {sub(/^[ \t]+/, "", $2); print $2; exit}'; }

# Short git revision of the checkout at $1, marked when tracked files have uncommitted changes.
git_rev_of() {
    local rev
    rev=$(git -C "$1" rev-parse --short HEAD 2>/dev/null || echo '?')
    [[ -z $(git -C "$1" status --porcelain --untracked-files=no 2>/dev/null) ]] || rev+=" (+ uncommitted changes)"
    echo "$rev"
}

# CPU time (user + system, all threads) the given processes have used, in clock ticks
# ($CLK_TCK a second); a process that is gone counts 0. CPU per operation is the figure that
# survives a loaded machine: other work slows every process but does not change what one
# request costs.
CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() {
    local total=0 pid fields
    for pid in "$@"; do
        fields=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null) || continue
        total=$((total + $(awk '{print $12 + $13}' <<<"${fields:-0 0 0 0 0 0 0 0 0 0 0 0 0}")))
    done
    echo "$total"
}

# sessiond as it ships: the `dist` profile (Cargo.toml: fat LTO, one codegen unit), what every
# recorded figure measures. BENCH_PROFILE=release measures the release profile instead (a
# quicker build, ~13 % more CPU per request). Usage: build_sessiond ROOT TARGET_DIR [EXTRA
# RELEASE PACKAGES...]: builds sessiond in that profile and the given packages (load tools,
# the trivial backends) in release; sets SESSIOND.
BENCH_PROFILE=${BENCH_PROFILE:-dist}
build_sessiond() {
    local root=$1 target=$2
    shift 2
    say "== building sessiond ($BENCH_PROFILE profile)${*:+ and $* (release)} into $target"
    (cd "$root" && cargo build --profile "$BENCH_PROFILE" --quiet -p sessiond) >&2
    if (($#)); then
        local packages=() p
        for p in "$@"; do packages+=(-p "$p"); done
        (cd "$root" && cargo build --release --quiet "${packages[@]}") >&2
    fi
    SESSIOND="$target/$BENCH_PROFILE/sessiond"
}
