#!/usr/bin/env bash
# What per-device values cost the snapshot build (issue 16, item 7): the same DEVICES switches
# described two ways, each rendered by `ztp-operator standalone --once` (the controller's
# pipeline: resolve, trial-render, publish):
#   A  one profile per model + one Switch per device carrying its hostname and loopback (each
#      Switch's values trial-rendered in the model's profile);
#   B  one profile per device (the layout A replaces), the same template and values.
# Prints wall time, CPU (user + sys) and peak RSS of each, the CPU per device, and A's CPU beside
# B's; checks that both published a snapshot and that A's holds every Switch.
#
# Usage: bench/snapshot.sh                 DEVICES=2000 ROUNDS=3 (release build, made here)
#        BIN=target/debug/ztp-operator DEVICES=500 bench/snapshot.sh
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
# shellcheck source=bench/lib.sh
source bench/lib.sh
DEVICES="${DEVICES:-2000}"
ROUNDS="${ROUNDS:-3}"
BIN="${BIN:-}"
if [[ -z "$BIN" ]]; then
	log "==> release build of ztp-operator"
	cargo build --release --locked --bin ztp-operator >&2
	BIN="$ROOT/target/release/ztp-operator"
fi
has /usr/bin/time || die "needs /usr/bin/time (apt-get install time)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/ztp-snapshot-bench.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

TEMPLATE='nv set system hostname {{ hostname }}\nnv set interface lo ip address {{ variables.loopback }}\n'
loopback() { printf '10.%d.%d.1/32' $(($1 / 256)) $(($1 % 256)); }

# A: the model profile and one Switch per device.
mkdir -p "$WORK/a" "$WORK/b"
{
	printf 'apiVersion: ztp.netops.dev/v1alpha1\nkind: SwitchProfile\nmetadata: {name: n5110}\n'
	printf 'spec:\n  match: {models: ["N5110_LD"]}\n  files:\n    startup: {inline: "%s", template: true}\n' "$TEMPLATE"
	for ((i = 0; i < DEVICES; i++)); do
		printf -- '---\napiVersion: ztp.netops.dev/v1alpha1\nkind: Switch\nmetadata: {name: leaf-%d}\n' "$i"
		printf 'spec: {serialNumber: SN%06d, model: N5110_LD, hostname: leaf-%d, variables: {loopback: "%s"}}\n' "$i" "$i" "$(loopback "$i")"
	done
} >"$WORK/a/fleet.yaml"
# B: one profile per device.
{
	for ((i = 0; i < DEVICES; i++)); do
		printf -- '---\napiVersion: ztp.netops.dev/v1alpha1\nkind: SwitchProfile\nmetadata: {name: leaf-%d}\n' "$i"
		printf 'spec:\n  match: {serialNumbers: [SN%06d]}\n  hostname: leaf-%d\n  variables: {loopback: "%s"}\n' "$i" "$i" "$(loopback "$i")"
		printf '  files:\n    startup: {inline: "%s", template: true}\n' "$TEMPLATE"
	done
} >"$WORK/b/fleet.yaml"

# run LAYOUT: one `standalone --once` into a fresh data dir; prints "wall cpu rss_kib".
run() {
	local layout="$1" data="$WORK/data-$1"
	rm -rf "$data"
	/usr/bin/time -f '%e %U %S %M' -o "$WORK/time" "$BIN" standalone --once --manifests "$WORK/$layout" --data "$data" \
		>"$WORK/out-$layout" 2>&1 || die "$layout: standalone --once failed: $(tail -5 "$WORK/out-$layout")"
	grep -q '^snapshot .* published' "$WORK/out-$layout" || die "$layout: no snapshot published"
	if grep -q '^switch default/' "$WORK/out-$layout"; then die "$layout: a Switch does not render: $(grep -m1 '^switch ' "$WORK/out-$layout")"; fi
	read -r wall user sys rss <"$WORK/time"
	printf '%s %s %s\n' "$wall" "$(calc 'u + s' u="$user" s="$sys")" "$rss"
}

log "==> $DEVICES devices, $ROUNDS rounds, A B alternating ($BIN)"
declare -A WALL CPU RSS
for ((r = 1; r <= ROUNDS; r++)); do
	for layout in a b; do
		read -r wall cpu rss < <(run "$layout")
		WALL[$layout]+="$wall "
		CPU[$layout]+="$cpu "
		RSS[$layout]+="$rss "
		log "round $r $layout: ${wall} s wall, ${cpu} s CPU, ${rss} KiB"
	done
done
snapshot="$(find "$WORK/data-a/ztp-snapshots" -name snapshot.json | head -1)"
switches="$(grep -o '"serialNumber"' "$snapshot" | wc -l)"
[[ "$switches" == "$DEVICES" ]] || die "A's snapshot holds $switches Switches, not $DEVICES"

printf '\n%-44s %10s %10s %12s %14s\n' "layout ($DEVICES devices, median of $ROUNDS)" "wall s" "CPU s" "peak RSS MiB" "CPU ms/device"
for layout in a b; do
	name="A: model profile + a Switch per device"
	[[ "$layout" == b ]] && name="B: a profile per device"
	wall="$(median "${WALL[$layout]}")"
	cpu="$(median "${CPU[$layout]}")"
	rss="$(calc 'r / 1024' r="$(max_of "${RSS[$layout]}")")"
	printf '%-44s %10.2f %10.2f %12.0f %14.3f\n' "$name" "$wall" "$cpu" "$rss" "$(calc 'c * 1000 / n' c="$cpu" n="$DEVICES")"
done
ratio="$(calc 'a / b' a="$(median "${CPU[a]}")" b="$(median "${CPU[b]}")")"
printf '\nA / B CPU: %.2f (target <= 1: per-device values cost no more than a profile per device) %s\n' \
	"$ratio" "$(verdict "$ratio" '<=' 1)"
