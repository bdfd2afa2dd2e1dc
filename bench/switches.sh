#!/usr/bin/env bash
# The Switch boot storm (issue 16): DEVICES simulated NVOS devices (one process, CONCURRENCY at a
# time, loopback only), arriving evenly over ARRIVAL_SECONDS ("within a few minutes"; 0: all at
# once), each ask their ZTP JSON, HEAD their image, report three stages and
# `provisioned` with their report token — first against a server without --switches, then against
# one with it, on a real kube-apiserver + etcd (the e2e harness: tests/e2e/switches.rs,
# `boot_storm`). Prints the Switches created, the writes the apiserver saw per second (against
# --switch-writes-per-second), the time until every Switch shows Provisioned after the storm's last
# request (in flush intervals of 1 s), the servers' peak RSS, and the device request p99 with
# Switches beside the p99 without.
#
# Usage: bench/switches.sh            DEVICES=2000 ARRIVAL_SECONDS=120 CONCURRENCY=64 WRITES_PER_SECOND=50
#        ARRIVAL_SECONDS=0 bench/switches.sh   (the compressed storm: the cap is what it measures)
# The server is the release build (built here); the test harness is the debug e2e binary.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
DEVICES="${DEVICES:-2000}"
CONCURRENCY="${CONCURRENCY:-64}"
WRITES_PER_SECOND="${WRITES_PER_SECOND:-50}"
ARRIVAL_SECONDS="${ARRIVAL_SECONDS:-120}"

echo "==> release build of ztp-operator" >&2
cargo build --release --locked --bin ztp-operator >&2
echo "==> boot storm: $DEVICES devices over $ARRIVAL_SECONDS s, $CONCURRENCY at a time, --switch-writes-per-second=$WRITES_PER_SECOND" >&2
run_e2e_bench switches::boot_storm "${TMPDIR:-/tmp}/switches-bench.log" storm: \
	ZTP_SERVER_BIN="$ROOT/target/release/ztp-operator" \
	ZTP_STORM_DEVICES="$DEVICES" ZTP_STORM_CONCURRENCY="$CONCURRENCY" \
	ZTP_STORM_WRITES_PER_SECOND="$WRITES_PER_SECOND" ZTP_STORM_SECONDS="$ARRIVAL_SECONDS"
