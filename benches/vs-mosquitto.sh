#!/usr/bin/env bash
# testament against mosquitto, side by side on this machine.
#
# Both brokers run on 127.0.0.1 pinned to CPU 0, the load generator
# (examples/loadgen.rs) on CPU 1; every scenario runs against both in turn,
# A B A B…, and the ratios compare the medians. Deliveries and CONNACKs are
# counted per broker CPU-second (from /proc/PID/stat).
#
# testament authenticates every client with an RS256 JWT and its ACL
# answers every publish and subscription; mosquitto runs its default
# configuration (anonymous clients, no ACL) — with a password file holding
# the same token for the connect storm, and `set_tcp_nodelay true` for the
# latency scenario. Idle sessions: testament's JWT-authenticated against
# mosquitto's anonymous ones.
#
#   bash benches/vs-mosquitto.sh            # ROUNDS=2 MESSAGES=1000000 STORM=5000 IDLE=5000
#   ONLY=latency ROUNDS=5 bash benches/vs-mosquitto.sh   # the scenarios whose name matches
#
# Installs mosquitto from the Debian registry when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-2}
ONLY=${ONLY:-}
MESSAGES=${MESSAGES:-1000000}
STORM=${STORM:-5000}
IDLE=${IDLE:-5000}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; then
    echo "== installing mosquitto"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null
fi
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
"$MOSQUITTO" -h 2>&1 | head -1 || true

echo "== building"
cargo build --release --quiet --bin testament --example loadgen
TESTAMENT=target/release/testament
LOADGEN=target/release/examples/loadgen

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]:-}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_port() {
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listens on $1" >&2
    return 1
}

# --- testament: a key, a token for user "load", an ACL for load/# --------
$TESTAMENT keys generate --alg RS256 --kid k1 --out "$work/keys" >/dev/null
$TESTAMENT token --key "$work/keys/k1.pem" --kid k1 --sub load --ttl 2h >"$work/token"
T_PORT=$(free_port)
cat >"$work/testament.toml" <<EOF
listen = ["127.0.0.1:$T_PORT"]
[jwt]
jwks = "$work/keys/jwks.json"
[[acl.rules]]
effect = "allow"
ops = ["publish", "subscribe"]
filter = "load/#"
subject = "authenticated"
[limits]
max_connections = 100000
max_connections_per_address = 100000
max_authentications_per_address_per_sec = 1000000
[log]
level = "warn"
EOF

# In memory (sync = off), and the same broker durable: what it acknowledges
# committed (and flushed) to data_dir before the acknowledgement is sent,
# one transaction per loop turn.
{
    cat "$work/testament.toml"
    printf '[storage]\nsync = "off"\n'
} >"$work/memory.toml"
{
    echo "data_dir = \"$work/data\""
    cat "$work/testament.toml"
    printf '[storage]\nsync = "always"\n'
} >"$work/durable.toml"
# The same, flushed once a second instead of before each acknowledgement
# (`sync = "interval"`: a crash loses up to a second of what was
# acknowledged — closer to what mosquitto's persistence promises).
{
    echo "data_dir = \"$work/data\""
    cat "$work/testament.toml"
    printf '[storage]\nsync = "interval"\nsync_interval_ms = 1000\n'
} >"$work/interval.toml"

# --- mosquitto: default, nodelay, password file ---------------------------
M_PORT=$(free_port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$M_PORT" >"$work/default.conf"
cp "$work/default.conf" "$work/nodelay.conf"
echo "set_tcp_nodelay true" >>"$work/nodelay.conf"
# The same token as the password: the same bytes on the wire.
mosquitto_passwd -c -b "$work/passwd" load "$(cat "$work/token")"
# mosquitto started as root reads its files as the user `mosquitto`.
chmod 0755 "$work"
chmod 0644 "$work/passwd"
printf 'listener %s 127.0.0.1\nallow_anonymous false\npassword_file %s\n' "$M_PORT" "$work/passwd" \
    >"$work/passwd.conf"
# mosquitto's persistence as shipped: an in-memory state saved to its file
# every autosave_interval (1800 s) and at exit.
mkdir -p "$work/mdata" && chmod 0777 "$work/mdata"
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location %s/\n' \
    "$M_PORT" "$work/mdata" >"$work/persist.conf"

BROKER_PID=
start() { # start testament|mosquitto-CONF
    case "$1" in
        testament)
            # T_CONF=durable: the durable configuration, from an empty store.
            rm -rf "$work/data"
            taskset -c 0 "$TESTAMENT" serve --config "$work/${T_CONF:-memory}.toml" >"$work/t.log" 2>&1 &
            BROKER_PID=$!
            PORT=$T_PORT
            ;;
        mosquitto-*)
            taskset -c 0 "$MOSQUITTO" -c "$work/${1#mosquitto-}.conf" >"$work/m.log" 2>&1 &
            BROKER_PID=$!
            PORT=$M_PORT
            ;;
    esac
    pids+=("$BROKER_PID")
    wait_port "$PORT"
}

stop() {
    kill "$BROKER_PID" 2>/dev/null || true
    wait "$BROKER_PID" 2>/dev/null || true
}

# run BROKER LOADGEN-ARGS… : prints the RESULT line of one run
run() {
    local broker=$1
    shift
    start "$broker"
    local creds=()
    if [ "$broker" = testament ] || [ "$broker" = mosquitto-passwd ]; then
        creds=(--username load --password-file "$work/token")
    fi
    local out
    out=$(taskset -c 1 "$LOADGEN" --broker "127.0.0.1:$PORT" --broker-pid "$BROKER_PID" \
        "${creds[@]}" "$@" 2>&1) || { echo "$out" >&2; stop; return 1; }
    stop
    echo "$out" | sed 's/^/    /' >&2
    echo "$out" | grep '^RESULT'
}

field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p"; }

median() { sort -g | awk '{a[NR]=$1} END {m = (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2; printf (m >= 100 ? "%.0f\n" : "%.1f\n"), m}'; }

table=()
# scenario NAME KEY MOSQUITTO-CONF LOADGEN-ARGS…
scenario() {
    local name=$1 key=$2 mconf=$3
    shift 3
    if [ -n "${ONLY:-}" ] && ! [[ $name =~ $ONLY ]]; then
        return 0
    fi
    echo "== $name" >&2
    local t=() m=() tl=0 ml=0 td=0 md=0
    for r in $(seq "$ROUNDS"); do
        local a b
        a=$(run testament "$@")
        b=$(run "mosquitto-$mconf" "$@")
        t+=("$(echo "$a" | field "$key")")
        m+=("$(echo "$b" | field "$key")")
        tl=$((tl + $(echo "$a" | field lost || echo 0) + 0))
        ml=$((ml + $(echo "$b" | field lost || echo 0) + 0))
        td=$((td + $(echo "$a" | field duplicates || echo 0) + 0))
        md=$((md + $(echo "$b" | field duplicates || echo 0) + 0))
    done
    local tm mm
    tm=$(printf '%s\n' "${t[@]}" | median)
    mm=$(printf '%s\n' "${m[@]}" | median)
    local ratio
    ratio=$(awk -v a="$tm" -v b="$mm" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')
    table+=("| $name | $key | $tm | $mm | ${ratio}× | $tl / $td | $ml / $md |")
}

Q0=(--messages "$MESSAGES")
scenario "QoS 0 1→1" per_cpu_s default --publishers 1 --subscribers 1 --topology p2p --qos 0 "${Q0[@]}"
scenario "QoS 0 4→4" per_cpu_s default --publishers 4 --subscribers 4 --topology p2p --qos 0 --messages $((MESSAGES / 4))
scenario "QoS 0 1→10" per_cpu_s default --publishers 1 --subscribers 10 --topology fan-out --qos 0 --messages $((MESSAGES / 10))
scenario "QoS 1 1→1" per_cpu_s default --publishers 1 --subscribers 1 --topology p2p --qos 1 --messages $((MESSAGES / 2))
scenario "QoS 1 4→4" per_cpu_s default --publishers 4 --subscribers 4 --topology p2p --qos 1 --messages $((MESSAGES / 8))
# Retained QoS 1: in memory against mosquitto's default, then durable
# (sync = always) against mosquitto with persistence true; the two
# testament columns give what durability costs.
scenario "retained QoS 1 1→1, in memory" per_cpu_s default --publishers 1 --subscribers 1 --topology p2p --qos 1 --retain --messages $((MESSAGES / 10))
T_CONF=durable scenario "retained QoS 1 1→1, durable / persistence" per_cpu_s persist --publishers 1 --subscribers 1 --topology p2p --qos 1 --retain --messages $((MESSAGES / 10))
# QoS 1 to a persistent subscriber (clean session 0): every message kept
# for its session until acknowledged — in memory, then durable against
# mosquitto with persistence true.
scenario "QoS 1 1→1 persistent, in memory" per_cpu_s default --publishers 1 --subscribers 1 --topology p2p --qos 1 --persistent --messages $((MESSAGES / 2))
T_CONF=durable scenario "QoS 1 1→1 persistent, durable / persistence" per_cpu_s persist --publishers 1 --subscribers 1 --topology p2p --qos 1 --persistent --messages $((MESSAGES / 10))
T_CONF=interval scenario "QoS 1 1→1 persistent, sync interval / persistence" per_cpu_s persist --publishers 1 --subscribers 1 --topology p2p --qos 1 --persistent --messages $((MESSAGES / 2))
T_CONF=durable scenario "QoS 1 4→4 persistent, durable / persistence" per_cpu_s persist --publishers 4 --subscribers 4 --topology p2p --qos 1 --persistent --messages $((MESSAGES / 40))
scenario "latency p50, 10k msg/s QoS 0 1→1" p50_us nodelay --publishers 1 --subscribers 1 --qos 0 --rate 10000 --messages 50000
scenario "latency p99, 10k msg/s QoS 0 1→1" p99_us nodelay --publishers 1 --subscribers 1 --qos 0 --rate 10000 --messages 50000
scenario "connect storm (RS256 / password file)" per_cpu_s passwd --storm "$STORM" --threads 4
scenario "idle memory per session" per_session_b default --idle "$IDLE"

echo
echo "## testament vs mosquitto ($("$MOSQUITTO" -h 2>&1 | head -1 | awk '{print $3}'))"
echo
echo "$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); brokers on CPU 0, load on CPU 1; median of $ROUNDS rounds, A B A B."
echo
echo "| scenario | measure | testament | mosquitto | ratio | testament lost / dup | mosquitto lost / dup |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
printf '%s\n' "${table[@]}"
echo
echo "per_cpu_s: deliveries (or CONNACKs) per broker CPU-second, higher is better;"
echo "p50_us/p99_us: latency in µs and per_session_b: bytes per idle session, lower is better."
