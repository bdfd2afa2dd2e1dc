#!/usr/bin/env bash
# Benchmark an upload through the admin files API against the shell's way of doing the same job,
# in the same run, alternating:
#
#   api       curl -F file=@IMAGE  POST /v1/files/bench/1/image-N.bin?checksum=SHA  to
#             `ztp-operator serve --store-dir D` (the server streams the multipart body into the
#             store's .tmp/, hashes it on the way, fsyncs, renames, writes manifest.json)
#   cp+sha    cp IMAGE D/copy && openssl dgst -sha256 D/copy   (what the issue compares with)
#   cp+sync+sha  the same with `sync D/copy` before hashing (the server fsyncs before it answers;
#             shown for fairness, not a target)
#
# Figures: wall time of each (median of ROUNDS), the ratio api / cp+sha (target <= 1.0), the
# API's throughput (target >= 0.8 GB/s), and the server's peak RSS during the uploads (target:
# flat, <= 64 MiB; sampled every 100 ms from /proc). Every upload is checked: 200, and the stored
# file's sha256 is the image's. The image is random bytes in page cache for every contender.
#
# Environment (all optional):
#   ROUNDS=3          rounds (each: api and cp+sha in alternating order, then cp+sync+sha)
#   SIZE_MIB=2048     image size
#   BIN=...           ztp-operator binary (default: ${CARGO_TARGET_DIR:-<repo>/target}/release/ztp-operator)
#   BUILD=1           `cargo build --release` first even if BIN exists
#   TMPDIR=/tmp       where the image and the store live (a disk: the server and cp write to
#                     the same filesystem); needs 3 × SIZE_MIB free
#
# Exit status: 0 whether or not the targets are met; 1 if a setup step or a check failed.
set -euo pipefail
export LC_ALL=C

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly ROOT
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

readonly DEFAULT_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/ztp-operator"
BIN="${BIN:-$DEFAULT_BIN}"
ROUNDS="${ROUNDS:-3}"
SIZE_MIB="${SIZE_MIB:-2048}"
BUILD="${BUILD:-0}"
readonly TARGET_RATIO=1.0 TARGET_GBPS=0.8 TARGET_RSS_MIB=64
readonly TOKEN="bench-upload-token-0123456789"

WORK=""
SERVER_PID=""
SAMPLER_PID=""
PORT=""

stop_server() {
	stop_pid "$SERVER_PID" TERM
	SERVER_PID=""
}

cleanup() {
	stop_pid "$SAMPLER_PID" TERM
	SAMPLER_PID=""
	stop_server
	if [[ -n "$WORK" && -d "$WORK" ]]; then
		rm -rf -- "$WORK"
	fi
}

ensure_binary() {
	if [[ "$BIN" == "$DEFAULT_BIN" ]] && { [[ "$BUILD" == 1 ]] || [[ ! -x "$BIN" ]]; }; then
		log "building ztp-operator (cargo build --release)..."
		(cd "$ROOT" && cargo build --release --bin ztp-operator) >&2
	fi
	[[ -x "$BIN" ]] || die "ztp-operator binary not found at $BIN (set BIN=... or BUILD=1)"
}

start_server() {
	PORT="$(free_port)"
	echo "bench:$TOKEN" >"$WORK/tokens"
	RUST_LOG=warn "$BIN" serve --store-dir "$WORK/store" --listen "127.0.0.1:$PORT" \
		--external-url "http://127.0.0.1:$PORT" --admin-token-file "$WORK/tokens" \
		--max-upload-bytes $(((SIZE_MIB + 16) << 20)) >"$WORK/server.log" 2>&1 &
	SERVER_PID=$!
	local _
	for _ in $(seq 1 100); do
		curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && return 0
		kill -0 "$SERVER_PID" 2>/dev/null || die "server exited: $(tail -5 "$WORK/server.log")"
		sleep 0.1
	done
	die "server did not start: $(tail -5 "$WORK/server.log")"
}

# timed CMD...: runs CMD, prints its wall time in seconds
timed() {
	local t0 t1
	t0="$(now)"
	"$@" >/dev/null
	t1="$(now)"
	calc 'b - a' a="$t0" b="$t1" | xargs printf '%.3f'
}

api_upload() { # api_upload N
	local url="http://127.0.0.1:$PORT/v1/files/bench/1/image-$1.bin?checksum=$SHA"
	local code
	code="$(curl -sS -o "$WORK/answer" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" \
		-F "file=@$WORK/image.bin" "$url")"
	[[ "$code" == 200 ]] || die "upload $1: HTTP $code: $(cat "$WORK/answer")"
}

copy_and_hash() {
	cp "$WORK/image.bin" "$WORK/copy.bin"
	openssl dgst -sha256 "$WORK/copy.bin"
}

copy_sync_and_hash() {
	cp "$WORK/image.bin" "$WORK/copy.bin"
	sync "$WORK/copy.bin"
	openssl dgst -sha256 "$WORK/copy.bin"
}

# Checks the stored upload and removes it (outside the timing).
check_and_remove() { # check_and_remove N
	local stored="$WORK/store/bench/1/image-$1.bin" got
	got="$(openssl dgst -sha256 -r "$stored" | cut -d' ' -f1)"
	[[ "$got" == "$SHA" ]] || die "stored image-$1.bin hashes to $got, want $SHA"
	curl -sSf -o /dev/null -X DELETE -H "Authorization: Bearer $TOKEN" \
		"http://127.0.0.1:$PORT/v1/files/bench/1/image-$1.bin" || die "delete image-$1.bin"
}

main() {
	has curl || die "curl is needed"
	has openssl || die "openssl is needed"
	has python3 || die "python3 is needed"
	ensure_binary
	WORK="$(mktemp -d "${TMPDIR:-/tmp}/ztp-upload-bench.XXXXXX")"
	trap cleanup EXIT
	write_sampler
	log "writing a ${SIZE_MIB} MiB random image..."
	head -c "$((SIZE_MIB << 20))" /dev/urandom >"$WORK/image.bin"
	SHA="$(openssl dgst -sha256 -r "$WORK/image.bin" | cut -d' ' -f1)" # also warms the page cache
	local bytes=$((SIZE_MIB << 20))

	echo "== machine"
	echo "date:       $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "nproc:      $(nproc)"
	echo "cpu:        $(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1)"
	echo "loadavg:    $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "workdir:    $WORK ($(df -h --output=source,fstype "$WORK" | tail -1 | tr -s ' '))"
	echo "curl:       $(curl --version | head -1 | cut -d' ' -f1-2)   openssl: $(openssl version | cut -d' ' -f1-2)"
	echo "ztp:        $BIN"
	echo "image:      ${SIZE_MIB} MiB, ROUNDS=$ROUNDS"
	echo

	start_server
	sampler_start upload
	local api=() cp=() cps=() r t
	for r in $(seq 1 "$ROUNDS"); do
		if ((r % 2)); then
			t="$(timed api_upload "$r")"; api+=("$t")
			check_and_remove "$r"
			t="$(timed copy_and_hash)"; cp+=("$t")
		else
			t="$(timed copy_and_hash)"; cp+=("$t")
			t="$(timed api_upload "$r")"; api+=("$t")
			check_and_remove "$r"
		fi
		rm -f "$WORK/copy.bin"
		t="$(timed copy_sync_and_hash)"; cps+=("$t")
		rm -f "$WORK/copy.bin"
		log "round $r: api ${api[-1]} s, cp+sha ${cp[-1]} s, cp+sync+sha ${cps[-1]} s"
	done
	sampler_stop upload
	read -r peak_rss _ cpu_s _ <"$WORK/sample.upload"

	local api_s cp_s cps_s ratio gbps rss_mib
	api_s="$(median "${api[@]}")"
	cp_s="$(median "${cp[@]}")"
	cps_s="$(median "${cps[@]}")"
	ratio="$(calc 'a / c' a="$api_s" c="$cp_s" | xargs printf '%.2f')"
	gbps="$(calc 'b / t / 1e9' b="$bytes" t="$api_s" | xargs printf '%.2f')"
	rss_mib="$(calc 'k / 1024' k="$peak_rss" | xargs printf '%.1f')"

	echo "== upload of ${SIZE_MIB} MiB (median of $ROUNDS; every round: ${api[*]} s via the API)"
	printf '%-34s %10s %10s\n' "" "wall s" "GB/s"
	printf '%-34s %10s %10s\n' "api (curl -F, verified, fsynced)" "$api_s" "$gbps"
	printf '%-34s %10s %10s\n' "cp + openssl dgst -sha256" "$cp_s" "$(calc 'b / t / 1e9' b="$bytes" t="$cp_s" | xargs printf '%.2f')"
	printf '%-34s %10s %10s\n' "cp + sync + openssl dgst -sha256" "$cps_s" "$(calc 'b / t / 1e9' b="$bytes" t="$cps_s" | xargs printf '%.2f')"
	echo
	echo "api / (cp + sha):   ${ratio}x   target <= ${TARGET_RATIO}x   $(verdict "$ratio" '<=' "$TARGET_RATIO")"
	echo "api throughput:     ${gbps} GB/s   target >= ${TARGET_GBPS}   $(verdict "$gbps" '>=' "$TARGET_GBPS")"
	echo "server peak RSS:    ${rss_mib} MiB over $ROUNDS uploads   target <= ${TARGET_RSS_MIB}   $(verdict "$rss_mib" '<=' "$TARGET_RSS_MIB")"
	echo "server CPU:         ${cpu_s} s for $ROUNDS uploads"
}

main "$@"
