#!/usr/bin/env bash
# Nautobot as the source of truth (issue 17): a real Nautobot 3.2.7 holding DEVICES devices and
# IMAGES image files (`scripts/nautobot start --fleet`: a cached database snapshot, ~6 s to start;
# the first run with given DEVICES/IMAGES builds it through the REST API, ~10 min for 5,000), the
# release `ztp-operator controller` as a process against a real kube-apiserver + etcd (the e2e
# harness: tests/e2e/nautobot_bench.rs, `sync`), and one NautobotSource with `intervalSeconds: 10`.
# Prints, one `nautobot-bench:` line per figure, with the issue's target beside it:
#   * a reference: the same full read by the library in the test process, nothing applied (what
#     Nautobot alone takes to serve the fleet);
#   * the first sync: wall time from creating the source to its status with every Switch (target
#     <= 60 s), how much of it is the read, Nautobot's requests (its uWSGI log lines);
#   * a no-change resync: the poll's duration (target <= 5 s) and its requests (target: 1);
#   * one change (`set-mac` on sw-00001): the requests of the poll that follows and the time until
#     the Switch shows it;
#   * over each window, CPU seconds from /proc: the controller's beside Nautobot's own (uWSGI
#     master + workers) and the ratio, its PostgreSQL's, the kube-apiserver + etcd's; the writes
#     the apiserver saw (a watch on Switches and OsImages);
#   * the controller's peak RSS (VmHWM, target <= 128 MiB).
# The machine is shared and noisy: read the ratios and the CPU per device, not wall times alone.
#
# `bench/nautobot.sh reads` measures instead REST against GraphQL for the full read
# (tests/e2e/nautobot_reads_bench.rs, `reads`; no controller, no apiserver): the same fleet read in
# the test process through a counting forwarder by ztp-operator's former REST read
# (read::full_rest), by GraphQL one query per 1,000 devices, and by ztp-operator's full read, one
# GraphQL query for everything (read::full; the same fields, the same Switches and OsImages
# declared: asserted); each with wall time, requests, bytes received and Nautobot's and
# its PostgreSQL's CPU seconds, ROUNDS (2) rounds after a warm-up, one `nautobot-bench: reads:` line
# per figure.
#
# Usage: bench/nautobot.sh                       DEVICES=5000 IMAGES=50 (a few minutes)
#        DEVICES=500 IMAGES=10 bench/nautobot.sh (another fleet: its snapshot is built first)
#        bench/nautobot.sh reads                 REST against GraphQL (a few minutes)
# The controller is the release build (built here); the harness is the debug e2e binary. Logs (the
# controller's, with the NautobotSource at debug, and Nautobot's uWSGI log) are copied to OUT
# (default ${TMPDIR:-/tmp}/nautobot-bench). Exit status: the test's (non-zero when the run fails;
# a missed target does not fail it).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
DEVICES="${DEVICES:-5000}"
IMAGES="${IMAGES:-50}"
OUT="${OUT:-${TMPDIR:-/tmp}/nautobot-bench}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
LOG="${TMPDIR:-/tmp}/nautobot-bench.log"

if [ "${1:-}" = reads ]; then
	echo "==> Nautobot with $DEVICES devices and $IMAGES image files; REST against GraphQL" >&2
	run_e2e_bench nautobot_reads_bench::reads "${TMPDIR:-/tmp}/nautobot-bench-reads.log" nautobot-bench: \
		ZTP_NB_DEVICES="$DEVICES" ZTP_NB_IMAGES="$IMAGES" ZTP_NB_READ_ROUNDS="${ROUNDS:-2}"
	exit
fi

echo "==> release build of ztp-operator" >&2
cargo build --release --locked --bin ztp-operator >&2
echo "==> Nautobot with $DEVICES devices and $IMAGES image files; the release controller; one NautobotSource" >&2
run_e2e_bench nautobot_bench::sync "$LOG" nautobot-bench: ZTP_CONTROLLER_BIN="$TARGET/release/ztp-operator" \
	ZTP_NB_DEVICES="$DEVICES" ZTP_NB_IMAGES="$IMAGES" ZTP_NB_BENCH_OUT="$OUT"
