#!/usr/bin/env bash
# Call rate through Kamailio with 1 and with 2 sipd workers, in one run.
#
# sipp (a uac scenario that follows Record-Route: INVITE, 100/180/200, ACK,
# BYE/200, no hold time, no media) calls Kamailio with the shipped cluster
# config (etc/kamailio/kamailio.cfg), whose dispatcher balances the calls by
# Call-ID hash over N workers, each a bench/accept_peer.py (a sipd UA that
# answers every call, no media, no 180: Kamailio's UDP receiver processes
# each forward what they read, so a 180 sent just before the 200 can reach
# sipp after it, which sipp's scenario takes for an unexpected message). For N in WORKER_COUNTS (default "1 2"), and
# each rate in RATES, RATE calls per second are placed for STEP_SECONDS; a
# step passes when every call succeeded and the rate was held (done within
# 110 % of the step + 2 s). The search for N stops at its first failing step;
# cps_N is the highest passing rate. Every step prints the CPU of each
# worker, of Kamailio (all its processes) and of sipp (100 = one core):
# on a machine with fewer cores than workers + Kamailio + sipp, the ratio
# says more about the cores than about the design, and the CPU shows which
# process ran out.
#
# Last line:
#
#   RESULT cps_1=<N> cps_2=<M> ratio=<M/N>
#
# Settings (environment): STEP_SECONDS (default 20), RATES (default
# "100 200 300 400 500 600 700 800 1000"), WORKER_COUNTS (default "1 2"),
# SIPP (default /usr/bin/sipp), KAMAILIO (default /usr/sbin/kamailio).
# A quick check:
#
#   STEP_SECONDS=5 RATES="100 200" bash bench/cluster.sh
#
# Runs on 127.0.0.1 only; every process it starts is stopped by its PID (and
# Kamailio's process group, which it leads), every step is bounded in calls
# and in time.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
SIPP="${SIPP:-/usr/bin/sipp}"
KAMAILIO="${KAMAILIO:-/usr/sbin/kamailio}"
STEP_SECONDS="${STEP_SECONDS:-20}"
RATES="${RATES:-100 200 300 400 500 600 700 800 1000}"
WORKER_COUNTS="${WORKER_COUNTS:-1 2}"
for prog in "$SIPP" "$KAMAILIO"; do
    [[ -x "$prog" ]] || { echo "$prog not found: install sip-tester and kamailio (make sysdeps)" >&2; exit 2; }
done

WORK="$(mktemp -d /tmp/sipd-cluster-bench.XXXXXX)"
WORKER_PIDS=()
KAM_PID=""
LOAD_PID=""
stop_pid() {  # PID: SIGTERM, wait up to 5 s, SIGKILL
    local pid="$1"
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
}
stop_all() {
    if [[ -n "$LOAD_PID" ]]; then stop_pid "$LOAD_PID"; LOAD_PID=""; fi
    if [[ -n "$KAM_PID" ]]; then
        stop_pid "$KAM_PID"
        kill -KILL -- "-$KAM_PID" 2>/dev/null || true  # its children, in the group it leads
        KAM_PID=""
    fi
    for pid in "${WORKER_PIDS[@]}"; do stop_pid "$pid"; done
    WORKER_PIDS=()
}
trap stop_all EXIT

cpu_ticks() { awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$1/stat" 2>/dev/null || echo 0; }
# CPU ticks of every process in process group $1 (Kamailio forks its workers).
group_ticks() {
    awk -v g="$1" '{ sub(/^.*\) /, ""); if ($3 == g) t += $12 + $13 } END { print t + 0 }' \
        /proc/[0-9]*/stat 2>/dev/null || echo 0
}
now_ns() { date +%s%N; }
free_port() {
    "$PY" -c 'import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
pct() { awk -v t="$1" -v ms="$2" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.0f", (ms > 0 ? 100 * t / hz / (ms / 1000) : 0) }'; }
rpc() {  # METHOD: Kamailio JSON-RPC over UDP
    "$PY" - "$RPC_PORT" "$1" <<'PYEOF'
import json, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1)
s.sendto(json.dumps({"jsonrpc": "2.0", "method": sys.argv[2], "id": 1}).encode(),
         ("127.0.0.1", int(sys.argv[1])))
print(s.recv(65535).decode())
PYEOF
}

cat >"$WORK/uac_rr.xml" <<'XML'
<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="uac through a record-routing proxy">
  <send retrans="500"><![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: [service] <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000
  ]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rrs="true"/>
  <send><![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: [service] <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      [routes]
      Max-Forwards: 70
      Content-Length: 0
  ]]></send>
  <send retrans="500"><![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: [service] <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      [routes]
      Max-Forwards: 70
      Content-Length: 0
  ]]></send>
  <recv response="200" crlf="true"/>
</scenario>
XML

# start_cluster N: N accept_peer.py workers and Kamailio in front of them.
start_cluster() {
    local n="$1" list="$WORK/dispatcher-$1.list"
    : >"$list"
    for i in $(seq "$n"); do
        local out="$WORK/worker-$n-$i.out"
        "$PY" "$HERE/accept_peer.py" --port 0 --set send_ringing=false >"$out" 2>"$WORK/worker-$n-$i.err" &
        WORKER_PIDS+=("$!")
        for _ in $(seq 100); do grep -q '^PORT ' "$out" 2>/dev/null && break; sleep 0.1; done
        local port
        port="$(awk '/^PORT / {print $2}' "$out")"
        [[ -n "$port" ]] || { echo "worker $i did not start:" >&2; cat "$WORK/worker-$n-$i.err" >&2; exit 2; }
        echo "1 sip:127.0.0.1:$port 0 0 duid=worker$i" >>"$list"
    done
    KAM_PORT="$(free_port)"
    RPC_PORT="$(free_port)"
    mkdir -p "$WORK/kam-$n"
    # setsid: Kamailio leads its own process group (its CPU is summed over it).
    setsid "$KAMAILIO" -f "$ROOT/etc/kamailio/kamailio.cfg" -DD -E -l "udp:127.0.0.1:$KAM_PORT" \
        -A "DS_LIST=\"$list\"" -A "RPC_SOCKET=\"udp:127.0.0.1:$RPC_PORT\"" -A DS_PING_INTERVAL=2 \
        -Y "$WORK/kam-$n" -P "$WORK/kam-$n/kamailio.pid" -w "$WORK/kam-$n" -m 256 -M 16 \
        >"$WORK/kamailio-$n.log" 2>&1 &
    KAM_PID=$!
    for _ in $(seq 100); do
        if rpc dispatcher.list 2>/dev/null | grep -c '"FLAGS":.*"AP"' | grep -qx "$n"; then break; fi
        sleep 0.2
    done
    rpc dispatcher.list | grep -c '"FLAGS":.*"AP"' | grep -qx "$n" || {
        echo "kamailio did not see $n workers up:" >&2; tail -20 "$WORK/kamailio-$n.log" >&2; exit 2; }
    echo "cluster of $n: kamailio pid=$KAM_PID port=$KAM_PORT; workers pids=${WORKER_PIDS[*]}"
}

# step N RATE: one step; sets PASS.
step() {
    local n="$1" rate="$2" total=$(($2 * STEP_SECONDS)) out="$WORK/sipp-$1-$2.log"
    local before=() k0 t0 t1 elapsed_ms
    for pid in "${WORKER_PIDS[@]}"; do before+=("$(cpu_ticks "$pid")"); done
    k0="$(group_ticks "$KAM_PID")"
    t0="$(now_ns)"
    set +e
    timeout -k 5 $((STEP_SECONDS * 2 + 40)) "$SIPP" -sf "$WORK/uac_rr.xml" -s service \
        -i 127.0.0.1 -p "$(free_port)" -m "$total" -r "$rate" -l $((rate * 4)) -d 0 \
        -timeout $((STEP_SECONDS * 2 + 30)) -nostdin -trace_err -error_file "$WORK/sipp-errors-$n-$rate.log" \
        "127.0.0.1:$KAM_PORT" >"$out" 2>&1 &
    LOAD_PID=$!
    local sipp_ticks=0 sipp_pid=""
    while kill -0 "$LOAD_PID" 2>/dev/null; do
        # LOAD_PID is timeout(1); sipp is its child.
        [[ -n "$sipp_pid" ]] || sipp_pid="$(ps -o pid= --ppid "$LOAD_PID" | tr -d ' ' | head -1)"
        if [[ -n "$sipp_pid" ]]; then
            local t
            t="$(cpu_ticks "$sipp_pid")"
            ((t > 0)) && sipp_ticks="$t"  # 0 once sipp has exited: keep the last reading
        fi
        sleep 0.5
    done
    wait "$LOAD_PID"
    local rc=$?
    LOAD_PID=""
    set -e
    t1="$(now_ns)"
    elapsed_ms=$(((t1 - t0) / 1000000))
    local ok failed
    ok="$(awk '/Successful call/ {v = $NF} END {print v + 0}' "$out")"
    failed="$(awk '/Failed call/ {v = $NF} END {print v + 0}' "$out")"
    local cpus="" i=0
    for pid in "${WORKER_PIDS[@]}"; do
        i=$((i + 1))
        cpus+=" worker$i=$(pct $(($(cpu_ticks "$pid") - before[i - 1])) "$elapsed_ms")%"
    done
    cpus+=" kamailio=$(pct $(($(group_ticks "$KAM_PID") - k0)) "$elapsed_ms")%"
    cpus+=" sipp=$(pct "$sipp_ticks" "$elapsed_ms")%"
    PASS=0
    if [[ "$rc" == 0 && "$ok" == "$total" && "$failed" == 0 ]] \
        && ((elapsed_ms <= STEP_SECONDS * 1100 + 2000)); then
        PASS=1
    fi
    printf '  workers=%s rate=%s calls=%s ok=%s failed=%s elapsed=%.1fs %s cpu:%s\n' \
        "$n" "$rate" "$total" "$ok" "$failed" "$(awk -v m="$elapsed_ms" 'BEGIN{print m/1000}')" \
        "$([[ $PASS == 1 ]] && echo pass || echo FAIL)" "$cpus"
}

echo "work=$WORK cores=$(nproc) step_seconds=$STEP_SECONDS rates=[$RATES] workers=[$WORKER_COUNTS]"
declare -A BEST
for n in $WORKER_COUNTS; do
    start_cluster "$n"
    BEST[$n]=0
    for rate in $RATES; do
        step "$n" "$rate"
        [[ "$PASS" == 1 ]] || break
        BEST[$n]=$rate
        sleep 2  # let the last calls' transactions settle between steps
    done
    stop_all
done
c1="${BEST[1]:-0}"
c2="${BEST[2]:-0}"
echo "RESULT cps_1=$c1 cps_2=$c2 ratio=$(awk -v a="$c2" -v b="$c1" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "nan" }')"
