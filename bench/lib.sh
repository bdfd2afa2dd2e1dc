# Shared by the benchmark scripts (sourced): logging, arithmetic, process control, and the /proc
# sampler that measures a server's peak memory and CPU time. Scripts set WORK (a scratch dir),
# SERVER_PID (what to sample) and SAMPLER_PID="" before using the sampler.
# shellcheck shell=bash

log() { printf '%s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}
has() { command -v "$1" >/dev/null 2>&1; }
now() { printf '%s' "$EPOCHREALTIME"; }

calc() {
	local expr="$1"
	shift
	local args=() kv
	for kv in "$@"; do args+=(-v "$kv"); done
	awk "${args[@]}" "BEGIN { printf \"%s\", $expr }"
}

median() {
	tr ' ' '\n' <<<"$*" | grep -v '^$' | sort -g |
		awk '{ v[NR] = $1 } END { if (NR == 0) { print "nan"; exit }
			if (NR % 2) printf "%.6g", v[(NR + 1) / 2]; else printf "%.6g", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
max_of() { tr ' ' '\n' <<<"$*" | grep -v '^$' | sort -g | tail -1; }

# verdict VALUE OP TARGET  (OP is <= or >=)
verdict() {
	if [[ "$(calc "($1 $2 $3) ? 1 : 0")" == 1 ]]; then echo PASS; else echo MISS; fi
}

stop_pid() { # stop_pid PID SIGNAL: signal, wait up to 10 s, then SIGKILL
	local pid="$1" sig="$2" _
	[[ -n "$pid" ]] || return 0
	kill -0 "$pid" 2>/dev/null || {
		wait "$pid" 2>/dev/null || true
		return 0
	}
	kill "-$sig" "$pid" 2>/dev/null || true
	for _ in $(seq 1 100); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# The sampler: peak VmRSS / Pss of PID and its children every 100 ms, CPU ticks at start and at
# SIGTERM. Writes "peak_rss_kib peak_pss_kib cpu_seconds samples" to OUT; touches OUT.ready once
# the first sample (and the CPU baseline) is taken.
write_sampler() {
	cat >"$WORK/sampler.py" <<'EOF'
import os, sys, time, signal
pid, out = int(sys.argv[1]), sys.argv[2]
tck = os.sysconf("SC_CLK_TCK")

def tree():
    pids = [pid]
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    pids.append(int(d))
            except OSError:
                pass
    return pids

def cpu(pids):
    ticks = 0
    for i, p in enumerate(pids):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields[0] is field 3 (state): utime=14, stime=15, cutime=16, cstime=17
        ticks += int(fields[11]) + int(fields[12])
        if i == 0:
            ticks += int(fields[13]) + int(fields[14])
    return ticks / tck

def kib(path, key):
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0

class Stop(Exception):
    pass

def stop(*_):
    raise Stop()

signal.signal(signal.SIGTERM, stop)
pids = tree()
start = cpu(pids)
peak_rss = peak_pss = samples = 0
first = True
try:
    while True:
        rss = sum(kib(f"/proc/{p}/status", "VmRSS:") for p in pids)
        pss = sum(kib(f"/proc/{p}/smaps_rollup", "Pss:") for p in pids)
        peak_rss, peak_pss, samples = max(peak_rss, rss), max(peak_pss, pss), samples + 1
        if first:
            open(out + ".ready", "w").close()
            first = False
        time.sleep(0.1)
except Stop:
    pass
with open(out, "w") as f:
    f.write(f"{peak_rss} {peak_pss} {cpu(pids) - start:.2f} {samples}\n")
EOF
}

sampler_start() { # sampler_start TAG
	local out="$WORK/sample.$1"
	rm -f "$out" "$out.ready"
	python3 "$WORK/sampler.py" "$SERVER_PID" "$out" &
	SAMPLER_PID=$!
	local _
	for _ in $(seq 1 100); do
		[[ -f "$out.ready" ]] && return 0
		sleep 0.02
	done
	die "sampler did not start"
}

# sampler_stop TAG: stops the sampler (in this shell: it is our child); its figures are then in
# $WORK/sample.TAG as "peak_rss_kib peak_pss_kib cpu_s samples"
sampler_stop() {
	local out="$WORK/sample.$1"
	kill -TERM "$SAMPLER_PID" 2>/dev/null || true
	wait "$SAMPLER_PID" 2>/dev/null || true
	SAMPLER_PID=""
	[[ -s "$out" ]] || die "sampler wrote nothing"
}

# write_spread FILE: a script that prints how a client's connections sit on a server's event loops
# (a server: its PID and its children; each loop: one epoll instance). `python3 FILE SERVER CLIENT`
# prints one group per server loop, largest first, counting its connections from each of the
# client's loops, most first: `32+0 32+0` when each of wrk's two threads talks to one worker
# (client and worker take turns on one CPU), `16+16 16+16` when every thread talks to both (each
# request waits for a thread on the other CPU), `32+26 6+0` in between. Under load latency
# depends on it, so serve.sh prints it beside p99.
write_spread() {
	cat >"$1" <<'EOF'
import os, re, sys

def parent(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return None

# every process's parent, read once for both sides (this runs while the load does)
parents = {pid: parent(pid) for pid in map(int, filter(str.isdigit, os.listdir("/proc")))}

def link(pid, fd):
    try:
        return os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError:
        return ""

tcp = {}  # socket inode -> (local port, remote port) of established connections
for table in ("/proc/net/tcp", "/proc/net/tcp6"):
    try:
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] == "01":
                    tcp[fields[9]] = (int(fields[1].rsplit(":", 1)[1], 16), int(fields[2].rsplit(":", 1)[1], 16))
    except OSError:
        pass

def loops(root, side):
    """Per epoll instance of root and its children: the ports of its connections (side 0: local
    ports, 1: remote). One instance may have several fds (a runtime's dup): keyed by what it watches."""
    found = {}
    for pid in [root] + [p for p, pp in parents.items() if pp == root]:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        links = {fd: link(pid, fd) for fd in fds}
        inode = {fd: m.group(1) for fd, l in links.items() if (m := re.fullmatch(r"socket:\[(\d+)\]", l))}
        for fd, l in links.items():
            if l != "anon_inode:[eventpoll]":
                continue
            try:
                with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                    watched = tuple(sorted(re.findall(r"tfd:.*", f.read())))
            except OSError:
                continue
            ports = {tcp[i][side] for w in watched if (i := inode.get(w.split()[1])) in tcp}
            if ports:
                found[(pid, watched)] = ports
    return list(found.values())

server = loops(int(sys.argv[1]), 1)
client = loops(int(sys.argv[2]), 0)
rows = sorted((sorted((len(s & c) for c in client), reverse=True) for s in server), key=sum, reverse=True)
print(" ".join("+".join(map(str, r)) for r in rows) or "-")
EOF
}

# write_cycle_lua FILE: the wrk script of serve.sh and instructions.sh. Each thread cycles through
# serials 1..N from its own offset; the path is printf(FMT, serial), e.g. /nvos/SN%05d/ztp.json
# or /small1k.bin?s=SN%05d. The N requests are formatted once per thread in init(), so request()
# costs the client one table lookup. Arguments after `--`: FMT N.
write_cycle_lua() {
	cat >"$1" <<'EOF'
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("offset", counter * 4999)
end
function init(args)
  local fmt, n = args[1], tonumber(args[2])
  reqs = {}
  for k = 1, n do reqs[k] = wrk.format("GET", string.format(fmt, k)) end
  count = n
  i = tonumber(offset or 0) % n
end
function request()
  i = i % count + 1
  return reqs[i]
end
EOF
}

# run_e2e_bench TEST LOG PREFIX [VAR=value ...]: runs one ignored e2e benchmark test (the debug
# harness) with the variables given, its whole output in LOG; prints its lines that start with
# PREFIX, and on failure the log's tail. Returns the test's status.
run_e2e_bench() {
	local test="$1" log="$2" prefix="$3" status
	shift 3
	set +e
	env "$@" cargo test --locked --test e2e -- --ignored --exact "$test" --nocapture >"$log" 2>&1
	status=$?
	set -e
	grep "^$prefix" "$log" || true
	if [ "$status" -ne 0 ]; then
		echo "the benchmark failed (exit $status); the whole log: $log" >&2
		tail -n 40 "$log" >&2
	fi
	return "$status"
}
