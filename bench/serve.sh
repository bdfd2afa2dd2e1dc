#!/usr/bin/env bash
# Benchmark the device server against nginx serving the same files, in the same run:
#
#   nginx         Debian nginx, sendfile on (the baseline config of PERF-NOTES §2), root = a
#                 folder of hard links to the files in ztp-operator's store (same inodes, same
#                 page cache)
#   ztp           `ztp-operator serve --store-dir D` (sendfile fast path for images)
#   ztp-buffered  the same with `--no-sendfile` (every request through hyper/axum; images
#                 streamed from the store in 256 KiB reads); scenarios 1 and 2 only
#
# Scenarios (each against every contender, the server restarted per contender and round):
#   1  64 concurrent curl downloads of a 256 MiB random image: aggregate MB/s (all bytes /
#      makespan), every answer 200 and complete; server peak RSS/PSS and CPU seconds.
#   2  256 slow clients (`curl --limit-rate 4M --max-time 10`) on a 2 GiB image: server peak
#      RSS/PSS and CPU seconds per GB delivered.
#   3  `wrk -t2 -c64 -d10s --latency`: per-device ZTP JSON (`/nvos/{serial}/ztp.json`, a Lua
#      script cycling through the 10 000 serials of 10 000 SwitchProfiles) against nginx serving
#      a static 1 KiB file (the same Lua script, cycling a query string nginx ignores): req/s, p99,
#      and how wrk's connections sat on the server's event loops 5 s in, per server loop the
#      connections of each wrk thread (`32+0 32+0`: each wrk thread on one worker; `16+16 16+16`:
#      both threads on both workers; see write_spread in bench/lib.sh — one short Python run
#      reads it from /proc, in every contender's run alike).
#
# The store is filled once per invocation by `ztp-operator standalone --once` (imports both
# images from `file://` sources, renders the 10 000 profiles into the device snapshot); every
# server then serves that store. Rounds alternate the order of contenders (A B C, C B A, ...).
# Server-side figures come from /proc: VmRSS and Pss (smaps_rollup) of the server and its
# children, sampled every 100 ms (peaks kept; nginx = master + workers summed), and
# utime+stime (+ cutime+cstime) before and after each load. See bench/README.md.
#
# Environment (all optional):
#   ROUNDS=2                              rounds
#   CONTENDERS="nginx ztp ztp-buffered"   contenders, in this order in odd rounds (reversed in even)
#   SCENARIOS="1 2 3"                     which scenarios
#   PROFILES=10000                        SwitchProfiles generated for scenario 3
#   BIN=...                               ztp-operator binary (default: ${CARGO_TARGET_DIR:-<repo>/target}/release/ztp-operator)
#   BUILD=1                               `cargo build --release` first even if BIN exists
#   TMPDIR=/tmp                           where the work dir lives: images and store, about 4.7 GiB
#                                         at the peak (/dev/shm works: 2.3 GiB of RAM after import)
#   RUST_LOG                              passed to ztp-operator (default: info, one line per request)
#
# Exit status: 0 whether or not the targets are met; 1 if a setup step, a check (a non-200, a
# short download, a wrk error) or a server failed.
set -euo pipefail
export LC_ALL=C

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly ROOT
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
readonly DEFAULT_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/ztp-operator"
BIN="${BIN:-$DEFAULT_BIN}"
ROUNDS="${ROUNDS:-2}"
CONTENDERS="${CONTENDERS:-nginx ztp ztp-buffered}"
SCENARIOS="${SCENARIOS:-1 2 3}"
PROFILES="${PROFILES:-10000}"
BUILD="${BUILD:-0}"

readonly BIG_MIB=256 HUGE_MIB=2048
readonly S1_CLIENTS=64 S2_CLIENTS=256 S2_RATE=4M S2_SECONDS=10
readonly TARGET_S1_RATIO=1.0 TARGET_RSS_MIB=64 TARGET_S2_CPU_RATIO=1.5
readonly TARGET_S3_RATIO=1.0 TARGET_S3_CPU_RATIO=1.0 TARGET_S3_P99_MS=5

WORK=""
SERVER_PID=""  # the server being measured (nginx master, or ztp-operator)
SAMPLER_PID=""
PORT=""
SERVER_NAME=""
BIG_BYTES=0
HUGE_BYTES=0

# Results: RES[scenario,contender,round,metric] = value
declare -A RES=()

# ---------------------------------------------------------------------------------------------
# Helpers

wants() { [[ " $CONTENDERS " == *" $1 "* ]]; }
scenario_on() { [[ " $SCENARIOS " == *" $1 "* ]]; }

cleanup() {
	stop_pid "$SAMPLER_PID" TERM
	SAMPLER_PID=""
	stop_server
	if [[ -n "$WORK" && -d "$WORK" ]]; then
		rm -rf -- "$WORK"
	fi
}

# ---------------------------------------------------------------------------------------------
# Setup

ensure_tools() {
	local pkgs=()
	has nginx || [[ -x /usr/sbin/nginx ]] || pkgs+=(nginx)
	has wrk || pkgs+=(wrk)
	has curl || pkgs+=(curl)
	has openssl || pkgs+=(openssl)
	has python3 || pkgs+=(python3)
	if ((${#pkgs[@]})); then
		log "installing: ${pkgs[*]}"
		apt-get update -qq && apt-get install -y -qq "${pkgs[@]}" >/dev/null
	fi
	has nginx || PATH="$PATH:/usr/sbin"
	has nginx || die "nginx not found after install"
	has wrk || die "wrk not found after install"
}

ensure_binary() {
	if [[ "$BIN" == "$DEFAULT_BIN" ]] && { [[ "$BUILD" == 1 ]] || [[ ! -x "$BIN" ]]; }; then
		log "building ztp-operator (cargo build --release)..."
		(cd "$ROOT" && cargo build --release --bin ztp-operator) >&2
	fi
	[[ -x "$BIN" ]] || die "ztp-operator binary not found at $BIN (set BIN=... or BUILD=1)"
	"$BIN" serve --help 2>&1 | grep -q -- '--no-sendfile' || die "$BIN serve has no --no-sendfile (build too old?)"
}

machine_facts() {
	echo "== machine"
	echo "date:       $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "nproc:      $(nproc)"
	echo "cpu:        $(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1)"
	echo "kernel:     $(uname -r)"
	echo "loadavg:    $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews every contender)"
	echo "memory:     $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
	echo "nginx:      $(nginx -v 2>&1 | sed 's/^nginx version: //')"
	echo "wrk:        $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2)"
	echo "curl:       $(curl --version | head -1 | cut -d' ' -f1-2)"
	echo "ztp:        $BIN ($("$BIN" --version 2>/dev/null || echo '?'))"
	echo "ROUNDS:     $ROUNDS   CONTENDERS: $CONTENDERS   SCENARIOS: $SCENARIOS   PROFILES: $PROFILES"
	echo "workdir:    $WORK ($(df -h --output=source "$WORK" | tail -1))"
	echo
}

write_nginx_conf() {
	local prefix="$1" www="$2" port="$3"
	mkdir -p "$prefix/tmp"
	cat >"$prefix/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes auto;
pid $prefix/nginx.pid;
error_log $prefix/error.log warn;
worker_rlimit_nofile 65536;
events { worker_connections 4096; use epoll; }
http {
    access_log off;
    sendfile on;
    sendfile_max_chunk 2m;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    open_file_cache max=100 inactive=60s;
    default_type application/octet-stream;
    client_body_temp_path $prefix/tmp/body;
    proxy_temp_path $prefix/tmp/proxy; fastcgi_temp_path $prefix/tmp/fastcgi;
    uwsgi_temp_path $prefix/tmp/uwsgi; scgi_temp_path $prefix/tmp/scgi;
    server { listen 127.0.0.1:$port; root $www; }
}
EOF
}

# random_file PATH MIB
random_file() {
	head -c "$(($2 * 1048576))" /dev/urandom >"$1"
}

# Images, profiles, `standalone --once` into the store, then nginx's folder of hard links.
prepare() {
	local m="$WORK/manifests" src="$WORK/src" d="$WORK/store" www="$WORK/www" sha_big sha_huge t0
	mkdir -p "$m" "$src" "$d" "$www"
	t0="$(now)"
	# the sources and their copies in the store exist together until the import is done
	local need_mib=$((2 * (BIG_MIB + HUGE_MIB) + 200)) avail_mib
	avail_mib="$(df -BM --output=avail "$WORK" | tail -1 | tr -dc 0-9)"
	((avail_mib >= need_mib)) ||
		die "$WORK has $avail_mib MiB free, the benchmark needs about $need_mib MiB (try TMPDIR=/dev/shm)"
	log "generating ${BIG_MIB} MiB and ${HUGE_MIB} MiB random images..."
	random_file "$src/image256.bin" "$BIG_MIB"
	random_file "$src/image2g.bin" "$HUGE_MIB"
	sha_big="$(openssl dgst -sha256 "$src/image256.bin" | awk '{ print $NF }')"
	sha_huge="$(openssl dgst -sha256 "$src/image2g.bin" | awk '{ print $NF }')"
	cat >"$m/osimages.yaml" <<EOF
apiVersion: ztp.netops.dev/v1alpha1
kind: OsImage
metadata: {name: bench-256}
spec:
  platform: bench
  version: "256m"
  filename: image256.bin
  source: {url: {url: "file://../src/image256.bin"}}
  sha256: $sha_big
---
apiVersion: ztp.netops.dev/v1alpha1
kind: OsImage
metadata: {name: bench-2g}
spec:
  platform: bench
  version: "2g"
  filename: image2g.bin
  source: {url: {url: "file://../src/image2g.bin"}}
  sha256: $sha_huge
EOF
	log "generating $PROFILES SwitchProfiles..."
	awk -v n="$PROFILES" 'BEGIN {
		for (i = 1; i <= n; i++) {
			s = sprintf("SN%05d", i)
			printf "---\napiVersion: ztp.netops.dev/v1alpha1\nkind: SwitchProfile\n"
			printf "metadata: {name: sw%05d}\nspec:\n  match: {serialNumbers: [\"%s\"]}\n", i, s
			printf "  hostname: leaf%05d\n  variables: {ntp: 192.0.2.1}\n  ztp:\n    sections:\n", i
			printf "      - kind: image\n        content: {osImageRef: {name: bench-256}}\n"
			printf "      - kind: commands-list\n        clearConfig: true\n        content:\n"
			printf "          template: true\n          inline: |\n"
			printf "            nv set system hostname {{ hostname }}\n"
			printf "            nv set service ntp default server {{ variables.ntp }}\n"
			printf "            nv config apply -y\n"
		}
	}' >"$m/switchprofiles.yaml"
	log "importing into the store (ztp-operator standalone --once: copy + SHA-256 + fsync, render the snapshot)..."
	if ! timeout 300 "$BIN" standalone --manifests "$m" --data "$d" --once >"$WORK/standalone.log" 2>&1; then
		grep -v '^switchprofile .*: Ready$' "$WORK/standalone.log" | tail -20 >&2
		die "standalone --once failed (log above)"
	fi
	grep -E '^(osimage|snapshot)' "$WORK/standalone.log" | sed 's/^/  /' >&2 || true
	[[ -f "$d/bench/256m/image256.bin" && -f "$d/bench/2g/image2g.bin" ]] || die "images missing from the store"
	BIG_BYTES="$(stat -c %s "$d/bench/256m/image256.bin")"
	HUGE_BYTES="$(stat -c %s "$d/bench/2g/image2g.bin")"
	# nginx serves the very same inodes (same page cache); the sources go away
	ln "$d/bench/256m/image256.bin" "$www/image256.bin"
	ln "$d/bench/2g/image2g.bin" "$www/image2g.bin"
	head -c 1024 /dev/urandom >"$www/small1k.bin"
	rm -rf -- "$src"
	# nginx workers run as nobody when started by root
	chmod -R a+rX "$WORK"
	log "setup took $(calc 'b - a' a="$t0" b="$(now)" | xargs printf '%.0f') s"
}

# ---------------------------------------------------------------------------------------------
# Servers. start_server NAME: sets SERVER_PID, PORT; URL prefixes in IMG_URL / ZTP_FMT.

wait_http() { # wait_http URL SECONDS: until 200
	local url="$1" secs="$2" i
	for ((i = 0; i < secs * 10; i++)); do
		if curl -sf -o /dev/null --max-time 2 "$url"; then return 0; fi
		kill -0 "$SERVER_PID" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}

start_server() {
	local name="$1" attempt
	SERVER_NAME="$name"
	for attempt in 1 2 3; do
		PORT="$(free_port)"
		case "$name" in
		nginx)
			write_nginx_conf "$WORK/nginx" "$WORK/www" "$PORT"
			nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" -e "$WORK/nginx/error.log" \
				>"$WORK/nginx/stdout.log" 2>&1 &
			SERVER_PID=$!
			if wait_http "http://127.0.0.1:$PORT/small1k.bin" 10; then return 0; fi
			;;
		ztp | ztp-buffered)
			local extra=()
			[[ "$name" == ztp-buffered ]] && extra+=(--no-sendfile)
			"$BIN" serve --store-dir "$WORK/store" --external-url "http://127.0.0.1:$PORT" \
				--listen "127.0.0.1:$PORT" "${extra[@]}" >>"$WORK/$name.log" 2>&1 &
			SERVER_PID=$!
			if wait_http "http://127.0.0.1:$PORT/readyz" 60; then return 0; fi
			;;
		*) die "unknown contender $name" ;;
		esac
		log "$name did not come up on port $PORT (attempt $attempt)"
		stop_server
	done
	die "could not start $name"
}

stop_server() {
	[[ -n "$SERVER_PID" ]] || return 0
	if [[ "$SERVER_NAME" == nginx ]]; then stop_pid "$SERVER_PID" QUIT; else stop_pid "$SERVER_PID" TERM; fi
	SERVER_PID=""
}

server_alive() {
	kill -0 "$SERVER_PID" 2>/dev/null || die "$SERVER_NAME (pid $SERVER_PID) died; see $WORK/$SERVER_NAME.log"
}

img_url() { # img_url FILE
	if [[ "$SERVER_NAME" == nginx ]]; then
		echo "http://127.0.0.1:$PORT/$1"
	else
		case "$1" in
		image256.bin) echo "http://127.0.0.1:$PORT/images/bench/256m/$1" ;;
		*) echo "http://127.0.0.1:$PORT/images/bench/2g/$1" ;;
		esac
	fi
}

# Checks the image is served whole before loading it (HEAD: 200 and the size).
check_image() {
	local url="$1" want="$2" got
	got="$(curl -sfI --max-time 5 "$url" | tr -d '\r' | awk -F': ' 'tolower($1) == "content-length" { print $2 }')"
	[[ "$got" == "$want" ]] || die "$SERVER_NAME: HEAD $url: content-length '$got', want $want"
}

mib() { calc 'k / 1024' k="$1" | xargs printf '%.1f'; }

# ---------------------------------------------------------------------------------------------
# Scenarios. Each stores its figures in RES[s,contender,round,*] and prints one row.

scenario1() {
	local c="$1" r="$2" url out t0 t1 n bad bytes wall rss pss cpu _s
	url="$(img_url image256.bin)"
	check_image "$url" "$BIG_BYTES"
	out="$WORK/s1.out"
	sampler_start s1
	t0="$(now)"
	seq "$S1_CLIENTS" | timeout 180 xargs -P "$S1_CLIENTS" -I{} \
		curl -s -o /dev/null -w '%{size_download} %{http_code}\n' "$url" >"$out" || true
	t1="$(now)"
	sampler_stop s1
	read -r rss pss cpu _s <"$WORK/sample.s1"
	server_alive
	n="$(wc -l <"$out")"
	bad="$(awk -v want="$BIG_BYTES" '$1 != want || $2 != 200' "$out" | wc -l)"
	bytes="$(awk '{ s += $1 } END { printf "%.0f", s }' "$out")"
	wall="$(calc 'b - a' a="$t0" b="$t1" | xargs printf '%.3f')"
	((n == S1_CLIENTS && bad == 0)) ||
		die "scenario 1, $c: $n answers, $bad not (200, $BIG_BYTES bytes): $(sort "$out" | uniq -c | head -5 | tr '\n' ';')"
	RES[1,$c,$r,mbs]="$(calc 'b / t / 1e6' b="$bytes" t="$wall" | xargs printf '%.0f')"
	RES[1,$c,$r,rss]="$rss" RES[1,$c,$r,pss]="$pss" RES[1,$c,$r,cpu]="$cpu"
	RES[1,$c,$r,cpugb]="$(calc 'c / (b / 1e9)' c="$cpu" b="$bytes" | xargs printf '%.3f')"
	printf '%-5s %-13s %8s %9s %7s %10s %10s %7s %8s\n' "$r" "$c" "$wall" "${RES[1,$c,$r,mbs]}" "$n/$n" \
		"$(mib "$rss")" "$(mib "$pss")" "$cpu" "${RES[1,$c,$r,cpugb]}"
}

scenario2() {
	local c="$1" r="$2" url out t0 t1 n bad empty bytes wall rss pss cpu _s
	url="$(img_url image2g.bin)"
	check_image "$url" "$HUGE_BYTES"
	out="$WORK/s2.out"
	sampler_start s2
	t0="$(now)"
	# every client hits --max-time (exit 28): expected, the answers are checked below
	seq "$S2_CLIENTS" | timeout 120 xargs -P "$S2_CLIENTS" -I{} \
		curl -s -o /dev/null --limit-rate "$S2_RATE" --max-time "$S2_SECONDS" \
		-w '%{size_download} %{http_code}\n' "$url" >"$out" || true
	t1="$(now)"
	sampler_stop s2
	read -r rss pss cpu _s <"$WORK/sample.s2"
	server_alive
	n="$(wc -l <"$out")"
	bad="$(awk '$2 != 200' "$out" | wc -l)"
	empty="$(awk '$1 == 0' "$out" | wc -l)"
	bytes="$(awk '{ s += $1 } END { printf "%.0f", s }' "$out")"
	wall="$(calc 'b - a' a="$t0" b="$t1" | xargs printf '%.3f')"
	((n == S2_CLIENTS && bad == 0 && empty == 0)) ||
		die "scenario 2, $c: $n answers, $bad not 200, $empty empty: $(awk '{ print $2 }' "$out" | sort | uniq -c | tr '\n' ';')"
	RES[2,$c,$r,gb]="$(calc 'b / 1e9' b="$bytes" | xargs printf '%.2f')"
	RES[2,$c,$r,mbs]="$(calc 'b / t / 1e6' b="$bytes" t="$wall" | xargs printf '%.0f')"
	RES[2,$c,$r,rss]="$rss" RES[2,$c,$r,pss]="$pss" RES[2,$c,$r,cpu]="$cpu"
	RES[2,$c,$r,cpugb]="$(calc 'c / (b / 1e9)' c="$cpu" b="$bytes" | xargs printf '%.3f')"
	printf '%-5s %-13s %8s %9s %7s %10s %10s %7s %8s\n' "$r" "$c" "${RES[2,$c,$r,gb]}" "${RES[2,$c,$r,mbs]}" \
		"$n/$n" "$(mib "$rss")" "$(mib "$pss")" "$cpu" "${RES[2,$c,$r,cpugb]}"
}

# latency_ms VALUE_WITH_UNIT (wrk: 812.00us, 1.23ms, 1.01s)
latency_ms() {
	awk -v v="$1" 'BEGIN {
		if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
		else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
		else if (v ~ /m$/) { sub(/m$/, "", v); printf "%.3f", v * 60000 }
		else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
		else printf "nan" }'
}

scenario3() {
	local c="$1" r="$2" fmt probe body code out rss pss cpu _s reqs rps p50 p99 non2xx errors
	if [[ "$c" == nginx ]]; then
		fmt='/small1k.bin?s=SN%05d'
	else
		fmt='/nvos/SN%05d/ztp.json'
	fi
	# one answer checked by hand: 200 and (for ztp) this device's JSON
	# shellcheck disable=SC2059 # the format is ours
	probe="http://127.0.0.1:$PORT$(printf "$fmt" "$PROFILES")"
	body="$WORK/s3.body"
	code="$(curl -s -o "$body" --max-time 5 -w '%{http_code}' "$probe")"
	[[ "$code" == 200 ]] || die "scenario 3, $c: GET $probe -> $code: $(head -c 300 "$body")"
	if [[ "$c" != nginx ]]; then
		python3 -c 'import json, sys; json.load(open(sys.argv[1]))' "$body" ||
			die "scenario 3: $probe is not JSON"
		grep -q "/nvos/$(printf 'SN%05d' "$PROFILES")/sections/" "$body" ||
			die "scenario 3: $probe does not name its device's sections: $(head -c 300 "$body")"
		RES[3,$c,$r,body]="$(stat -c %s "$body")"
	else
		RES[3,$c,$r,body]="$(stat -c %s "$body")"
	fi
	out="$WORK/s3.wrk"
	sampler_start s3
	timeout 60 wrk -t2 -c64 -d10s --latency -s "$WORK/cycle.lua" "http://127.0.0.1:$PORT" -- "$fmt" "$PROFILES" \
		>"$out" 2>&1 &
	local wrk_pid=$!
	# how the 64 connections sit on the server's event loops, read mid-run (see write_spread)
	sleep 5
	RES[3,$c,$r,spread]="$(python3 "$WORK/spread.py" "$SERVER_PID" "$(pgrep -P "$wrk_pid" wrk)" 2>/dev/null || echo '?')"
	wait "$wrk_pid" || die "scenario 3, $c: wrk failed: $(cat "$out")"
	sampler_stop s3
	read -r rss pss cpu _s <"$WORK/sample.s3"
	server_alive
	rps="$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$out")"
	reqs="$(awk '/requests in/ { print $1 }' "$out")"
	p50="$(latency_ms "$(awk '$1 == "50%" { print $2 }' "$out")")"
	p99="$(latency_ms "$(awk '$1 == "99%" { print $2 }' "$out")")"
	non2xx="$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")"
	errors="$(awk '/Socket errors:/ { gsub(/,/, ""); print $4 + $6 + $8 + $10 }' "$out")"
	[[ -n "$rps" && -n "$reqs" ]] || die "scenario 3, $c: cannot parse wrk output: $(cat "$out")"
	if [[ -n "$non2xx" || -n "$errors" ]]; then
		cat "$out" >&2
		die "scenario 3, $c: ${non2xx:-0} non-2xx answers, ${errors:-0} socket errors"
	fi
	RES[3,$c,$r,rps]="$rps" RES[3,$c,$r,p50]="$p50" RES[3,$c,$r,p99]="$p99"
	RES[3,$c,$r,rss]="$rss" RES[3,$c,$r,cpu]="$cpu"
	RES[3,$c,$r,usreq]="$(calc 'c * 1e6 / n' c="$cpu" n="$reqs" | xargs printf '%.1f')"
	printf '%-5s %-13s %9s %8s %8s %10s %7s %8s %6s  %s\n' "$r" "$c" "$rps" "$p50" "$p99" "$(mib "$rss")" "$cpu" \
		"${RES[3,$c,$r,usreq]}" "${RES[3,$c,$r,body]}" "${RES[3,$c,$r,spread]}"
}

# ---------------------------------------------------------------------------------------------
# Driver and summary

order_for_round() { # odd rounds as given, even rounds reversed
	local r="$1" list
	read -r -a list <<<"$CONTENDERS"
	if ((r % 2 == 0)); then
		local i
		for ((i = ${#list[@]} - 1; i >= 0; i--)); do printf '%s ' "${list[$i]}"; done
	else
		printf '%s ' "${list[@]}"
	fi
}

applies() { # applies SCENARIO CONTENDER
	[[ "$1" != 3 || "$2" != ztp-buffered ]]
}

run_rounds() {
	local r c s
	for ((r = 1; r <= ROUNDS; r++)); do
		for c in $(order_for_round "$r"); do
			for s in $SCENARIOS; do applies "$s" "$c" && break; done
			applies "$s" "$c" || continue # nothing to measure for this contender
			start_server "$c"
			# idle footprint after start-up (ztp: with the snapshot loaded)
			sampler_start idle
			sleep 0.3
			sampler_stop idle
			local idle_rss idle_pss _rest
			read -r idle_rss idle_pss _rest <"$WORK/sample.idle"
			RES[idle,$c,$r,rss]="$idle_rss" RES[idle,$c,$r,pss]="$idle_pss"
			log "round $r: $c (pid $SERVER_PID, port $PORT), idle RSS $(mib "${RES[idle,$c,$r,rss]}") MiB, PSS $(mib "${RES[idle,$c,$r,pss]}") MiB"
			for s in 1 2 3; do
				if ! scenario_on "$s" || ! applies "$s" "$c"; then continue; fi
				"scenario$s" "$c" "$r" >>"$WORK/rows.$s"
				tail -1 "$WORK/rows.$s" | sed "s/^/[s$s] /" >&2
			done
			stop_server
		done
	done
	for s in 1 2 3; do
		scenario_on "$s" || continue
		case "$s" in
		1)
			echo "== 1: $S1_CLIENTS concurrent downloads of a ${BIG_MIB} MiB image (curl, xargs -P $S1_CLIENTS)"
			printf '%-5s %-13s %8s %9s %7s %10s %10s %7s %8s\n' round contender wall_s MB/s ok \
				peakRSS_MiB peakPSS_MiB CPU_s CPU_s/GB
			;;
		2)
			echo "== 2: $S2_CLIENTS slow clients (--limit-rate $S2_RATE --max-time $S2_SECONDS) on a ${HUGE_MIB} MiB image"
			printf '%-5s %-13s %8s %9s %7s %10s %10s %7s %8s\n' round contender GB MB/s ok \
				peakRSS_MiB peakPSS_MiB CPU_s CPU_s/GB
			;;
		3)
			echo "== 3: wrk -t2 -c64 -d10s --latency; ztp: /nvos/{serial}/ztp.json over $PROFILES profiles; nginx: a 1 KiB file"
			printf '%-5s %-13s %9s %8s %8s %10s %7s %8s %6s  %s\n' round contender req/s p50_ms p99_ms \
				peakRSS_MiB CPU_s us/req bytes conns/loop
			;;
		esac
		cat "$WORK/rows.$s"
		echo
	done
}

# med FORMAT S C METRIC: the median over rounds, printf-formatted
med() { median "$(vals "$2" "$3" "$4")" | xargs printf "$1"; }

# vals S C METRIC -> the values over rounds
vals() {
	local r out=""
	for ((r = 1; r <= ROUNDS; r++)); do out+="${RES[$1,$2,$r,$3]:-} "; done
	echo "$out"
}

# ratio_median S C METRIC: median over rounds of (C / nginx in the same round)
ratio_median() {
	local r out=""
	for ((r = 1; r <= ROUNDS; r++)); do
		out+="$(calc 'a / b' a="${RES[$1,$2,$r,$3]}" b="${RES[$1,nginx,$r,$3]}") "
	done
	median "$out" | xargs printf '%.2f'
}

summary() {
	local c x rss_mib
	echo "== summary (medians of $ROUNDS rounds; ratios = median over rounds of contender / nginx in the same round; RSS = max over rounds)"
	echo "-- idle after start-up (ztp: device snapshot of $PROFILES profiles loaded)"
	printf '%-13s %12s %12s\n' contender RSS_MiB PSS_MiB
	for c in $CONTENDERS; do
		[[ -n "$(vals idle "$c" rss | tr -d ' ')" ]] || continue
		printf '%-13s %12s %12s\n' "$c" "$(mib "$(max_of "$(vals idle "$c" rss)")")" "$(mib "$(max_of "$(vals idle "$c" pss)")")"
	done
	echo
	if scenario_on 1; then
		echo "-- 1: $S1_CLIENTS × ${BIG_MIB} MiB"
		printf '%-13s %9s %7s %12s %12s %9s\n' contender MB/s ×nginx peakRSS_MiB peakPSS_MiB CPU_s/GB
		for c in $CONTENDERS; do
			x="-"
			[[ "$c" != nginx ]] && wants nginx && x="$(ratio_median 1 "$c" mbs)"
			printf '%-13s %9s %7s %12s %12s %9s\n' "$c" "$(med %.0f 1 "$c" mbs)" "$x" \
				"$(mib "$(max_of "$(vals 1 "$c" rss)")")" "$(mib "$(max_of "$(vals 1 "$c" pss)")")" \
				"$(med %.3f 1 "$c" cpugb)"
		done
		if wants ztp; then
			wants nginx && x="$(ratio_median 1 ztp mbs)" &&
				echo "target ztp throughput >= ${TARGET_S1_RATIO}× nginx: ${x}×  $(verdict "$x" '>=' "$TARGET_S1_RATIO")"
			rss_mib="$(mib "$(max_of "$(vals 1 ztp rss)")")"
			echo "target ztp peak RSS <= $TARGET_RSS_MIB MiB: $rss_mib MiB  $(verdict "$rss_mib" '<=' "$TARGET_RSS_MIB")"
		fi
		echo
	fi
	if scenario_on 2; then
		echo "-- 2: $S2_CLIENTS slow clients × ${HUGE_MIB} MiB"
		printf '%-13s %9s %12s %12s %9s %14s\n' contender GB peakRSS_MiB peakPSS_MiB CPU_s/GB "CPU/GB ×nginx"
		for c in $CONTENDERS; do
			x="-"
			[[ "$c" != nginx ]] && wants nginx && x="$(ratio_median 2 "$c" cpugb)"
			printf '%-13s %9s %12s %12s %9s %14s\n' "$c" "$(med %.2f 2 "$c" gb)" \
				"$(mib "$(max_of "$(vals 2 "$c" rss)")")" "$(mib "$(max_of "$(vals 2 "$c" pss)")")" \
				"$(med %.3f 2 "$c" cpugb)" "$x"
		done
		if wants ztp; then
			rss_mib="$(mib "$(max_of "$(vals 2 ztp rss)")")"
			echo "target ztp peak RSS <= $TARGET_RSS_MIB MiB: $rss_mib MiB  $(verdict "$rss_mib" '<=' "$TARGET_RSS_MIB")"
			wants nginx && x="$(ratio_median 2 ztp cpugb)" &&
				echo "target ztp CPU/GB <= ${TARGET_S2_CPU_RATIO}× nginx: ${x}×  $(verdict "$x" '<=' "$TARGET_S2_CPU_RATIO")"
		fi
		echo
	fi
	if scenario_on 3; then
		echo "-- 3: wrk -c64, ztp JSON per serial vs nginx 1 KiB static"
		printf '%-13s %9s %7s %8s %8s %12s %8s\n' contender req/s ×nginx p50_ms p99_ms peakRSS_MiB us/req
		for c in $CONTENDERS; do
			applies 3 "$c" || continue
			x="-"
			[[ "$c" != nginx ]] && wants nginx && x="$(ratio_median 3 "$c" rps)"
			printf '%-13s %9s %7s %8s %8s %12s %8s\n' "$c" "$(med %.0f 3 "$c" rps)" "$x" \
				"$(med %.2f 3 "$c" p50)" "$(med %.2f 3 "$c" p99)" \
				"$(mib "$(max_of "$(vals 3 "$c" rss)")")" "$(med %.1f 3 "$c" usreq)"
		done
		if wants ztp; then
			if wants nginx; then
				x="$(ratio_median 3 ztp rps)"
				echo "target ztp req/s >= ${TARGET_S3_RATIO}× nginx: ${x}×  $(verdict "$x" '>=' "$TARGET_S3_RATIO")"
				x="$(ratio_median 3 ztp usreq)"
				echo "target ztp CPU/request <= ${TARGET_S3_CPU_RATIO}× nginx: ${x}×  $(verdict "$x" '<=' "$TARGET_S3_CPU_RATIO")"
				x="$(med %.2f 3 ztp p99)" n="$(med %.2f 3 nginx p99)"
				echo "target ztp p99 <= nginx's (medians): $x ms against $n ms  $(verdict "$x" '<=' "$n")"
			fi
			x="$(max_of "$(vals 3 ztp p99)")"
			echo "target ztp p99 <= $TARGET_S3_P99_MS ms (worst round): $x ms  $(verdict "$x" '<=' "$TARGET_S3_P99_MS")"
		fi
		echo
	fi
}

server_log_check() {
	local c f plain
	for c in ztp ztp-buffered; do
		f="$WORK/$c.log"
		[[ -f "$f" ]] || continue
		plain="$WORK/$c.plain.log"
		sed 's/\x1b\[[0-9;]*m//g' "$f" | grep -E '^[^ ]+ +(WARN|ERROR) ' >"$plain" || true
		echo "-- $c log: $(wc -l <"$f") lines (all rounds), $(wc -l <"$plain") WARN/ERROR"
		cut -d' ' -f2- "$plain" | sed 's/^ *//' | cut -c1-160 | sort | uniq -c | sort -rn | head -5
	done
}

validate_env() {
	[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer"
	[[ "$PROFILES" =~ ^[1-9][0-9]*$ && "$PROFILES" -le 99999 ]] || die "PROFILES must be 1..99999"
	local c s
	for c in $CONTENDERS; do [[ "$c" =~ ^(nginx|ztp|ztp-buffered)$ ]] || die "bad contender '$c'"; done
	for s in $SCENARIOS; do [[ "$s" =~ ^[123]$ ]] || die "bad scenario '$s'"; done
	[[ -n "${CONTENDERS// /}" && -n "${SCENARIOS// /}" ]] || die "nothing to run"
}

main() {
	local t0
	t0="$(now)"
	validate_env
	trap cleanup EXIT
	trap 'exit 130' INT TERM
	ensure_tools
	ensure_binary
	WORK="$(mktemp -d "${TMPDIR:-/tmp}/ztp-serve-bench.XXXXXX")"
	machine_facts
	write_sampler
	write_spread "$WORK/spread.py"
	write_cycle_lua "$WORK/cycle.lua"
	prepare
	run_rounds
	summary
	server_log_check
	echo "total runtime: $(calc 'b - a' a="$t0" b="$(now)" | xargs printf '%.0f') s"
}

main "$@"
