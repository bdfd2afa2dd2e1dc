#!/usr/bin/env bash
# Benchmark "fetch + SHA-256 verify + store" of one large image served by a local nginx:
#
#   A  ztp-operator   `ztp-operator standalone --once` on a one-OsImage manifests dir
#   B  curl+sha256sum `curl -sf -o f URL && sha256sum f`          (two passes)
#   C  curl+openssl   `curl -sf -o f URL && openssl dgst -sha256 f` (two passes)
#   D  C + `sync f`   the same, then fsync the file: the durability ztp-operator gives (it fsyncs
#                     before the file appears under its final name), so A vs D is like for like
#
# Runs alternate A,B,C,A,B,C,... for ROUNDS rounds, each from an empty destination. Caches are
# not dropped: the source stays in the page cache (it was just written), so the numbers measure
# the client side, not the disk the server reads from. See bench/README.md.
#
# Environment (all optional):
#   SIZE_MIB=2048      image size in MiB (ignored when SIZES is set)
#   SIZES="256 2048"   several sizes in one invocation (a fresh image per size)
#   ROUNDS=3           rounds per size
#   CONTENDERS="A B C" which contenders to run, in this order within a round
#   BIN=...            ztp-operator binary (default: ${CARGO_TARGET_DIR:-<repo>/target}/release/ztp-operator)
#   BUILD=1            run `cargo build --release` first even if BIN exists (default binary only)
#   CHECK_DIGEST=1     also re-hash A's stored file after each run (outside the timed region)
#   TMPDIR=/tmp        where the temporary server root, image and destinations live
#
# Exit status: 0 whether or not the targets are met; 1 if a run failed or produced a wrong file.
set -euo pipefail
export LC_ALL=C # EPOCHREALTIME and awk print '.' as decimal separator

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly ROOT
readonly DEFAULT_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/ztp-operator"
BIN="${BIN:-$DEFAULT_BIN}"
ROUNDS="${ROUNDS:-3}"
SIZES="${SIZES:-${SIZE_MIB:-2048}}"
CONTENDERS="${CONTENDERS:-A B C D}"
BUILD="${BUILD:-0}"
CHECK_DIGEST="${CHECK_DIGEST:-1}"

readonly TARGET_RATIO_AC=0.70 # A's wall time at most 70 % of curl+openssl
readonly TARGET_RSS_MIB=64    # A's peak RSS

WORK=""      # temp dir: nginx prefix, www root, destinations
NGINX_PID="" # nginx master (daemon off, so $! is the master)
PORT=""
URL=""
IMAGE_BYTES=0
IMAGE_SHA=""

declare -A LABEL=([A]="ztp-operator" [B]="curl+sha256sum" [C]="curl+openssl" [D]="curl+openssl+sync")
declare -A WALLS=()    # contender -> space-separated wall times (s) for the current size
RSS_RUNS=""            # A's peak RSS (KiB) per run, current size
declare -a RSS_BY_SIZE=() # "size_mib max_rss_kib" lines, one per size

# ---------------------------------------------------------------------------------------------
# Helpers

log() { printf '%s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}
has() { command -v "$1" >/dev/null 2>&1; }

cleanup() {
	if [[ -n "$NGINX_PID" ]] && kill -0 "$NGINX_PID" 2>/dev/null; then
		kill -TERM "$NGINX_PID" 2>/dev/null || true
		wait "$NGINX_PID" 2>/dev/null || true
	fi
	if [[ -n "$WORK" && -d "$WORK" ]]; then
		rm -rf -- "$WORK"
	fi
}

now() { printf '%s' "$EPOCHREALTIME"; }

# elapsed START END -> seconds with 3 decimals
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

# median of whitespace-separated numbers
median() {
	tr ' ' '\n' <<<"$*" | grep -v '^$' | sort -g |
		awk '{ v[NR] = $1 } END { if (NR == 0) { print "nan"; exit }
			if (NR % 2) printf "%.3f", v[(NR + 1) / 2]; else printf "%.3f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

max_of() { tr ' ' '\n' <<<"$*" | grep -v '^$' | sort -g | tail -1; }

# calc EXPR [var=value...]: floating-point arithmetic through awk
calc() {
	local expr="$1"
	shift
	local args=()
	local kv
	for kv in "$@"; do args+=(-v "$kv"); done
	awk "${args[@]}" "BEGIN { printf \"%s\", $expr }"
}

file_size() { stat -c %s "$1"; }

wants() { [[ " $CONTENDERS " == *" $1 "* ]]; }

# ---------------------------------------------------------------------------------------------
# Setup

ensure_tools() {
	local pkgs=()
	has nginx || [[ -x /usr/sbin/nginx ]] || pkgs+=(nginx)
	[[ -x /usr/bin/time ]] || pkgs+=(time)
	has curl || pkgs+=(curl)
	has openssl || pkgs+=(openssl)
	has python3 || pkgs+=(python3)
	if ((${#pkgs[@]})); then
		log "installing: ${pkgs[*]}"
		apt-get update -qq && apt-get install -y -qq "${pkgs[@]}" >/dev/null
	fi
	has nginx || PATH="$PATH:/usr/sbin"
	has nginx || die "nginx not found after install"
}

ensure_binary() {
	wants A || return 0
	if [[ "$BIN" == "$DEFAULT_BIN" ]] && { [[ "$BUILD" == 1 ]] || [[ ! -x "$BIN" ]]; }; then
		log "building ztp-operator (cargo build --release)..."
		(cd "$ROOT" && cargo build --release --bin ztp-operator) >&2
	fi
	[[ -x "$BIN" ]] || die "ztp-operator binary not found at $BIN (set BIN=... or BUILD=1)"
	"$BIN" standalone --help 2>&1 | grep -q -- '--once' ||
		die "$BIN standalone has no --once flag (build too old?); run with CONTENDERS=\"B C\""
}

machine_facts() {
	echo "== machine"
	echo "nproc:      $(nproc)"
	echo "cpu:        $(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1)"
	echo "sha_ni:     $(if grep -qw sha_ni /proc/cpuinfo; then echo yes; else echo no; fi)"
	echo "kernel:     $(uname -r)"
	echo "loadavg:    $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews every contender)"
	echo "memory:     $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
	echo "nginx:      $(nginx -v 2>&1 | sed 's/^nginx version: //')"
	echo "curl:       $(curl --version | head -1 | cut -d' ' -f1-2)"
	echo "openssl:    $(openssl version)"
	echo "sha256sum:  $(sha256sum --version | head -1)"
	if wants A; then
		echo "ztp:        $BIN ($("$BIN" --version 2>/dev/null || echo '?'))"
	fi
	echo "SIZE_MIB:   ${SIZE_MIB:-2048}   SIZES: $SIZES   ROUNDS: $ROUNDS   CONTENDERS: $CONTENDERS"
	echo "workdir:    $WORK ($(df -h --output=source "$WORK" | tail -1))"
	echo
}

free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

write_nginx_conf() {
	local conf="$1" prefix="$2" www="$3" port="$4"
	cat >"$conf" <<EOF
worker_processes 1;
daemon off;
pid $prefix/nginx.pid;
error_log $prefix/error.log warn;
events { worker_connections 64; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    default_type application/octet-stream;
    client_body_temp_path $prefix/client_body;
    proxy_temp_path $prefix/proxy;
    fastcgi_temp_path $prefix/fastcgi;
    uwsgi_temp_path $prefix/uwsgi;
    scgi_temp_path $prefix/scgi;
    server {
        listen 127.0.0.1:$port;
        root $www;
    }
}
EOF
}

# start_nginx: a private instance on a random free port, retried if the port got taken meanwhile
start_nginx() {
	local prefix="$WORK/nginx" www="$WORK/www" conf attempt _
	mkdir -p "$prefix" "$www"
	# workers drop to an unprivileged user when started as root: let them read the tree
	chmod 755 "$WORK" "$www"
	echo ok >"$www/ready"
	chmod 644 "$www/ready"
	conf="$prefix/nginx.conf"
	for attempt in 1 2 3 4 5; do
		PORT="$(free_port)"
		write_nginx_conf "$conf" "$prefix" "$www" "$PORT"
		nginx -c "$conf" -p "$prefix" -e "$prefix/error.log" &
		NGINX_PID=$!
		for _ in $(seq 1 50); do
			if curl -sf -o /dev/null "http://127.0.0.1:$PORT/ready"; then
				URL="http://127.0.0.1:$PORT/image.bin"
				log "nginx $NGINX_PID listening on 127.0.0.1:$PORT"
				return 0
			fi
			kill -0 "$NGINX_PID" 2>/dev/null || break
			sleep 0.1
		done
		kill -TERM "$NGINX_PID" 2>/dev/null || true
		wait "$NGINX_PID" 2>/dev/null || true
		NGINX_PID=""
		log "nginx did not come up on port $PORT (attempt $attempt): $(tail -1 "$prefix/error.log" 2>/dev/null)"
	done
	die "could not start nginx"
}

# make_image MIB: incompressible data in the server root, digest computed once (not measured)
make_image() {
	local mib="$1" img="$WORK/www/image.bin"
	rm -f "$img"
	log "generating ${mib} MiB image..."
	head -c "$((mib * 1048576))" /dev/urandom >"$img"
	chmod 644 "$img"
	IMAGE_BYTES="$(file_size "$img")"
	IMAGE_SHA="$(openssl dgst -sha256 "$img" | awk '{ print $NF }')"
	log "image: $IMAGE_BYTES bytes, sha256 $IMAGE_SHA"
}

# ---------------------------------------------------------------------------------------------
# Contenders. Each prints its wall time (s) on stdout; A writes its peak RSS (KiB) to $WORK/rss.
# Anything wrong -> die (exit 1).

fresh_dir() {
	rm -rf -- "$1"
	mkdir -p "$1"
}

run_A() {
	local dir="$WORK/run-a" m d out t0 t1 rss
	fresh_dir "$dir"
	m="$dir/manifests" d="$dir/data"
	mkdir -p "$m" "$d"
	cat >"$m/osimage.yaml" <<EOF
apiVersion: ztp.netops.dev/v1alpha1
kind: OsImage
metadata: {name: bench}
spec:
  platform: bench
  version: "1"
  filename: image.bin
  source: {url: {url: "$URL"}}
  sha256: $IMAGE_SHA
EOF
	t0="$(now)"
	if ! /usr/bin/time -f '%M' -o "$dir/time.out" \
		"$BIN" standalone --manifests "$m" --data "$d" --once >"$dir/log" 2>&1; then
		log "ztp-operator failed; last log lines:"
		tail -20 "$dir/log" >&2
		die "contender A failed"
	fi
	t1="$(now)"
	out="$d/bench/1/image.bin"
	[[ -f "$out" ]] || die "A: $out missing"
	[[ "$(file_size "$out")" == "$IMAGE_BYTES" ]] ||
		die "A: $out has $(file_size "$out") bytes, want $IMAGE_BYTES"
	if [[ "$CHECK_DIGEST" == 1 ]]; then
		[[ "$(sha256sum "$out" | cut -d' ' -f1)" == "$IMAGE_SHA" ]] || die "A: $out has a wrong digest"
	fi
	rss="$(tail -1 "$dir/time.out")"
	[[ "$rss" =~ ^[0-9]+$ ]] || die "A: cannot read peak RSS from $dir/time.out"
	echo "$rss" >"$WORK/rss"
	rm -rf -- "$dir"
	elapsed "$t0" "$t1"
}

# run_two_pass NAME HASHCMD...: curl to a file, then hash it with HASHCMD; the digest printed
# must be the expected one.
run_two_pass() {
	local name="$1" dir="$WORK/run-$1" f t0 t1 got
	shift
	fresh_dir "$dir"
	f="$dir/image.bin"
	t0="$(now)"
	curl -sf -o "$f" "$URL" || die "$name: curl failed"
	got="$("$@" "$f")"
	t1="$(now)"
	# sha256sum: "<hex>  file"; openssl: "SHA2-256(file)= <hex>"
	got="$(awk 'NR == 1 { print (/\)= / ? $NF : $1) }' <<<"$got")"
	[[ "$got" == "$IMAGE_SHA" ]] || die "$name: digest $got, want $IMAGE_SHA"
	[[ "$(file_size "$f")" == "$IMAGE_BYTES" ]] || die "$name: wrong size"
	rm -rf -- "$dir"
	elapsed "$t0" "$t1"
}

run_B() { run_two_pass B sha256sum; }
run_C() { run_two_pass C openssl dgst -sha256; }
# D: hash, then fsync the file (coreutils `sync FILE`); the digest line is what openssl printed.
openssl_then_sync() { openssl dgst -sha256 "$1" && sync "$1"; }
run_D() { run_two_pass D openssl_then_sync; }

# ---------------------------------------------------------------------------------------------
# Reporting

mib_per_s() { calc 'mib / t' mib="$1" t="$2" | xargs printf '%.0f'; }
gb_per_s() { calc 'b / t / 1e9' b="$1" t="$2" | xargs printf '%.2f'; }
verdict() { if [[ "$(calc "($1 <= $2) ? 1 : 0")" == 1 ]]; then echo PASS; else echo MISS; fi; }

bench_size() {
	local mib="$1" round c wall rss_kib rss_col
	make_image "$mib"
	WALLS=()
	RSS_RUNS=""
	echo "== ${mib} MiB, $ROUNDS round(s)"
	printf '%-6s %-16s %9s %9s %8s %10s\n' round contender wall_s MiB/s GB/s peakRSS
	for ((round = 1; round <= ROUNDS; round++)); do
		for c in $CONTENDERS; do
			wall="$("run_$c")"
			WALLS[$c]+="$wall "
			rss_col="-"
			if [[ "$c" == A ]]; then
				rss_kib="$(cat "$WORK/rss")"
				RSS_RUNS+="$rss_kib "
				rss_col="$(calc 'k / 1024' k="$rss_kib" | xargs printf '%.1fMiB')"
			fi
			printf '%-6s %-16s %9s %9s %8s %10s\n' "$round" "${LABEL[$c]}" "$wall" \
				"$(mib_per_s "$mib" "$wall")" "$(gb_per_s "$IMAGE_BYTES" "$wall")" "$rss_col"
		done
	done
	echo
	summarize "$mib"
}

summarize() {
	local mib="$1" c med a b cc ratio rss_max rss_mib
	echo "-- summary, ${mib} MiB ($IMAGE_BYTES bytes), median of $ROUNDS"
	printf '%-16s %9s %9s %8s\n' contender wall_s MiB/s GB/s
	for c in $CONTENDERS; do
		med="$(median "${WALLS[$c]}")"
		printf '%-16s %9s %9s %8s\n' "${LABEL[$c]}" "$med" "$(mib_per_s "$mib" "$med")" \
			"$(gb_per_s "$IMAGE_BYTES" "$med")"
	done
	if wants A; then
		a="$(median "${WALLS[A]}")"
		if wants C; then
			cc="$(median "${WALLS[C]}")"
			ratio="$(calc 'a / c' a="$a" c="$cc" | xargs printf '%.3f')"
			echo "A / C (ztp / curl+openssl):   $ratio   target <= $TARGET_RATIO_AC   $(verdict "$ratio" "$TARGET_RATIO_AC")"
		fi
		if wants D; then
			dd="$(median "${WALLS[D]}")"
			ratio="$(calc 'a / d' a="$a" d="$dd" | xargs printf '%.3f')"
			echo "A / D (ztp / curl+openssl+sync, same durability): $ratio"
		fi
		if wants B; then
			b="$(median "${WALLS[B]}")"
			ratio="$(calc 'a / b' a="$a" b="$b" | xargs printf '%.3f')"
			echo "A / B (ztp / curl+sha256sum): $ratio"
		fi
		rss_max="$(max_of "$RSS_RUNS")"
		rss_mib="$(calc 'k / 1024' k="$rss_max" | xargs printf '%.1f')"
		echo "A peak RSS (max of runs):     ${rss_mib} MiB   target <= $TARGET_RSS_MIB MiB   $(verdict "$rss_mib" "$TARGET_RSS_MIB")"
		RSS_BY_SIZE+=("$mib $rss_max")
	fi
	echo
}

rss_by_size() {
	wants A || return 0
	((${#RSS_BY_SIZE[@]} > 1)) || return 0
	local line mib kib
	echo "== ztp-operator peak RSS by image size"
	printf '%10s %12s\n' image_MiB peakRSS_MiB
	for line in "${RSS_BY_SIZE[@]}"; do
		read -r mib kib <<<"$line"
		printf '%10s %12s\n' "$mib" "$(calc 'k / 1024' k="$kib" | xargs printf '%.1f')"
	done
	echo
}

validate_env() {
	[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer"
	local s c
	for s in $SIZES; do [[ "$s" =~ ^[1-9][0-9]*$ ]] || die "bad size '$s' (MiB)"; done
	[[ -n "${CONTENDERS// /}" ]] || die "CONTENDERS is empty"
	for c in $CONTENDERS; do [[ "$c" =~ ^[ABCD]$ ]] || die "bad contender '$c' (A, B, C or D)"; done
}

main() {
	validate_env
	trap cleanup EXIT
	trap 'exit 130' INT TERM
	ensure_tools
	ensure_binary
	WORK="$(mktemp -d "${TMPDIR:-/tmp}/ztp-bench.XXXXXX")"
	machine_facts
	start_nginx
	local mib
	for mib in $SIZES; do
		bench_size "$mib"
	done
	rss_by_size
}

main "$@"
