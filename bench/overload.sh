#!/usr/bin/env bash
# Overload benchmark: does goodput hold when sipd is offered more calls than it
# can carry? (RFC 3261 §21.5.4 / RFC 7339: refuse what cannot be served, early
# and cheaply, so that what is admitted completes.)
#
# The system under test is bench/accept_peer.py (answers every call, no media).
# First the peer's capacity is measured without overload control, as
# bench/cps.sh does: sipp's `uac` scenario at each rate of PROBE_RATES for
# PROBE_SECONDS; the highest rate at which every call succeeded and sipp held
# the rate (95%) is the capacity (or give CAPACITY=<calls/s>). Then peers with
# overload control on (the library defaults, plus PEER_SETTINGS), a fresh one
# for each level, are offered 1x, 1.5x and 2x that rate for STEP_SECONDS
# each, and the script
# prints per level: offered calls, calls answered 200, calls completed
# (INVITE ... BYE/200 all done), calls refused (503), failed calls, `lost`
# (answered but not completed) and the goodput: calls completed per second
# while the level was offered. Last line:
#
#   RESULT goodput_1x=<N> goodput_2x=<M> ratio=<M/N>
#
# Target: ratio >= 0.9, and every call that got a 200 completes (`lost` is 0
# at every level).
#
# Settings (environment): CAPACITY (skip the probe), PROBE_RATES (default
# "200 300 400 500 600 700 800 900 1000"), PROBE_SECONDS (default 10),
# STEP_SECONDS (default 30), LEVELS (default "1 1.5 2"), PEER_SETTINGS (extra
# `KEY=VALUE` SipdConfig settings for the peer of the levels, e.g.
# "overload_control=false" to see sipd without overload control), PEER (the
# peer script, default bench/accept_peer.py), SIPP (default /usr/bin/sipp).
# Runs on 127.0.0.1 only; every process it starts is stopped by its PID, and
# every sipp run is bounded by `timeout`. The per-source INVITE limit is off
# in accept_peer.py: all of sipp's calls come from one address.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
SIPP="${SIPP:-/usr/bin/sipp}"
PROBE_RATES="${PROBE_RATES:-200 300 400 500 600 700 800 900 1000}"
PROBE_SECONDS="${PROBE_SECONDS:-10}"
STEP_SECONDS="${STEP_SECONDS:-30}"
LEVELS="${LEVELS:-1 1.5 2}"
PEER_SETTINGS="${PEER_SETTINGS:-}"
PEER="${PEER:-$HERE/accept_peer.py}"
# sipp waits this long after the last call is placed for the rest to finish
# (an INVITE's transaction gives up after 64*T1 = 32 s).
MARGIN=40

if [[ ! -x "$SIPP" ]]; then
    echo "sipp not found at $SIPP: install the Debian package sip-tester" >&2
    exit 2
fi

WORK="$(mktemp -d /tmp/sipd-overload.XXXXXX)"
PEER_PID=""
SIPP_PID=""
cleanup() {
    if [[ -n "$SIPP_PID" ]] && kill -0 "$SIPP_PID" 2>/dev/null; then
        kill -KILL "$SIPP_PID" 2>/dev/null || true
    fi
    if [[ -n "$PEER_PID" ]] && kill -0 "$PEER_PID" 2>/dev/null; then
        kill -TERM "$PEER_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$PEER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$PEER_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT

now_ns() { date +%s%N; }
free_port() {
    "$PY" -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# Column of a sipp CSV (;-separated, header first) by name, from its last line.
col() {
    awk -F';' -v name="$2" '
        NR == 1 { for (i = 1; i <= NF; i++) if ($i == name) c = i; next }
        { last = $c }
        END { print (c && last != "" ? last : 0) }' "$1"
}
# "<completed> <seconds>": successful calls and elapsed time at the first line of
# sipp's per-second statistics at or past $2 seconds (or its last line).
completed_within() {
    awk -F';' -v limit="$2" '
        function epoch(field,   parts, n) { n = split(field, parts, "\t"); return parts[n] + 0 }
        NR == 1 { for (i = 1; i <= NF; i++) { if ($i == "StartTime") st = i;
                                              if ($i == "CurrentTime") ct = i;
                                              if ($i == "SuccessfulCall(C)") c = i }; next }
        { secs = epoch($ct) - epoch($st); done = $c; at = secs; if (secs >= limit) exit }
        END { printf "%d %.3f\n", done, at }' "$1"
}
# Sum of the columns of a sipp CSV whose names match a regex, from its last line.
sum_cols() {
    awk -F';' -v re="$2" '
        NR == 1 { n = 0; for (i = 1; i <= NF; i++) if ($i ~ re) cols[n++] = i; next }
        { s = 0; for (k = 0; k < n; k++) s += $(cols[k]); last = s }
        END { print last + 0 }' "$1"
}

# start_peer NAME SETTINGS...: start accept_peer.py with these --set KEY=VALUE
# words; sets PEER_PID and PEER_PORT. stop_peer: SIGTERM by PID (then KILL).
start_peer() {
    local name="$1"
    shift
    local args=()
    for kv in "$@"; do args+=(--set "$kv"); done
    "$PY" "$PEER" --port 0 "${args[@]}" >"$WORK/$name.out" 2>"$WORK/$name.err" &
    local launched=$!
    for _ in $(seq 100); do
        grep -q '^PORT ' "$WORK/$name.out" 2>/dev/null && break
        sleep 0.1
    done
    PEER_PID="$(awk '/^PID / {print $2}' "$WORK/$name.out")"
    PEER_PORT="$(awk '/^PORT / {print $2}' "$WORK/$name.out")"
    if [[ -z "$PEER_PID" || -z "$PEER_PORT" || "$PEER_PID" != "$launched" ]]; then
        echo "$PEER did not start:" >&2
        cat "$WORK/$name.err" >&2
        exit 2
    fi
    echo "$name: pid=$PEER_PID port=$PEER_PORT settings=[$*]"
}
stop_peer() {
    kill -TERM "$PEER_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$PEER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$PEER_PID" 2>/dev/null || true
    PEER_PID=""
}

cd "$ROOT"
echo "work=$WORK cores=$(nproc) peer=$PEER settings=[$PEER_SETTINGS]"

# run_sipp NAME RATE SECONDS: offer RATE calls/s for SECONDS; sets the globals
# OFFERED ANSWERED COMPLETED FAILED REFUSED ELAPSED_MS SIPP_RC.
run_sipp() {
    local name="$1" rate="$2" seconds="$3"
    local dir="$WORK/$name"
    mkdir -p "$dir"
    OFFERED="$("$PY" -c "print(round($rate * $seconds))")"
    local port
    port="$(free_port)"
    T0="$(now_ns)"
    set +e
    (cd "$dir" && exec timeout -k 5 $((seconds * 2 + MARGIN + 10)) "$SIPP" -sn uac \
        -i 127.0.0.1 -p "$port" "127.0.0.1:$PEER_PORT" -r "$rate" -rp 1000 -m "$OFFERED" \
        -l $((${rate%.*} * 4 + 100)) -d 0 -max_socket 1024 -buff_size 4194304 -nostdin \
        -timeout "$((seconds * 2 + MARGIN))s" -timeout_error -trace_stat -stf stat.csv -fd 1 \
        -trace_counts -trace_err -error_file errors.log >sipp.out 2>&1) &
    SIPP_PID=$!
    wait "$SIPP_PID"
    SIPP_RC=$?
    SIPP_PID=""
    set -e
    ELAPSED_MS=$((($(now_ns) - T0) / 1000000))
    local counts
    counts="$(ls "$dir"/*_counts.csv 2>/dev/null | head -1)"
    COMPLETED="$(col "$dir/stat.csv" 'SuccessfulCall(C)')"
    FAILED="$(col "$dir/stat.csv" 'FailedCall(C)')"
    if [[ -n "$counts" ]]; then
        ANSWERED="$(col "$counts" '4_200_Recv')"
        REFUSED="$(sum_cols "$counts" '^[0-9]+_[0-9]+_Unexp$')"
    else
        ANSWERED=0
        REFUSED=0
    fi
}

# -- capacity ----------------------------------------------------------------------------
if [[ -n "${CAPACITY:-}" ]]; then
    echo "capacity given: $CAPACITY calls/s"
else
    # The peer's own capacity, without overload control (as bench/cps.sh):
    # every call completes and sipp keeps up the rate (95%). Each rate gets a
    # fresh peer, so that no step inherits the last one's transactions.
    echo "probing capacity: rates [$PROBE_RATES], ${PROBE_SECONDS}s each"
    CAPACITY=0
    for RATE in $PROBE_RATES; do
        start_peer "probe-peer-$RATE" overload_control=false >/dev/null
        run_sipp "probe-$RATE" "$RATE" "$PROBE_SECONDS"
        stop_peer
        ACHIEVED=$((COMPLETED * 1000 / (ELAPSED_MS > 0 ? ELAPSED_MS : 1)))
        echo "  probe rate=$RATE offered=$OFFERED completed=$COMPLETED failed=$FAILED" \
            "achieved=$ACHIEVED/s (${ELAPSED_MS} ms)"
        if [[ "$SIPP_RC" == 0 && "$FAILED" == 0 && "$COMPLETED" == "$OFFERED" \
              && "$ACHIEVED" -ge $((RATE * 95 / 100)) ]]; then
            CAPACITY="$RATE"
        else
            break
        fi
    done
    if [[ "$CAPACITY" == 0 ]]; then
        echo "the peer carried none of the probe rates; see $WORK" >&2
        exit 1
    fi
    echo "capacity: $CAPACITY calls/s"
fi

# -- the levels: each against a fresh peer with overload control ----------------------------
printf '%6s %6s %8s %8s %9s %8s %8s %6s %9s\n' \
    level rate offered answered completed refused failed lost goodput
declare -A GOODPUT
for LEVEL in $LEVELS; do
    RATE="$("$PY" -c "print(round($CAPACITY * $LEVEL))")"
    # shellcheck disable=SC2086  # PEER_SETTINGS is a list of words
    start_peer "peer-$LEVEL" $PEER_SETTINGS >/dev/null
    run_sipp "level-$LEVEL" "$RATE" "$STEP_SECONDS"
    # Goodput: calls completed (BYE answered) while the level was offered,
    # per second, from sipp's per-second statistics.
    read -r DONE_IN AT < <(completed_within "$WORK/level-$LEVEL/stat.csv" "$STEP_SECONDS")
    GP="$("$PY" -c "print(round($DONE_IN / $AT, 1) if $AT > 0 else 0)")"
    GOODPUT[$LEVEL]="$GP"
    LOST=$((ANSWERED - COMPLETED))
    printf '%5sx %6s %8s %8s %9s %8s %8s %6s %9s\n' \
        "$LEVEL" "$RATE" "$OFFERED" "$ANSWERED" "$COMPLETED" "$REFUSED" "$FAILED" "$LOST" "$GP"
    if ! kill -0 "$PEER_PID" 2>/dev/null; then
        echo "the peer died; see $WORK/peer-$LEVEL.err" >&2
        exit 1
    fi
    stop_peer
    echo "        peer: $(tr '\n' ' ' <"$WORK/peer-$LEVEL.out" | cut -c1-200)"
done

G1="${GOODPUT[1]:-0}"
G2="${GOODPUT[2]:-0}"
RATIO="$("$PY" -c "print(round($G2 / $G1, 3) if $G1 else 0)")"
echo "RESULT goodput_1x=$G1 goodput_2x=$G2 ratio=$RATIO"
