#!/usr/bin/env bash
# Call-rate benchmark per SIP transport: UDP, TCP and TLS against a sipd peer
# that answers every call (bench/accept_peer.py, no media), in one run, with
# TCP's and TLS's rates as ratios to UDP's.
#
# Every call is sipp's `uac` scenario: INVITE, 100/180/200, ACK, BYE/200, no
# hold time. For each rate in RATES, RATE calls per second are placed for
# STEP_SECONDS; a step passes when every call succeeded and the rate was held
# (the calls finished within 110 % of the step + 2 s). The search for a
# transport stops at its first failing step. Each search gets a fresh peer,
# listening on that transport, whose CPU, RSS and peak RSS are reported per
# step, and which is stopped by PID once its search is done.
#
# Two load generators:
#   * bench/call_gen.py, sipd UAs placing the calls, for every transport in
#     TRANSPORTS (default "udp tcp tls"). The ratios come from these runs, so
#     that the three transports are measured with the same generator. It runs
#     GENERATORS processes (default: cores - 1); its CPU (gen_cpu%, summed
#     over its processes, 100 = one core) is printed beside the peer's: when
#     the generator, not the peer, is near its cores' worth, a failing step
#     says more about the generator than the peer, and the notes say so.
#   * sipp (C, far cheaper per call) for every transport in SIPP_TRANSPORTS
#     (default "udp tcp"; TCP as `-t t1`, one connection for all calls, like
#     call_gen.py's connection reuse). Debian's sipp is built without TLS,
#     hence call_gen.py. sipp_max_cps_udp is the figure this script reported
#     as max_cps before it measured other transports.
#
# The peers. accept_peer.py is the *tuned* peer: a UnifiedCoordinator with
# warnings-only logging and no idle silence. `--peer simple` and `--peer
# daemon` (or PEERS="tuned simple daemon") measure, in the same run and with
# sipp over UDP, the paths users actually get:
#   * simple: `accept_peer.py --api simple`, a SimplePeer with its defaults
#     (idle silence, an RTP port pair per call, no logging set up, as in the
#     README) answering from wait_for_incoming();
#   * daemon: `twistd -n sipd` with etc/sipd.yaml's defaults (echo handler,
#     info-level log to a file, the console recording every call's messages);
#   * daemon_noconsole: the same daemon with `console: {enabled: false}`, to
#     measure what the console's recording costs per call (compare
#     calls_per_cpu_s at the same rate, e.g. RATES="300").
# Both turn off only the per-source INVITE limit (every sipp call comes from
# one address), as the tuned peer does.
#
# Last line:
#
#   RESULT max_cps=<N> calls_per_cpu_s=<X> max_cps_udp=<N> max_cps_tcp=<N> max_cps_tls=<N>
#          tcp_vs_udp=<R> tls_vs_udp=<R> sipp_max_cps_udp=<N> sipp_max_cps_tcp=<N>
#          sipp_tcp_vs_udp=<R> [simple_max_cps=<N> simple_calls_per_cpu_s=<X>
#          simple_vs_tuned=<R>] [daemon_... likewise] rss_mb=<M>
#
# (one line; keys for transports or peers left out are left out). max_cps is
# the tuned peer's rate with sipp over UDP (the generator the issue's figures
# use; call_gen.py's over UDP without sipp), calls_per_cpu_s the calls that
# peer completed per second of its own CPU time at that step; *_max_cps the
# rate sustained at the highest passing step; *_vs_tuned the ratio of a
# peer's max_cps to the tuned one's; rss_mb the highest peak RSS of the peers.
#
# Settings (environment): PEERS (default "tuned"; --peer NAME adds one), TRANSPORTS, SIPP_TRANSPORTS (empty: no sipp),
# STEP_SECONDS (default 30), RATES (default "100 200 400 500 600 700 800 1000"),
# GENERATORS (call_gen.py processes), IDLE_WAIT (seconds to wait after each
# search before reading the peer's RSS again, default 40: UDP transactions of
# the last calls live 64*T1 = 32 s), SIPP (default /usr/bin/sipp),
# SIPD_PROFILE=<file> (run the peers under cProfile; <file>.<transport> each;
# see accept_peer.py). Example, a quick check:
#
#   STEP_SECONDS=5 RATES="50 100" IDLE_WAIT=1 bash bench/cps.sh
#
# Needs sipp (Debian package sip-tester) unless SIPP_TRANSPORTS is empty.
# Runs on 127.0.0.1 only; every process it starts is stopped by its PID and
# every load run is bounded in calls and in time. TLS certificates are made
# for the run (bench/bench_certs.py) in its work folder.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
SIPP="${SIPP:-/usr/bin/sipp}"
STEP_SECONDS="${STEP_SECONDS:-30}"
RATES="${RATES:-100 200 400 500 600 700 800 1000}"
IDLE_WAIT="${IDLE_WAIT:-40}"
TRANSPORTS="${TRANSPORTS-udp tcp tls}"
SIPP_TRANSPORTS="${SIPP_TRANSPORTS-udp tcp}"
GENERATORS="${GENERATORS:-$(($(nproc) > 1 ? $(nproc) - 1 : 1))}"
MARGIN=15
PEERS="${PEERS:-tuned}"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --peer) [[ $# -ge 2 ]] || { echo "--peer needs tuned, simple or daemon" >&2; exit 2; }
                PEERS+=" $2"; shift 2 ;;
        --peer=*) PEERS+=" ${1#--peer=}"; shift ;;
        *) echo "unknown argument $1 (--peer tuned|simple|daemon)" >&2; exit 2 ;;
    esac
done
PEERS="$(tr ' ' '\n' <<<"$PEERS" | awk 'NF && !seen[$0]++' | tr '\n' ' ')"
for K in $PEERS; do
    case "$K" in
        tuned|simple|daemon|daemon_noconsole) ;;
        *) echo "unknown peer $K (tuned, simple, daemon, daemon_noconsole)" >&2; exit 2 ;;
    esac
    if [[ "$K" != tuned && ! -x "$SIPP" ]]; then
        echo "--peer $K is measured with sipp: install the Debian package sip-tester" >&2; exit 2
    fi
done

for T in $TRANSPORTS; do
    case "$T" in udp|tcp|tls) ;; *) echo "TRANSPORTS: unknown transport $T (udp, tcp, tls)" >&2; exit 2 ;; esac
done
for T in $SIPP_TRANSPORTS; do
    case "$T" in
        udp|tcp) ;;
        tls) echo "SIPP_TRANSPORTS: Debian's sipp has no TLS; call_gen.py measures TLS (TRANSPORTS)" >&2; exit 2 ;;
        *) echo "SIPP_TRANSPORTS: unknown transport $T (udp, tcp)" >&2; exit 2 ;;
    esac
done
if [[ -n "$SIPP_TRANSPORTS" && ! -x "$SIPP" ]]; then
    echo "sipp not found at $SIPP: install the Debian package sip-tester (or SIPP_TRANSPORTS=)" >&2
    exit 2
fi

WORK="$(mktemp -d /tmp/sipd-cps.XXXXXX)"
PEER_PID=""
LOAD_PID=""
cleanup() {
    if [[ -n "$LOAD_PID" ]] && kill -0 "$LOAD_PID" 2>/dev/null; then
        kill -TERM "$LOAD_PID" 2>/dev/null || true
        sleep 1
        kill -KILL "$LOAD_PID" 2>/dev/null || true
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
free_port() {  # $1: udp or tcp
    "$PY" -c 'import socket, sys
kind = socket.SOCK_DGRAM if sys.argv[1] == "udp" else socket.SOCK_STREAM
s = socket.socket(socket.AF_INET, kind); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' "$1"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "nan" }'; }
# Column of a sipp -trace_stat CSV by header name, from its last line.
stat_col() {
    awk -F';' -v name="$2" '
        NR == 1 { for (i = 1; i <= NF; i++) if ($i == name) col = i; next }
        { last = $col }
        END { print (col ? last : "") }' "$1"
}
# Value of key=value in a RESULT line.
result_val() { tr ' ' '\n' <<<"$1" | awk -F= -v k="$2" '$1 == k {print $2}'; }

cd "$ROOT"
"$PY" "$HERE/bench_certs.py" "$WORK/certs" >/dev/null
echo "work=$WORK cores=$(nproc) step_seconds=$STEP_SECONDS rates=[$RATES]"
echo "call_gen.py: transports=[$TRANSPORTS] processes=$GENERATORS; sipp: transports=[$SIPP_TRANSPORTS]"

# start_peer NAME TRANSPORT [KIND]: a fresh peer of KIND (tuned, simple,
# daemon; default tuned); sets PEER_PID, PEER_PORT (and HTTP_PORT for the daemon).
start_peer() {
    local name="$1" transport="$2" kind="${3:-tuned}"
    local profile=()
    if [[ -n "${SIPD_PROFILE:-}" ]]; then profile=(env "SIPD_PROFILE=$SIPD_PROFILE.$name"); fi
    local launched
    if [[ "$kind" == daemon* ]]; then
        PEER_PORT="$(free_port udp)"
        HTTP_PORT="$(free_port tcp)"
        # etc/sipd.yaml's defaults but for the addresses, the RTP range and
        # the per-source limit (sipp's calls all come from one address).
        printf '%s\n' "sip: {listen: 127.0.0.1:$PEER_PORT}" "http: {listen: 127.0.0.1:$HTTP_PORT}" \
            "media: {port_min: 20000, port_max: 60000}" "overload: {source_rate: 0}" >"$WORK/$name.yaml"
        if [[ "$kind" == daemon_noconsole ]]; then echo "console: {enabled: false}" >>"$WORK/$name.yaml"; fi
        "$PY" -c "import sys; from twisted.scripts.twistd import run; sys.exit(run())" \
            -n --pidfile= --logfile "$WORK/$name.log" sipd --config "$WORK/$name.yaml" \
            >"$WORK/$name.out" 2>"$WORK/$name.err" &
        launched=$!
        for _ in $(seq 100); do
            curl -fs "http://127.0.0.1:$HTTP_PORT/status" >/dev/null 2>&1 && break
            sleep 0.1
        done
        PEER_PID="$launched"
        if ! curl -fs "http://127.0.0.1:$HTTP_PORT/status" >/dev/null 2>&1; then
            echo "twistd sipd did not start:" >&2
            cat "$WORK/$name.err" "$WORK/$name.log" >&2
            exit 2
        fi
    else
        local api=()
        if [[ "$kind" == simple ]]; then api=(--api simple); fi
        "${profile[@]}" "$PY" "$HERE/accept_peer.py" --port 0 --transport "$transport" "${api[@]}" \
            --cert "$WORK/certs/server.crt" --key "$WORK/certs/server.key" \
            >"$WORK/$name.out" 2>"$WORK/$name.err" &
        launched=$!
        for _ in $(seq 100); do
            grep -q '^PORT ' "$WORK/$name.out" 2>/dev/null && break
            sleep 0.1
        done
        PEER_PID="$(awk '/^PID / {print $2}' "$WORK/$name.out")"
        PEER_PORT="$(awk '/^PORT / {print $2}' "$WORK/$name.out")"
        if [[ -z "$PEER_PID" || -z "$PEER_PORT" || "$PEER_PID" != "$launched" ]]; then
            echo "accept_peer.py did not start:" >&2
            cat "$WORK/$name.err" >&2
            exit 2
        fi
    fi
    sleep 1
    IDLE_RSS_KB="$(rss_kb "$PEER_PID")"
    echo "$name: pid=$PEER_PID port=$PEER_PORT idle_rss=$((IDLE_RSS_KB / 1024))MB"
}

# stop_peer NAME TRANSPORT: idle wait, RSS, SIGTERM by PID; checks that the
# INVITEs came over TRANSPORT (the peer's RECEIVED line). Sets PEAK_KB.
stop_peer() {
    local name="$1" transport="$2" kind="${3:-tuned}"
    PEAK_KB="$(hwm_kb "$PEER_PID")"
    sleep "$IDLE_WAIT"
    local after_kb
    after_kb="$(rss_kb "$PEER_PID")"
    if [[ "$kind" == daemon* ]]; then
        # The daemon prints no RECEIVED line: its /metrics count the INVITEs by transport.
        curl -fs "http://127.0.0.1:$HTTP_PORT/metrics" | awk '
            /^sipd_sip_requests_received_total\{/ && /method="INVITE"/ {
                t = "udp"; if (match($0, /transport="[a-z]+"/)) t = substr($0, RSTART + 11, RLENGTH - 12)
                n[t] += $NF }
            END { printf "RECEIVED udp=%d tcp=%d tls=%d\n", n["udp"], n["tcp"], n["tls"] }' >>"$WORK/$name.out"
    fi
    kill -TERM "$PEER_PID"
    for _ in $(seq 50); do kill -0 "$PEER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$PEER_PID" 2>/dev/null || true
    PEER_PID=""
    echo "  $name: $(tr '\n' ' ' <"$WORK/$name.out" | cut -c1-240)"
    echo "  $name: rss idle_before=$((IDLE_RSS_KB / 1024))MB peak=$((PEAK_KB / 1024))MB" \
        "after ${IDLE_WAIT}s idle=$((after_kb / 1024))MB"
    local received others
    received="$(awk -v t="$transport" '/^RECEIVED / { for (i = 2; i <= NF; i++) { split($i, kv, "=");
        if (kv[1] == t) print kv[2] } }' "$WORK/$name.out")"
    others="$(awk -v t="$transport" '/^RECEIVED / { s = 0; for (i = 2; i <= NF; i++) { split($i, kv, "=");
        if (kv[1] != t) s += kv[2] }; print s }' "$WORK/$name.out")"
    if [[ -z "$received" || "$received" == 0 || "${others:-0}" != 0 ]]; then
        echo "  $name: the INVITEs did not all come over $transport (${received:-?} did," \
            "${others:-?} over others); its figures are void" >&2
        VOID=1
    fi
}

# step_gen TRANSPORT RATE: one step of call_gen.py. step_sipp TRANSPORT RATE: of sipp.
# Both set TOTAL SUCCESS FAILED ELAPSED_MS GEN_CPU LOAD_RC.
step_gen() {
    local transport="$1" rate="$2" out="$WORK/gen-$1-$2.out"
    TOTAL=$((rate * STEP_SECONDS))
    set +e
    timeout -k 5 $((STEP_SECONDS + MARGIN + 60)) "$PY" "$HERE/call_gen.py" \
        --target "127.0.0.1:$PEER_PORT" --transport "$transport" --ca "$WORK/certs/ca.crt" \
        --rate "$rate" --seconds "$STEP_SECONDS" --processes "$GENERATORS" \
        --max-concurrent $((rate * 2)) --margin "$MARGIN" --work "$WORK/gen-$transport-$rate" \
        >"$out" 2>&1 &
    LOAD_PID=$!
    wait "$LOAD_PID"
    LOAD_RC=$?
    LOAD_PID=""
    set -e
    local result
    result="$(grep '^RESULT ' "$out" | tail -1)"
    SUCCESS="$(result_val "$result" success)"
    SUCCESS="${SUCCESS:-0}"
    FAILED=$((TOTAL - SUCCESS))
    ELAPSED_MS="$(result_val "$result" elapsed_ms)"
    ELAPSED_MS="${ELAPSED_MS:-0}"
    GEN_CPU="$(result_val "$result" gen_cpu_pct)"
    GEN_CPU="${GEN_CPU:--}"
}
step_sipp() {
    local transport="$1" rate="$2" stat="$WORK/sipp-$1-$2.csv" port flag
    TOTAL=$((rate * STEP_SECONDS))
    port="$(free_port "$transport")"
    flag=u1
    if [[ "$transport" == tcp ]]; then flag=t1; fi
    local t0
    t0="$(now_ns)"
    set +e
    timeout -k 5 $((STEP_SECONDS + MARGIN + 5)) "$SIPP" -sn uac -t "$flag" -i 127.0.0.1 -p "$port" \
        "127.0.0.1:$PEER_PORT" -r "$rate" -rp 1000 -m "$TOTAL" -l $((rate * 2)) -d 0 \
        -max_socket 1024 -buff_size 4194304 -nostdin -timeout "$((STEP_SECONDS + MARGIN))s" -timeout_error \
        -trace_stat -stf "$stat" -fd 1 -trace_err -error_file "$WORK/sipp-errors-$transport-$rate.log" \
        >"$WORK/sipp-$transport-$rate.out" 2>&1 &
    LOAD_PID=$!
    wait "$LOAD_PID"
    LOAD_RC=$?
    LOAD_PID=""
    set -e
    ELAPSED_MS=$((($(now_ns) - t0) / 1000000))
    SUCCESS="$(stat_col "$stat" 'SuccessfulCall(C)' 2>/dev/null || true)"
    FAILED="$(stat_col "$stat" 'FailedCall(C)' 2>/dev/null || true)"
    SUCCESS="${SUCCESS:-0}"
    FAILED="${FAILED:-?}"
    GEN_CPU="-"
}

# search GEN TRANSPORT [KIND]: the step search with generator GEN (gen or
# sipp) against a peer of KIND; sets MAX_CPS and CALLS_PER_CPU_S (at that step).
search() {
    local gen="$1" transport="$2" kind="${3:-tuned}" name="peer-${3:-tuned}-$1-$2"
    start_peer "$name" "$transport" "$kind"
    printf '%5s %4s %6s %8s %8s %8s %9s %6s %6s %7s %7s %6s\n' \
        load via rate target success failed achieved peer% gen% rss_mb hwm_mb drops
    MAX_CPS=0
    CALLS_PER_CPU_S=0
    local rate c0 c1 d0 d1 t0 t1 ms achieved cpu
    for rate in $RATES; do
        t0="$(now_ns)"
        c0="$(cpu_ticks "$PEER_PID")"
        d0="$(udp_drops)"
        "step_$gen" "$transport" "$rate"
        t1="$(now_ns)"
        c1="$(cpu_ticks "$PEER_PID")"
        d1="$(udp_drops)"
        ms=$(((t1 - t0) / 1000000))
        achieved=$((SUCCESS * 1000 / (ELAPSED_MS > 0 ? ELAPSED_MS : 1)))
        cpu=$(((c1 - c0) * 100000 / CLK_TCK / (ms > 0 ? ms : 1)))
        printf '%5s %4s %6s %8s %8s %8s %9s %6s %6s %7s %7s %6s\n' "$gen" "$transport" "$rate" \
            "$TOTAL" "$SUCCESS" "$FAILED" "$achieved" "$cpu" "$GEN_CPU" \
            "$(($(rss_kb "$PEER_PID") / 1024))" "$(($(hwm_kb "$PEER_PID") / 1024))" "$((d1 - d0))"
        # Passing: the generator's exit 0, every call successful, the rate held.
        if [[ "$LOAD_RC" == 0 && "$FAILED" == 0 && "$SUCCESS" == "$TOTAL" \
              && "$ELAPSED_MS" -le $((STEP_SECONDS * 1000 * 110 / 100 + 2000)) ]]; then
            MAX_CPS="$achieved"  # what was sustained, not what was asked for
            CALLS_PER_CPU_S=$((c1 > c0 ? SUCCESS * CLK_TCK / (c1 - c0) : 0))
        else
            local why=""
            if [[ "$GEN_CPU" != "-" && "$GEN_CPU" -ge $((GENERATORS * 90)) ]]; then
                why=" (the generator used ${GEN_CPU}% CPU of ${GENERATORS} process(es): it, not the peer, may have been the limit)"
            fi
            echo "  $gen over $transport: rate $rate failed (exit $LOAD_RC, ${ELAPSED_MS} ms)$why; see $WORK" >&2
            break
        fi
        if ! kill -0 "$PEER_PID" 2>/dev/null; then
            echo "  the peer died; see $WORK/$name.err" >&2
            exit 1
        fi
    done
    stop_peer "$name" "$transport" "$kind"
}

VOID=0
declare -A GEN_MAX SIPP_MAX
PEAK_ALL_KB=0
declare -A GEN_PER_CPU
for T in $TRANSPORTS; do
    search gen "$T"
    GEN_MAX[$T]="$MAX_CPS"
    GEN_PER_CPU[$T]="$CALLS_PER_CPU_S"
    PEAK_ALL_KB=$((PEAK_KB > PEAK_ALL_KB ? PEAK_KB : PEAK_ALL_KB))
done
declare -A SIPP_PER_CPU KIND_MAX KIND_PER_CPU
for T in $SIPP_TRANSPORTS; do
    search sipp "$T"
    SIPP_MAX[$T]="$MAX_CPS"
    SIPP_PER_CPU[$T]="$CALLS_PER_CPU_S"
    PEAK_ALL_KB=$((PEAK_KB > PEAK_ALL_KB ? PEAK_KB : PEAK_ALL_KB))
done
for K in $PEERS; do
    [[ "$K" == tuned ]] && continue
    search sipp udp "$K"
    KIND_MAX[$K]="$MAX_CPS"
    KIND_PER_CPU[$K]="$CALLS_PER_CPU_S"
    PEAK_ALL_KB=$((PEAK_KB > PEAK_ALL_KB ? PEAK_KB : PEAK_ALL_KB))
done

RESULT="RESULT"
if [[ -n "${SIPP_MAX[udp]:-}" ]]; then
    TUNED_MAX="${SIPP_MAX[udp]}"; RESULT+=" max_cps=$TUNED_MAX calls_per_cpu_s=${SIPP_PER_CPU[udp]}"
elif [[ -n "${GEN_MAX[udp]:-}" ]]; then
    TUNED_MAX="${GEN_MAX[udp]}"; RESULT+=" max_cps=$TUNED_MAX calls_per_cpu_s=${GEN_PER_CPU[udp]}"
else
    TUNED_MAX=""
fi
for T in $TRANSPORTS; do RESULT+=" max_cps_$T=${GEN_MAX[$T]}"; done
if [[ -n "${GEN_MAX[udp]:-}" ]]; then
    for T in tcp tls; do
        if [[ -n "${GEN_MAX[$T]:-}" ]]; then RESULT+=" ${T}_vs_udp=$(ratio "${GEN_MAX[$T]}" "${GEN_MAX[udp]}")"; fi
    done
fi
for T in $SIPP_TRANSPORTS; do RESULT+=" sipp_max_cps_$T=${SIPP_MAX[$T]}"; done
if [[ -n "${SIPP_MAX[udp]:-}" && -n "${SIPP_MAX[tcp]:-}" ]]; then
    RESULT+=" sipp_tcp_vs_udp=$(ratio "${SIPP_MAX[tcp]}" "${SIPP_MAX[udp]}")"
fi
for K in $PEERS; do
    [[ "$K" == tuned ]] && continue
    RESULT+=" ${K}_max_cps=${KIND_MAX[$K]} ${K}_calls_per_cpu_s=${KIND_PER_CPU[$K]}"
    if [[ -n "$TUNED_MAX" ]]; then RESULT+=" ${K}_vs_tuned=$(ratio "${KIND_MAX[$K]}" "$TUNED_MAX")"; fi
done
RESULT+=" rss_mb=$((PEAK_ALL_KB / 1024))"
if [[ "$VOID" != 0 ]]; then
    echo "some load did not go over the transport it was meant for (see above)" >&2
    echo "$RESULT void=1"
    exit 1
fi
echo "$RESULT"
