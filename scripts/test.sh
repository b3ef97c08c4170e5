#!/usr/bin/env bash
# Runs every check and test of histflow against real services, on a fresh
# Debian machine as root or on a developer's machine:
#   - installs redis-server (apt-get) when missing, and starts a Redis on
#     loopback when none answers at REDIS_URL;
#   - installs the tansu Kafka-compatible broker (cargo install, about ten
#     minutes the first time on 2 cores; skipped when this version is there)
#     and starts it on loopback with memory:// storage when nothing listens
#     at KAFKA_BROKERS;
#   - creates target/test-venv with happybase (pip), an ordinary HBase
#     Thrift client for the HBase-compatible server's interop test;
#   - installs Debian's chromium and chromium-driver (apt-get) when
#     missing, for the live page's browser test (tests/live_page.rs);
#   - starts a Redis Cluster of three masters on loopback (ports
#     REDIS_CLUSTER_PORTS; redis-server --cluster-enabled yes and
#     redis-cli --cluster create, from the same package) unless one answers
#     at REDIS_CLUSTER_URL;
#   - installs cargo-nextest (cargo install) when missing;
#   - exports REDIS_URL and KAFKA_BROKERS, then runs cargo fmt --check,
#     cargo clippy -D warnings, the import-circle check
#     (scripts/import_circles.py: no file imports, directly or through
#     others, a file that imports it), every test (cargo nextest run --workspace,
#     each test in its own process, no retries), the doc tests, and the
#     suites that run on both again with REDIS_URL set to the cluster's
#     seeds; every step runs even when an earlier one failed;
#   - ends with how long each step took, the slowest suites, and one line
#     of totals naming every failed test (scripts/test_summary.py reads
#     nextest's JUnit reports); exits non-zero when anything failed;
#   - stops only the services it started.
# Environment: REDIS_URL (default redis://127.0.0.1:6379), KAFKA_BROKERS
# (default 127.0.0.1:9092), REDIS_CLUSTER_PORTS (default 7100 7101 7102),
# REDIS_CLUSTER_URL (default: those ports' seeds), TANSU_VERSION (default
# below).
set -euo pipefail
cd "$(dirname "$0")/.."

TANSU_VERSION="${TANSU_VERSION:-0.6.0}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
export KAFKA_BROKERS="${KAFKA_BROKERS:-127.0.0.1:9092}"
LOG_DIR="target/test-services"
mkdir -p "$LOG_DIR"

started_pids=()
stop_started() {
    for pid in "${started_pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${started_pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
}
trap stop_started EXIT

say() { printf '==> %s\n' "$*"; }

# Steps and how long each took, for the table at the end.
script_start=$(date +%s)
step_names=(); step_seconds=()
step_started=$script_start
# Ends the step running (if any) and starts the one named.
step() {
    local now; now=$(date +%s)
    if [ "${#step_names[@]}" -gt 0 ]; then
        step_seconds[${#step_names[@]}-1]=$(( now - step_started ))
    fi
    step_started=$now
    [ "$1" = "done" ] && return
    step_names+=("$1"); step_seconds+=(0)
    printf '==> [%s, +%ds] %s\n' "$(date +%H:%M:%S)" "$(( now - script_start ))" "$1"
}
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else die "need root (or sudo) to run: $*"; fi
}

# Waits up to $1 seconds for the command after it to succeed.
wait_for() {
    local deadline=$(( $(date +%s) + $1 )); shift
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}

# host and port of a host:port or scheme://host:port[/...] address.
host_of() { local a="${1#*://}"; a="${a%%/*}"; a="${a##*@}"; echo "${a%:*}"; }
port_of() { local a="${1#*://}"; a="${a%%/*}"; echo "${a##*:}"; }
is_loopback() { case "$1" in 127.*|localhost|::1) return 0 ;; *) return 1 ;; esac; }
tcp_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# --- Redis -------------------------------------------------------------------
step "Redis"
if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
    say "installing redis-server (apt-get)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi
if redis-cli -u "$REDIS_URL" ping 2>/dev/null | grep -q PONG; then
    say "using the Redis already answering at $REDIS_URL"
else
    redis_host="$(host_of "$REDIS_URL")"; redis_port="$(port_of "$REDIS_URL")"
    is_loopback "$redis_host" || die "no Redis answers at $REDIS_URL, and it is not a loopback address this script may start one on"
    say "starting redis-server on $redis_host:$redis_port (no persistence; log: $LOG_DIR/redis.log)"
    redis-server --bind "$redis_host" --port "$redis_port" --save '' --appendonly no --daemonize no \
        >"$LOG_DIR/redis.log" 2>&1 &
    started_pids+=("$!")
    wait_for 10 sh -c "redis-cli -u '$REDIS_URL' ping | grep -q PONG" \
        || { tail -20 "$LOG_DIR/redis.log" >&2; die "redis-server did not answer within 10 s"; }
fi

# --- a Redis Cluster of three masters ------------------------------------------
step "Redis Cluster"
REDIS_CLUSTER_PORTS="${REDIS_CLUSTER_PORTS:-7100 7101 7102}"
cluster_seeds=""
for port in $REDIS_CLUSTER_PORTS; do cluster_seeds="${cluster_seeds:+$cluster_seeds,}redis://127.0.0.1:$port"; done
REDIS_CLUSTER_URL="${REDIS_CLUSTER_URL:-$cluster_seeds}"
cluster_ok() { redis-cli -u "${REDIS_CLUSTER_URL%%,*}" cluster info 2>/dev/null | grep -q 'cluster_state:ok'; }
if cluster_ok; then
    say "using the Redis Cluster already answering at $REDIS_CLUSTER_URL"
else
    [ "$REDIS_CLUSTER_URL" = "$cluster_seeds" ] || die "no Redis Cluster answers at $REDIS_CLUSTER_URL"
    say "starting a Redis Cluster of three masters on 127.0.0.1 ports $REDIS_CLUSTER_PORTS (logs: $LOG_DIR/cluster/)"
    nodes=()
    for port in $REDIS_CLUSTER_PORTS; do
        # A fresh node each run: no nodes.conf from an earlier cluster.
        rm -rf "$LOG_DIR/cluster/$port"; mkdir -p "$LOG_DIR/cluster/$port"
        redis-server --bind 127.0.0.1 --port "$port" --cluster-enabled yes --cluster-config-file nodes.conf \
            --dir "$LOG_DIR/cluster/$port" --save '' --appendonly no --daemonize no \
            >"$LOG_DIR/cluster/$port.log" 2>&1 &
        started_pids+=("$!")
        wait_for 10 sh -c "redis-cli -p $port ping | grep -q PONG" || die "cluster node $port did not answer within 10 s"
        nodes+=("127.0.0.1:$port")
    done
    redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >"$LOG_DIR/cluster/create.log" 2>&1 \
        || { tail -20 "$LOG_DIR/cluster/create.log" >&2; die "redis-cli --cluster create failed"; }
    wait_for 30 cluster_ok || die "the Redis Cluster did not reach cluster_state:ok within 30 s"
fi
export REDIS_CLUSTER_URL

# --- Chromium, for the live page's browser test --------------------------------
step "Chromium"
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    say "installing chromium and chromium-driver (apt-get)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi

# --- Kafka protocol: tansu -----------------------------------------------------
step "tansu"
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"  # where cargo install puts tansu
if ! tansu --version 2>/dev/null | grep -qx "tansu $TANSU_VERSION"; then
    say "installing tansu $TANSU_VERSION (cargo install; about 10 minutes the first time on 2 cores)"
    cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore,libsql
fi
first_broker="${KAFKA_BROKERS%%,*}"
kafka_host="$(host_of "$first_broker")"; kafka_port="$(port_of "$first_broker")"
if tcp_open "$kafka_host" "$kafka_port"; then
    say "using the Kafka broker already listening at $first_broker"
else
    is_loopback "$kafka_host" || die "no broker listens at $first_broker, and it is not a loopback address this script may start one on"
    say "starting tansu on $kafka_host:$kafka_port with memory:// storage (log: $LOG_DIR/tansu.log)"
    tansu broker \
        --listener-url "tcp://$kafka_host:$kafka_port" \
        --advertised-listener-url "tcp://$kafka_host:$kafka_port" \
        --storage-engine "memory://tansu/" \
        >"$LOG_DIR/tansu.log" 2>&1 &
    started_pids+=("$!")
    wait_for 30 tcp_open "$kafka_host" "$kafka_port" \
        || { tail -20 "$LOG_DIR/tansu.log" >&2; die "tansu did not listen within 30 s"; }
fi

# --- an ordinary HBase Thrift client, for the compat server's interop test ----
step "happybase"
if [ ! -x target/test-venv/bin/python ] || ! target/test-venv/bin/python -c "import happybase" 2>/dev/null; then
    say "creating target/test-venv with happybase (pip)"
    if ! python3 -m venv target/test-venv 2>/dev/null; then
        say "python3 cannot make a venv: installing python3-venv (apt-get)"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        python3 -m venv target/test-venv
    fi
    target/test-venv/bin/pip install --quiet happybase
fi

# --- cargo-nextest ------------------------------------------------------------
step "cargo-nextest"
# It runs each test in a process of its own and goes on past a failure
# (.config/nextest.toml); a Debian machine with Rust has it, others get it
# from crates.io once.
if ! cargo nextest --version >/dev/null 2>&1; then
    say "installing cargo-nextest (cargo install; a few minutes the first time)"
    cargo install cargo-nextest --locked
fi

# --- checks and tests --------------------------------------------------------
# Every step runs even when one before it failed; the summary at the end
# names what failed, and the script exits non-zero if anything did.
failed_steps=()
check() {
    local name="$1"; shift
    step "$name"
    "$@" || failed_steps+=("$name")
}
say "REDIS_URL=$REDIS_URL KAFKA_BROKERS=$KAFKA_BROKERS"
# A clean build of every check and test takes about 5 GB in target/; a full
# disk shows up as linker crashes (signal 7) and "No space left on device".
free_kib=$(df -Pk target | awk 'NR == 2 { print $4 }')
if [ "${free_kib:-0}" -lt $(( 6 * 1024 * 1024 )) ]; then
    say "warning: only $(( free_kib / 1024 )) MiB free where target/ lives; a clean build needs about 5 GB"
fi
check "cargo fmt --check" cargo fmt --all -- --check
check "cargo clippy -D warnings" cargo clippy --workspace --all-targets -- -D warnings
check "import circles" python3 scripts/import_circles.py
rm -f target/nextest/default/junit.xml target/nextest/cluster/junit.xml
check "cargo nextest run --workspace (every test)" cargo nextest run --workspace
check "cargo test --doc" cargo test --workspace --doc
# The same build, so nothing is compiled again (.config/nextest.toml names
# the suites).
check "the Redis suites again, on the cluster: REDIS_URL=$REDIS_CLUSTER_URL" \
    env REDIS_URL="$REDIS_CLUSTER_URL" cargo nextest run --workspace --profile cluster
step "done"

printf '==> where the time went\n'
for index in "${!step_names[@]}"; do
    printf '    %6ds  %s\n' "${step_seconds[$index]}" "${step_names[$index]}"
done
summary_ok=0
python3 scripts/test_summary.py every=target/nextest/default/junit.xml cluster=target/nextest/cluster/junit.xml || summary_ok=$?
total=$(( $(date +%s) - script_start ))
if [ "${#failed_steps[@]}" -gt 0 ] || [ "$summary_ok" -ne 0 ]; then
    printf '==> FAILED after %ds: %s\n' "$total" "${failed_steps[*]:-(see the tests line above)}"
    exit 1
fi
printf '==> all green after %ds\n' "$total"
