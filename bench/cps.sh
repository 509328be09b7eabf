#!/usr/bin/env bash
# Call-rate benchmark: sipp's built-in `uac` scenario against a sipd peer that
# answers every call (bench/accept_peer.py, no media).
#
# For each rate in RATES, sipp places RATE calls per second for STEP_SECONDS
# (INVITE, 100/180/200, ACK, BYE/200, no hold time). A step passes when every
# call succeeded and sipp kept up the rate. The script reports each step's
# successful/failed calls, the peer's CPU use and RSS, stops at the first
# failing step, waits for the peer to go idle and prints, as its last line:
#
#   RESULT max_cps=<highest passing rate> rss_mb=<peak RSS of the peer in MB>
#
# Settings (environment): STEP_SECONDS (default 30), RATES (default
# "100 200 400 500 600 700 800 1000"), IDLE_WAIT (seconds to wait after the last
# step before reading the idle RSS again, default 40: the transactions of the
# last calls live 64*T1 = 32 s), SIPP (default /usr/bin/sipp),
# SIPD_PROFILE=<file> (run the peer under cProfile; see accept_peer.py).
# Needs sipp (Debian package sip-tester). Runs on 127.0.0.1 only.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
SIPP="${SIPP:-/usr/bin/sipp}"
STEP_SECONDS="${STEP_SECONDS:-30}"
RATES="${RATES:-100 200 400 500 600 700 800 1000}"
IDLE_WAIT="${IDLE_WAIT:-40}"
MARGIN=15

if [[ ! -x "$SIPP" ]]; then
    echo "sipp not found at $SIPP: install the Debian package sip-tester" >&2
    exit 2
fi

WORK="$(mktemp -d /tmp/sipd-cps.XXXXXX)"
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

CLK_TCK="$(getconf CLK_TCK)"
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }
now_ns() { date +%s%N; }
# Datagrams the kernel dropped for want of socket buffer space (all UDP sockets).
udp_drops() { awk '/^Udp:/ && $2 ~ /^[0-9]+$/ {print $6}' /proc/net/snmp; }

# -- start the peer ----------------------------------------------------------------
cd "$ROOT"
"$PY" "$HERE/accept_peer.py" --port 0 >"$WORK/peer.out" 2>"$WORK/peer.err" &
LAUNCHED=$!
for _ in $(seq 100); do
    grep -q '^PORT ' "$WORK/peer.out" 2>/dev/null && break
    sleep 0.1
done
PEER_PID="$(awk '/^PID / {print $2}' "$WORK/peer.out")"
PEER_PORT="$(awk '/^PORT / {print $2}' "$WORK/peer.out")"
if [[ -z "$PEER_PID" || -z "$PEER_PORT" || "$PEER_PID" != "$LAUNCHED" ]]; then
    echo "accept_peer.py did not start:" >&2
    cat "$WORK/peer.err" >&2
    exit 2
fi
sleep 1
IDLE_RSS_KB="$(rss_kb "$PEER_PID")"
echo "peer pid=$PEER_PID port=$PEER_PORT idle_rss=$((IDLE_RSS_KB / 1024))MB work=$WORK"
echo "step_seconds=$STEP_SECONDS rates=[$RATES] cores=$(nproc)"
printf '%6s %8s %8s %8s %9s %7s %8s %8s %7s\n' \
    rate target success failed achieved cpu% rss_mb hwm_mb drops

# Column of a sipp -trace_stat CSV by header name, from its last line.
stat_col() {
    awk -F';' -v name="$2" '
        NR == 1 { for (i = 1; i <= NF; i++) if ($i == name) col = i; next }
        { last = $col }
        END { print (col ? last : "") }' "$1"
}

MAX_CPS=0
for RATE in $RATES; do
    TOTAL=$((RATE * STEP_SECONDS))
    STAT="$WORK/stat-$RATE.csv"
    SIPP_PORT="$("$PY" -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    T0="$(now_ns)"
    C0="$(cpu_ticks "$PEER_PID")"
    D0="$(udp_drops)"
    set +e
    timeout -k 5 $((STEP_SECONDS + MARGIN + 5)) "$SIPP" -sn uac -i 127.0.0.1 -p "$SIPP_PORT" \
        "127.0.0.1:$PEER_PORT" -r "$RATE" -rp 1000 -m "$TOTAL" -l $((RATE * 2)) -d 0 \
        -max_socket 1024 -buff_size 4194304 -nostdin -timeout "$((STEP_SECONDS + MARGIN))s" -timeout_error \
        -trace_stat -stf "$STAT" -fd 1 -trace_err -error_file "$WORK/errors-$RATE.log" \
        >"$WORK/sipp-$RATE.out" 2>&1 &
    SIPP_PID=$!
    wait "$SIPP_PID"
    SIPP_RC=$?
    SIPP_PID=""
    set -e
    T1="$(now_ns)"
    C1="$(cpu_ticks "$PEER_PID")"
    D1="$(udp_drops)"
    ELAPSED_MS=$(((T1 - T0) / 1000000))
    SUCCESS="$(stat_col "$STAT" 'SuccessfulCall(C)' 2>/dev/null || true)"
    FAILED="$(stat_col "$STAT" 'FailedCall(C)' 2>/dev/null || true)"
    SUCCESS="${SUCCESS:-0}"
    FAILED="${FAILED:-?}"
    ACHIEVED=$((SUCCESS * 1000 / (ELAPSED_MS > 0 ? ELAPSED_MS : 1)))
    CPU_PCT=$(((C1 - C0) * 100000 / CLK_TCK / (ELAPSED_MS > 0 ? ELAPSED_MS : 1)))
    printf '%6s %8s %8s %8s %9s %7s %8s %8s %7s\n' "$RATE" "$TOTAL" "$SUCCESS" "$FAILED" \
        "$ACHIEVED" "$CPU_PCT" "$(($(rss_kb "$PEER_PID") / 1024))" \
        "$(($(hwm_kb "$PEER_PID") / 1024))" "$((D1 - D0))"
    # Passing: sipp exit 0, every call successful, and the rate held (sipp
    # throttles at -l when the peer lags, which would show as a lower rate).
    if [[ "$SIPP_RC" == 0 && "$FAILED" == 0 && "$SUCCESS" == "$TOTAL" \
          && "$ELAPSED_MS" -le $((STEP_SECONDS * 1000 * 110 / 100 + 2000)) ]]; then
        # Report what was sustained, not what was asked for.
        MAX_CPS="$ACHIEVED"
    else
        echo "rate $RATE failed (sipp exit $SIPP_RC, ${ELAPSED_MS} ms); see $WORK" >&2
        break
    fi
    if ! kill -0 "$PEER_PID" 2>/dev/null; then
        echo "the peer died; see $WORK/peer.err" >&2
        break
    fi
done

PEAK_KB="$(hwm_kb "$PEER_PID")"
echo "waiting ${IDLE_WAIT}s for the last transactions to end..."
sleep "$IDLE_WAIT"
AFTER_KB="$(rss_kb "$PEER_PID")"
kill -TERM "$PEER_PID"
for _ in $(seq 50); do kill -0 "$PEER_PID" 2>/dev/null || break; sleep 0.1; done
PEER_PID=""
echo "peer: $(tr '\n' ' ' <"$WORK/peer.out")"
echo "rss idle_before=$((IDLE_RSS_KB / 1024))MB peak=$((PEAK_KB / 1024))MB after=$((AFTER_KB / 1024))MB"
echo "RESULT max_cps=$MAX_CPS rss_mb=$((PEAK_KB / 1024))"
