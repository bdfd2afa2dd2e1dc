#!/usr/bin/env bash
# User-space instructions per answer, under valgrind's callgrind: a figure that does not move
# with the machine's load (wall-clock and CPU figures on a shared 2-core machine swing by a
# quarter between rounds). The same load as scenario 3 of bench/serve.sh, one contender at a time:
#
#   ztp    `ztp-operator serve` of a store with PROFILES SwitchProfiles (one serial each):
#          `GET /nvos/{serial}/ztp.json`, cycling through the serials
#   nginx  nginx (one worker, master off, access log off) serving a static 1 KiB file, the
#          same requests with the serial as an ignored query string
#
# Per contender: the server starts under callgrind, `wrk -t1 -c8` runs WARM seconds (every
# serial's document rendered and cached), the counters are zeroed, `wrk` runs MEASURE seconds,
# the counters are dumped; instructions / requests wrk counted. Kernel work (the TCP stack, which
# is most of either server's CPU) is not counted: this is the server's own code, libraries
# included. Prints the callgrind profile files for `callgrind_annotate --inclusive=yes FILE`.
#
# Environment (all optional):
#   BIN=...          ztp-operator binary (default: ${CARGO_TARGET_DIR:-<repo>/target}/release/ztp-operator)
#   PROFILES=10000   SwitchProfiles (and serials)
#   WARM=14 MEASURE=8  seconds of load (callgrind runs a program about 50× slower)
#   CONTENDERS="ztp nginx"
#   TMPDIR=/tmp      where the work dir lives (a few MiB)
set -euo pipefail
export LC_ALL=C

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly ROOT
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
BIN="${BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/ztp-operator}"
PROFILES="${PROFILES:-10000}" WARM="${WARM:-14}" MEASURE="${MEASURE:-8}"
CONTENDERS="${CONTENDERS:-ztp nginx}"

for tool in valgrind callgrind_control wrk nginx curl; do
	has "$tool" || die "$tool not found (apt-get install valgrind wrk nginx curl)"
done
[[ -x "$BIN" ]] || die "no ztp-operator binary at $BIN (cargo build --release)"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/ztp-instructions.XXXXXX")"
SERVER_PID=""
cleanup() {
	[[ -n "$SERVER_PID" ]] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
	rm -rf "$WORK"
}
trap cleanup EXIT

log "store: $PROFILES profiles and a 1 MiB image (ztp-operator standalone --once)..."
mkdir -p "$WORK"/{manifests,src,store,www,nginx/tmp} "$WORK/out"
head -c 1048576 /dev/urandom >"$WORK/src/image.bin"
head -c 1024 /dev/urandom >"$WORK/www/small1k.bin"
sha="$(sha256sum "$WORK/src/image.bin" | cut -d' ' -f1)"
cat >"$WORK/manifests/osimage.yaml" <<EOF
apiVersion: ztp.netops.dev/v1alpha1
kind: OsImage
metadata: {name: bench-image}
spec:
  platform: bench
  version: "1"
  filename: image.bin
  source: {url: {url: "file://../src/image.bin"}}
  sha256: $sha
EOF
awk -v n="$PROFILES" 'BEGIN {
	for (i = 1; i <= n; i++) {
		printf "---\napiVersion: ztp.netops.dev/v1alpha1\nkind: SwitchProfile\n"
		printf "metadata: {name: sw%05d}\nspec:\n  match: {serialNumbers: [\"SN%05d\"]}\n", i, i
		printf "  hostname: leaf%05d\n  variables: {ntp: 192.0.2.1}\n  ztp:\n    sections:\n", i
		printf "      - kind: image\n        content: {osImageRef: {name: bench-image}}\n"
		printf "      - kind: commands-list\n        clearConfig: true\n        content:\n"
		printf "          template: true\n          inline: |\n"
		printf "            nv set system hostname {{ hostname }}\n"
		printf "            nv config apply -y\n"
	}
}' >"$WORK/manifests/switchprofiles.yaml"
"$BIN" standalone --manifests "$WORK/manifests" --data "$WORK/store" --once >"$WORK/standalone.log" 2>&1 ||
	die "standalone --once failed: $(tail -5 "$WORK/standalone.log")"
write_cycle_lua "$WORK/cycle.lua"

# measure NAME PORT PATH_FORMAT COMMAND...: prints instructions per request
measure() {
	local name="$1" port="$2" fmt="$3" requests total out="$WORK/out/callgrind.$1"
	shift 3
	valgrind --tool=callgrind --callgrind-out-file="$out.%p" --trace-children=no "$@" \
		>"$WORK/out/$name.log" 2>&1 &
	SERVER_PID=$!
	local tries=0
	until curl -s -o /dev/null "http://127.0.0.1:$port/"; do
		((++tries < 600)) || die "$name did not come up under valgrind: $(tail -5 "$WORK/out/$name.log")"
		sleep 0.2
	done
	wrk -t1 -c8 -d"${WARM}s" -s "$WORK/cycle.lua" "http://127.0.0.1:$port" -- "$fmt" "$PROFILES" >/dev/null
	callgrind_control -z "$SERVER_PID" >/dev/null 2>&1
	wrk -t1 -c8 -d"${MEASURE}s" -s "$WORK/cycle.lua" "http://127.0.0.1:$port" -- "$fmt" "$PROFILES" \
		>"$WORK/out/$name.wrk"
	callgrind_control -d "$SERVER_PID" >/dev/null 2>&1
	kill "$SERVER_PID"
	wait "$SERVER_PID" 2>/dev/null || true
	SERVER_PID=""
	requests="$(awk '/requests in/ { print $1 }' "$WORK/out/$name.wrk")"
	grep -q 'Non-2xx' "$WORK/out/$name.wrk" && die "$name: answers other than 2xx: $(cat "$WORK/out/$name.wrk")"
	total="$(cat "$out".*.1 | awk '/^totals:/ { print $2 }')"
	[[ -n "$requests" && -n "$total" ]] || die "$name: no figures (see $WORK/out)"
	cp "$out".*.1 "${TMPDIR:-/tmp}/callgrind.$name.out"
	printf '%-6s %9s %14s   profile: %s\n' "$name" "$requests" "$(calc 'a / b' a="$total" b="$requests" | xargs printf '%.0f')" \
		"${TMPDIR:-/tmp}/callgrind.$name.out"
}

printf '%-6s %9s %14s\n' server requests instr/request
for c in $CONTENDERS; do
	port=$((20000 + RANDOM % 20000))
	case "$c" in
	ztp)
		measure ztp "$port" "/nvos/SN%05d/ztp.json" "$BIN" serve --store-dir "$WORK/store" \
			--external-url "http://127.0.0.1:$port" --listen "127.0.0.1:$port"
		;;
	nginx)
		cat >"$WORK/nginx/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 1024; use epoll; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    open_file_cache max=100 inactive=60s;
    default_type application/octet-stream;
    client_body_temp_path $WORK/nginx/tmp/body;
    proxy_temp_path $WORK/nginx/tmp/proxy; fastcgi_temp_path $WORK/nginx/tmp/fastcgi;
    uwsgi_temp_path $WORK/nginx/tmp/uwsgi; scgi_temp_path $WORK/nginx/tmp/scgi;
    server { listen 127.0.0.1:$port; root $WORK/www; }
}
EOF
		measure nginx "$port" "/small1k.bin?s=SN%05d" nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" \
			-e "$WORK/nginx/error.log"
		;;
	*) die "unknown contender $c" ;;
	esac
done
