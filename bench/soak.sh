#!/usr/bin/env bash
# Soak benchmark: a long run at half the measured capacity, with media calls
# throughout and callers that vanish without BYE. Does sipd leak calls or memory?
#
# The system under test is one sipd UA process (bench/soak_peer.py --role ua):
# it answers every call, ends an answered call that hears no RTP/RTCP for
# MEDIA_TIMEOUT seconds with BYE (media timer) and runs RFC 4028 session timers
# (SESSION_EXPIRES). Against it, for DURATION_MIN minutes:
#
#   * sipp runs bench/soak_uac.xml at RATE calls/s (INVITE with SDP, ACK, hold
#     HOLD_MS, BYE). VANISH_PCT % of the callers vanish after the ACK: no BYE,
#     and their later messages go unanswered (sipp has forgotten the call).
#     The UA's media timer must end each of those calls (its BYE to the gone
#     caller may go unanswered: the BYE transaction then times out, 32 s).
#   * a media caller (bench/soak_peer.py --role media) keeps MEDIA_CALLS calls
#     up with real G.711 RTP both ways (a tone each way), each lasting about
#     MEDIA_HOLD seconds, hung up with BYE and placed again; the calls last
#     long enough to be refreshed by the session timer.
#
# Every SAMPLE_S seconds the script reads the UA's RSS (/proc/<pid>/status
# VmRSS) and CPU (/proc/<pid>/stat) and asks both sipd processes for their
# counts (SIGUSR1). To tell the UA's own stalls from a busy machine it also
# shows the UA's worst event-loop lag, the INVITEs its overload control refused
# with 503, the share of time the UA was runnable but waiting for a CPU
# (/proc/<pid>/schedstat) and the load average; the UA's STATS lines (in
# $WORK/ua.out) add its garbage-collector pauses. After the load it stops the
# media caller, waits for the UA's last calls to end (at most DRAIN_S seconds),
# reads its final counts (SIGTERM) and prints (bench/soak_report.py) per-minute
# RSS/CPU/live calls, the call counts, a CHECK line matching the vanished
# callers against the calls the timers ended, and as its last line:
#
#   RESULT minutes=<M> calls=<N> vanished=<V> ended_by_timer=<T> unexpected_failures=<F> rss_growth_pct_5_to_end=<X>
#
# calls: sipp calls that ran as scripted (vanished ones included) plus media
# calls completed; vanished: sipp callers that vanished; ended_by_timer: sipp
# calls the UA ended by its media or session timer; unexpected_failures: sipp's
# failed calls plus media calls that failed (refused, dropped, silent, failed
# hangup); X: RSS growth from minute RSS_BASE_MIN (5; 1 for runs under 10
# minutes) to the end of the load. Targets: F = 0, T = V (every vanished call
# ended by a timer, and only those), X < 5.
#
# Settings (environment): DURATION_MIN (30), CAPACITY (calls/s the UA carries,
# as bench/cps.sh or bench/overload.sh measure it; default 300), RATE (CAPACITY/2),
# MEDIA_CALLS (20), VANISH_PCT (10), HOLD_MS (1000; must stay well under
# MEDIA_TIMEOUT, sipp sends no RTP), MEDIA_TIMEOUT (5), SESSION_EXPIRES (120),
# MIN_SE (90), MEDIA_HOLD (120), SAMPLE_S (30), RSS_BASE_MIN, DRAIN_S
# (MEDIA_TIMEOUT + 60), UA_SETTINGS (extra KEY=VALUE SipdConfig words for the
# UA), SIPP (/usr/bin/sipp). Needs sipp (Debian package sip-tester). Runs on
# 127.0.0.1 only; every loop is bounded, every process it starts is stopped by
# its PID on exit, and sipp runs under `timeout`.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
SIPP="${SIPP:-/usr/bin/sipp}"
DURATION_MIN="${DURATION_MIN:-30}"
CAPACITY="${CAPACITY:-300}"
RATE="${RATE:-$((CAPACITY / 2))}"
MEDIA_CALLS="${MEDIA_CALLS:-20}"
VANISH_PCT="${VANISH_PCT:-10}"
HOLD_MS="${HOLD_MS:-1000}"
MEDIA_TIMEOUT="${MEDIA_TIMEOUT:-5}"
SESSION_EXPIRES="${SESSION_EXPIRES:-120}"
MIN_SE="${MIN_SE:-90}"
MEDIA_HOLD="${MEDIA_HOLD:-120}"
SAMPLE_S="${SAMPLE_S:-30}"
if [[ "$DURATION_MIN" -ge 10 ]]; then RSS_BASE_MIN="${RSS_BASE_MIN:-5}"; else RSS_BASE_MIN="${RSS_BASE_MIN:-1}"; fi
DRAIN_S="${DRAIN_S:-$((MEDIA_TIMEOUT + 60))}"
UA_SETTINGS="${UA_SETTINGS:-}"
# sipp may run this long past its last call (a call lives HOLD_MS plus
# retransmissions; a late INVITE transaction gives up after 32 s).
MARGIN=45

if [[ ! -x "$SIPP" ]]; then
    echo "sipp not found at $SIPP: install the Debian package sip-tester" >&2
    exit 2
fi
if (( RATE < 1 || DURATION_MIN < 1 || MEDIA_CALLS < 0 || VANISH_PCT < 0 || VANISH_PCT > 100 )); then
    echo "bad settings: RATE=$RATE DURATION_MIN=$DURATION_MIN MEDIA_CALLS=$MEDIA_CALLS VANISH_PCT=$VANISH_PCT" >&2
    exit 2
fi

WORK="$(mktemp -d /tmp/sipd-soak.XXXXXX)"
UA_PID=""
MEDIA_PID=""
SIPP_PID=""
stop_pid() {  # stop_pid PID SIGNAL: signal it, wait up to 10 s, then SIGKILL
    local pid="$1"
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 0
    kill "-$2" "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
}
cleanup() {
    stop_pid "$SIPP_PID" TERM  # the `timeout` wrapping sipp passes TERM on to it
    stop_pid "$MEDIA_PID" TERM
    stop_pid "$UA_PID" TERM
}
trap cleanup EXIT

CLK_TCK="$(getconf CLK_TCK)"
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
# Nanoseconds the process's main thread spent runnable but waiting for a CPU.
runq_wait_ns() { awk '{print $2}' "/proc/$1/schedstat" 2>/dev/null || echo 0; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
free_port() {
    "$PY" -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# An even port p with p..p+3 free (sipp binds its RTP echo ports there).
free_media_port() {
    "$PY" - <<'EOF'
import random, socket
for _ in range(200):
    p = random.randrange(46000, 49000, 2)
    socks = []
    try:
        for q in range(p, p + 4):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            socks.append(s)
            s.bind(("127.0.0.1", q))
    except OSError:
        continue
    finally:
        for s in socks:
            s.close()
    print(p)
    break
EOF
}
# wait_line FILE PREFIX SECONDS PID: wait for a line starting with PREFIX.
wait_line() {
    local i
    for i in $(seq $(($3 * 10))); do
        grep -q "^$2" "$1" 2>/dev/null && return 0
        kill -0 "$4" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}
# last_stat FILE EXPR: a value from the last STATS line (a Python expression on d).
last_stat() {
    grep '^STATS ' "$1" 2>/dev/null | tail -n 1 | cut -c7- |
        "$PY" -c "import json,sys
t=sys.stdin.read().strip()
d=json.loads(t) if t else {}
try: print($2)
except Exception: print('?')"
}
# Column of sipp's -trace_stat CSV by name, from its last line (0 if none yet).
stat_col() {
    awk -F';' -v name="$2" '
        NR == 1 { for (i = 1; i <= NF; i++) if ($i == name) c = i; next }
        { last = $c }
        END { print (c && last != "" ? last : 0) }' "$1" 2>/dev/null || echo 0
}

cd "$ROOT"
# -- the UA under test --------------------------------------------------------------------
UA_ARGS=(--role ua --ends "$WORK/ends.txt" --media-timeout "$MEDIA_TIMEOUT"
         --session-expires "$SESSION_EXPIRES" --min-se "$MIN_SE"
         --media-port-min 20000 --media-port-max 39999)
for setting in $UA_SETTINGS; do UA_ARGS+=(--set "$setting"); done
"$PY" "$HERE/soak_peer.py" "${UA_ARGS[@]}" >"$WORK/ua.out" 2>"$WORK/ua.err" &
UA_PID=$!
if ! wait_line "$WORK/ua.out" "PORT " 30 "$UA_PID"; then
    echo "the UA did not start:" >&2; cat "$WORK/ua.err" >&2; exit 2
fi
UA_PORT="$(awk '/^PORT / {print $2}' "$WORK/ua.out")"
sleep 1
IDLE_RSS_KB="$(rss_kb "$UA_PID")"

# -- the media caller ------------------------------------------------------------------------
"$PY" "$HERE/soak_peer.py" --role media --target "sip:ua@127.0.0.1:$UA_PORT" \
    --calls "$MEDIA_CALLS" --hold "$MEDIA_HOLD" --media-timeout "$MEDIA_TIMEOUT" \
    --session-expires "$SESSION_EXPIRES" --min-se "$MIN_SE" \
    --media-port-min 40000 --media-port-max 45999 \
    --max-seconds $((DURATION_MIN * 60 + 30)) >"$WORK/media.out" 2>"$WORK/media.err" &
MEDIA_PID=$!
if ! wait_line "$WORK/media.out" "READY" 30 "$MEDIA_PID"; then
    echo "the media caller did not start:" >&2; cat "$WORK/media.err" >&2; exit 2
fi
# Wait (at most 20 s) for the media calls to be up before the load starts.
for _ in $(seq 20); do
    kill -USR1 "$MEDIA_PID" 2>/dev/null || break
    sleep 1
    [[ "$(last_stat "$WORK/media.out" 'd.get("up", 0)')" -ge "$MEDIA_CALLS" ]] && break
done

# -- sipp -----------------------------------------------------------------------------------
FRACTION="$(awk -v p="$VANISH_PCT" 'BEGIN { printf "%.4f", p / 100 }')"
sed "s/compare=\"less_than\" value=\"0.1\"/compare=\"less_than\" value=\"$FRACTION\"/" \
    "$HERE/soak_uac.xml" >"$WORK/soak_uac.xml"
grep -q "value=\"$FRACTION\"" "$WORK/soak_uac.xml" || { echo "could not set the vanish fraction" >&2; exit 2; }
LOAD_S=$((DURATION_MIN * 60))
TOTAL=$((RATE * LOAD_S))
SIPP_PORT="$(free_port)"
MEDIA_PORT="$(free_media_port)"
echo "ua pid=$UA_PID port=$UA_PORT idle_rss=$((IDLE_RSS_KB / 1024))MB; media caller pid=$MEDIA_PID; work=$WORK"
echo "duration=${DURATION_MIN}min rate=${RATE}/s (capacity $CAPACITY) calls=$TOTAL hold=${HOLD_MS}ms" \
     "vanish=${VANISH_PCT}% media_calls=$MEDIA_CALLS media_hold=${MEDIA_HOLD}s" \
     "media_timeout=${MEDIA_TIMEOUT}s session_expires=${SESSION_EXPIRES}s cores=$(nproc)" \
     "load_before=$(cut -d' ' -f1-3 /proc/loadavg)"
T0="$(now_ms)"
set +e
timeout -k 5 $((LOAD_S + MARGIN + 10)) "$SIPP" -sf "$WORK/soak_uac.xml" -i 127.0.0.1 -p "$SIPP_PORT" \
    -mp "$MEDIA_PORT" "127.0.0.1:$UA_PORT" -s ua -r "$RATE" -rp 1000 -m "$TOTAL" -d "$HOLD_MS" \
    -l $((RATE * 20)) -max_socket 1024 -buff_size 4194304 -nostdin \
    -timeout "$((LOAD_S + MARGIN))s" -timeout_error \
    -trace_stat -stf "$WORK/stat.csv" -fd "$SAMPLE_S" \
    -trace_logs -log_file "$WORK/vanish.log" \
    -trace_err -error_file "$WORK/errors.log" -max_log_size 500000000 \
    >"$WORK/sipp.out" 2>&1 &
SIPP_PID=$!
set -e

# -- measure while the load runs -------------------------------------------------------------
printf '%7s %8s %6s %6s %9s %8s %9s %8s %7s %7s %6s %6s %s\n' t_s rss_mb cpu% live streaming media_up \
    sipp_ok sipp_fail lag_ms refused wait% load1 phase
printf 't_s\trss_kb\tcpu_pct\tlive\tstreaming\tmedia_up\tsipp_ok\tsipp_failed\tlag_max_ms\trefused_503\trunq_wait_pct\tload1\tphase\n' \
    >"$WORK/samples.tsv"
LAST_T="$T0"
LAST_C="$(cpu_ticks "$UA_PID")"
LAST_W="$(runq_wait_ns "$UA_PID")"
stats_lines() { grep -c '^STATS ' "$1" 2>/dev/null || true; }
sample() {  # sample PHASE: one row of measurements
    local t c w rss cpu wait load live streaming lag refused up ok failed ua_n media_n
    ua_n="$(stats_lines "$WORK/ua.out")"
    media_n="$(stats_lines "$WORK/media.out")"
    kill -USR1 "$UA_PID" 2>/dev/null || true
    [[ -n "$MEDIA_PID" ]] && kill -USR1 "$MEDIA_PID" 2>/dev/null
    t="$(now_ms)"
    c="$(cpu_ticks "$UA_PID")"
    rss="$(rss_kb "$UA_PID")"
    w="$(runq_wait_ns "$UA_PID")"
    load="$(cut -d' ' -f1 /proc/loadavg)"
    cpu=$(( (c - LAST_C) * 100000 / CLK_TCK / ((t - LAST_T) > 0 ? (t - LAST_T) : 1) ))
    # Share of the wall time the UA was ready to run but had no CPU (machine busy).
    wait=$(( (w - LAST_W) / 10000 / ((t - LAST_T) > 0 ? (t - LAST_T) : 1) ))
    LAST_T="$t"; LAST_C="$c"; LAST_W="$w"
    # Wait (at most 5 s: a stalled loop answers late) for both to answer SIGUSR1.
    for _ in $(seq 50); do
        if [[ "$(stats_lines "$WORK/ua.out")" -gt "$ua_n" ]] &&
            [[ -z "$MEDIA_PID" || "$(stats_lines "$WORK/media.out")" -gt "$media_n" ]]; then
            break
        fi
        sleep 0.1
    done
    read -r live streaming lag refused <<<"$(last_stat "$WORK/ua.out" \
        '" ".join(str(x) for x in (d["live"], d["streaming"], d["lag_max_ms"], sum(d["overload_rejected"].values())))')"
    up="-"
    [[ -n "$MEDIA_PID" ]] && up="$(last_stat "$WORK/media.out" 'd["up"]')"
    ok="$(stat_col "$WORK/stat.csv" 'SuccessfulCall(C)')"
    failed="$(stat_col "$WORK/stat.csv" 'FailedCall(C)')"
    printf '%7s %8s %6s %6s %9s %8s %9s %8s %7s %7s %6s %6s %s\n' $(((t - T0) / 1000)) $((rss / 1024)) \
        "$cpu" "$live" "$streaming" "$up" "$ok" "$failed" "$lag" "$refused" "$wait" "$load" "$1"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' $(((t - T0) / 1000)) "$rss" "$cpu" \
        "$live" "$streaming" "$up" "$ok" "$failed" "$lag" "$refused" "$wait" "$load" "$1" >>"$WORK/samples.tsv"
}
MAX_SAMPLES=$(( (LOAD_S + MARGIN + 20) / SAMPLE_S + 2 ))
for i in $(seq "$MAX_SAMPLES"); do
    # Sleep until the next sample is due, or sipp is done (checked every second).
    DUE=$((T0 + i * SAMPLE_S * 1000))
    for _ in $(seq $((SAMPLE_S + 2))); do
        (( $(now_ms) >= DUE )) && break
        kill -0 "$SIPP_PID" 2>/dev/null || break
        sleep 1
    done
    kill -0 "$UA_PID" 2>/dev/null || { echo "the UA died; see $WORK/ua.err" >&2; break; }
    kill -0 "$SIPP_PID" 2>/dev/null || break
    sample load
done
set +e
wait "$SIPP_PID"
SIPP_RC=$?
set -e
SIPP_PID=""
LOAD_END_MS="$(now_ms)"
echo "sipp exit $SIPP_RC after $(((LOAD_END_MS - T0) / 1000)) s"
kill -0 "$UA_PID" 2>/dev/null && sample load-end

# -- stop the media caller, drain, final counts -----------------------------------------------
kill -TERM "$MEDIA_PID" 2>/dev/null || true
wait_line "$WORK/media.out" "FINAL " 30 "$MEDIA_PID" || echo "the media caller gave no FINAL line" >&2
stop_pid "$MEDIA_PID" TERM
MEDIA_PID=""
# The last vanished calls end MEDIA_TIMEOUT after their ACK, plus 32 s if the
# BYE goes unanswered: wait for the UA to hold no call (at most DRAIN_S s).
DRAIN_START="$(now_ms)"
for _ in $(seq "$DRAIN_S"); do
    kill -0 "$UA_PID" 2>/dev/null || break
    kill -USR1 "$UA_PID" 2>/dev/null || true
    sleep 1
    [[ "$(last_stat "$WORK/ua.out" 'd["live"]')" == 0 ]] && break
done
echo "drained in $((($(now_ms) - DRAIN_START) / 1000)) s"
if kill -0 "$UA_PID" 2>/dev/null; then
    sample drained
    kill -TERM "$UA_PID" 2>/dev/null || true
    wait_line "$WORK/ua.out" "FINAL " 20 "$UA_PID" || echo "the UA gave no FINAL line" >&2
fi
stop_pid "$UA_PID" TERM
UA_PID=""

# sipp's error log holds every message for a call it had finished (the BYEs the
# UA's timers send to vanished callers) and every call it aborted, with why.
echo "sipp aborted calls (error log $WORK/errors.log), by what it received:"
grep -a -o "Aborting call on [a-z ]*message for Call-Id '[^']*': while [a-z]*[^,]*, received '[^ ]* [^ ]*" \
    "$WORK/errors.log" 2>/dev/null | sed "s/Call-Id '[^']*'/Call-Id/" | sort | uniq -c | head -10 || true
"$PY" "$HERE/soak_report.py" --work "$WORK" --duration-min "$DURATION_MIN" \
    --base-min "$RSS_BASE_MIN" --sipp-rc "$SIPP_RC" --planned "$TOTAL" --sample-s "$SAMPLE_S"
