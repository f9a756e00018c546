# bench/streams/report.sh — turns $RESULTS (TSV written by bench/streams/run) into the markdown
# report: one table per workload, sessiond/peer ratios, and the issue's targets marked PASS/MISS.
# Sourced by run; needs $RESULTS, $SERVERS, $PEERS and the run's knobs.

# value WORKLOAD SERVER CONFIG COLUMN -> that cell of $RESULTS (empty when absent)
value() { awk -F'\t' -v w="$1" -v s="$2" -v c="$3" -v k="$4" '$1 == w && $2 == s && $3 == c { print $k; exit }' "$RESULTS"; }
configs_of() { awk -F'\t' -v w="$1" '$1 == w && !seen[$3]++ { print $3 }' "$RESULTS"; }

ms() { [[ -z $1 ]] && { echo n/a; return; }; awk -v u="$1" 'BEGIN { printf "%.2f", u / 1000 }'; }
num() { [[ -z $1 ]] && { echo n/a; return; }; awk -v v="$1" -v d="${2:-0}" 'BEGIN { printf "%.*f", d, v }'; }
mb_of_kb() { [[ -z $1 || $1 == 0 ]] && { echo n/a; return; }; awk -v k="$1" 'BEGIN { printf "%.1f MB", k / 1024 }'; }
ratio() { # a b -> a/b with 2 decimals, or n/a
    awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b + 0 == 0 || a + 0 == 0) print "n/a"; else printf "%.2f", a / b }'
}
header_row() { # first-column title, then one column per server
    local s line="| $1 |" sep="|---|"
    for s in $SERVERS; do line+=" $s |"; sep+="---:|"; done
    printf '%s\n%s\n' "$line" "$sep"
}
ratio_header() {
    local p line="| $1 |" sep="|---|"
    for p in $PEERS; do line+=" sessiond / $p |"; sep+="---:|"; done
    printf '%s\n%s\n' "$line" "$sep"
}
# target LABEL MEASURED_RATIO OP THRESHOLD -> one row of the targets table
target_row() {
    local verdict
    verdict=$(awk -v r="$2" -v op="$3" -v t="$4" 'BEGIN {
        if (r == "n/a" || r == "") { print "n/a"; exit }
        ok = (op == ">=") ? (r + 0 >= t + 0) : (r + 0 <= t + 0); print (ok ? "PASS" : "MISS") }')
    printf '| %s | %s | %s %s | %s |\n' "$1" "$2" "${3/>=/≥}" "$4" "$verdict" | sed 's/<= /≤ /'
}

write_report() {
    local s c p cell note v
    echo "Run $(date -u '+%Y-%m-%d %H:%M UTC') · $(nproc) cores ($(cpu_model)) · data dirs on $(fs_type_of "$WORK") ·" \
        "load generator (bench/streams-load, one keep-alive connection per writer) on the same cores ·" \
        "append runs ${DURATION} s · catch-up ${CATCHUP_MB} MB read for ${CATCHUP_SECS} s · SSE ${SSE_SUBS} subscribers, ${SSE_SECS} s of appends$( ((QUICK)) && echo ' · --quick')"
    echo
    for s in $SERVERS; do echo "- **$s**: $(server_label "$s")"; done
    echo
    echo "**Appends** (256-byte bodies, closed loop; C writers over N streams; the JSON row appends one ~256-byte JSON object per request to an \`application/json\` stream): appends/s (p50 / p99 ms)"
    echo
    header_row "C/N"
    for c in $(configs_of append); do
        printf '| %s |' "$c"
        for s in $SERVERS; do
            v=$(value append "$s" "$c" 4)
            note=$(value append "$s" "$c" 8)
            cell="$(num "$v") ($(ms "$(value append "$s" "$c" 5)") / $(ms "$(value append "$s" "$c" 6)"))"
            [[ -n $note && $note != 0 ]] && cell+=" ⚠ $note"
            printf ' %s |' "$cell"
        done
        echo
    done
    echo
    echo "Server CPU per append (µs, utime + stime of the server process / appends acked):"
    echo
    header_row "C/N"
    for c in $(configs_of append); do
        printf '| %s |' "$c"
        for s in $SERVERS; do printf ' %s |' "$(value append "$s" "$c" 7)"; done
        echo
    done
    echo
    ratio_header "appends/s ratio"
    for c in $(configs_of append); do
        printf '| %s |' "$c"
        for p in $PEERS; do printf ' %s |' "$(ratio "$(value append sessiond "$c" 4)" "$(value append "$p" "$c" 4)")"; done
        echo
    done
    echo
    c="$CATCHUP_MB MB"
    echo "**Catch-up** (one ${CATCHUP_MB} MB stream filled with 64 KiB appends, read from offset -1 to the end following Stream-Next-Offset, repeated for ${CATCHUP_SECS} s):"
    echo
    echo "| server | MB/s | page p50 / p99 ms | pages | server CPU ms per MB | fill time s | sessiond / server | errors |"
    echo "|---|---:|---:|---:|---:|---:|---:|---|"
    for s in $SERVERS; do
        printf '| %s | %s | %s / %s | %s | %s | %s | %s | %s |\n' "$s" "$(num "$(value catchup "$s" "$c" 4)" 1)" \
            "$(ms "$(value catchup "$s" "$c" 5)")" "$(ms "$(value catchup "$s" "$c" 6)")" "$(value catchup "$s" "$c" 9)" \
            "$(value catchup "$s" "$c" 7)" "$(value catchup "$s" "$c" 10)" \
            "$(ratio "$(value catchup sessiond "$c" 4)" "$(value catchup "$s" "$c" 4)")" "$(value catchup "$s" "$c" 8)"
    done
    echo
    local sse="$SSE_SUBS subs"
    c=$sse
    echo "**SSE fan-out** (${SSE_SUBS} \`live=sse\` subscribers on one stream, one closed-loop writer of 256-byte appends for ${SSE_SECS} s; every subscriber must receive every append):"
    echo
    echo "| server | connected | appends | delivered / expected | deliveries/s | latency p50 / p99 ms | RSS idle | RSS with subscribers (peak) | sessiond / server RSS | errors |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    for s in $SERVERS; do
        printf '| %s | %s | %s | %s / %s | %s | %s / %s | %s | %s | %s | %s |\n' "$s" "$(value sse "$s" "$c" 7)" \
            "$(value sse "$s" "$c" 9)" "$(value sse "$s" "$c" 10)" "$(value sse "$s" "$c" 11)" \
            "$(num "$(value sse "$s" "$c" 4)")" "$(ms "$(value sse "$s" "$c" 5)")" "$(ms "$(value sse "$s" "$c" 6)")" \
            "$(mb_of_kb "$(value sse "$s" "$c" 12)")" "$(mb_of_kb "$(value sse "$s" "$c" 14)")" \
            "$(ratio "$(value sse sessiond "$c" 14)" "$(value sse "$s" "$c" 14)")" "$(value sse "$s" "$c" 8)"
    done
    echo
    echo "**Targets** (from the issue; measured = sessiond / peer in this run):"
    echo
    echo "| target | measured | wanted | |"
    echo "|---|---:|---:|---|"
    for c in $(configs_of append); do
        [[ $PEERS == *electric* ]] && target_row "appends $c vs Electric" "$(ratio "$(value append sessiond "$c" 4)" "$(value append electric "$c" 4)")" ">=" 1.0
    done
    for c in $(configs_of append); do
        [[ $PEERS == *node-file* ]] && target_row "appends $c vs Node file-backed" "$(ratio "$(value append sessiond "$c" 4)" "$(value append node-file "$c" 4)")" ">=" 20
    done
    [[ $PEERS == *electric* ]] && target_row "catch-up MB/s vs Electric" \
        "$(ratio "$(value catchup sessiond "$CATCHUP_MB MB" 4)" "$(value catchup electric "$CATCHUP_MB MB" 4)")" ">=" 1.0
    [[ $PEERS == *electric* ]] && target_row "SSE peak RSS vs Electric" \
        "$(ratio "$(value sse sessiond "$sse" 14)" "$(value sse electric "$sse" 14)")" "<=" 1.0
    local got expected subs
    got=$(value sse sessiond "$sse" 10)
    expected=$(value sse sessiond "$sse" 11)
    subs=$(value sse sessiond "$sse" 7)
    awk -v g="$got" -v e="$expected" -v s="$subs" -v k="$SSE_SUBS" 'BEGIN {
        ok = (s == k && g == e && e > 0)
        printf "| SSE delivery to all subscribers (sessiond) | %s of %s connected, %s / %s delivered | all | %s |\n", s, k, g, e, (ok ? "PASS" : "MISS") }'
    if [[ -s $COMMITS ]]; then
        echo
        echo "sessiond's SQLite group commit per measurement (from /metrics \`sessiond_engine_commit_batch_size\`, \`sessiond_engine_commit_seconds\`; includes the stream creates and the catch-up fill):"
        echo
        cat "$COMMITS"
    fi
    return 0
}
