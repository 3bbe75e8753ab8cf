#!/bin/sh
# Benchmark: guest startup. `vserver G start` + `vserver G exec true` + `vserver G stop` of a
# small guest (a skeleton with a static busybox, init a shell sleep loop), against the tools a
# user would pick instead, on the same root, side by side in one run:
#   - `systemd-nspawn --register=no --keep-unit --private-network -D ROOT /bin/true` (if
#     installed; `apt-get install systemd-container`),
#   - `unshare --mount --pid --uts --ipc --net --cgroup --fork --mount-proc=ROOT/proc chroot ROOT
#     /bin/true`.
# Each is one start, one command and a full teardown; vserver does it in three processes. All
# three give the guest a network namespace of its own (vserver's default, `net = "none"`: only
# loopback, brought up); creating and tearing one down costs the kernel a few milliseconds.
#
#   bench/lifecycle.sh [ROUNDS]      (default 20; needs root and /bin/busybox)
#
# Measured (2 cores, Debian 12, release binary, 20-30 rounds, load 3.5-4, every tool with its own
# network namespace): vserver 9.0-12.6 ms, unshare+chroot 2.9-3.2 ms, systemd-nspawn 66-69 ms
# per round: vserver/nspawn = 0.13-0.18x, vserver/unshare = 3.1-4.0x. (A debug binary under
# load 8: vserver 181 ms, unshare 30 ms, nspawn 292 ms.) Before network namespaces and /sys (debug,
# load 10-14): vserver 47-75 ms, unshare 3.5-10 ms, nspawn 187 ms.
#
# Binary: $VSERVER (default target/release/vserver, else target/debug/vserver, also under
# $CARGO_TARGET_DIR).
set -eu
rounds=${1:-20}
here=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$here/target}
pick() { for p in "$target/release/$1" "$target/debug/$1"; do [ -x "$p" ] && { echo "$p"; return; }; done; echo "missing $1: cargo build -p vserver" >&2; exit 1; }
vserver=${VSERVER:-$(pick vserver)}
work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/vserver-bench.XXXXXX")
export VSERVER_CONFDIR=$work/etc VSERVER_ROOTDIR=$work/vservers VSERVER_PKGDIR=$work/vservers/.pkg
export VSERVER_RUNDIR=$work/run
trap '"$vserver" bench stop --timeout 1 >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

"$vserver" bench build -m skeleton -q
root=$VSERVER_ROOTDIR/bench
# A merged /usr and an os-release: systemd-nspawn refuses a root without them.
bin=$root/usr/bin
mkdir -p "$bin"
[ -e "$root/bin" ] || ln -s usr/bin "$root/bin"
cp /bin/busybox "$bin/busybox"
for applet in sh sleep true; do ln -sf busybox "$bin/$applet"; done
[ -e "$root/etc/os-release" ] || echo 'ID=bench' > "$root/etc/os-release"

now() { date +%s.%N; }
measure() { # name, command…
    name=$1; shift
    start=$(now)
    i=0
    while [ "$i" -lt "$rounds" ]; do "$@"; i=$((i + 1)); done
    end=$(now)
    echo "$name $(echo "($end - $start) * 1000 / $rounds" | bc -l)"
}

vserver_round() {
    "$vserver" bench start --init "/bin/sleep 1000" 2>/dev/null
    "$vserver" bench exec /bin/true
    "$vserver" bench stop --timeout 0 >/dev/null 2>&1
}
unshare_round() {
    unshare --mount --pid --uts --ipc --net --cgroup --fork --mount-proc="$root/proc" \
        chroot "$root" /bin/true
}
nspawn_round() {
    # It complains on stderr about /run/systemd/nspawn/propagate on a host without systemd.
    systemd-nspawn -q --register=no --keep-unit --private-network -D "$root" /bin/true 2>/dev/null
}

results=$work/results
: > "$results"
measure vserver vserver_round | tee -a "$results"
measure unshare-chroot unshare_round | tee -a "$results"
if command -v systemd-nspawn >/dev/null; then
    measure systemd-nspawn nspawn_round | tee -a "$results"
else
    echo "systemd-nspawn: not installed (apt-get install systemd-container)"
fi
awk '{ ms[$1] = $2 } END {
    printf "per round (ms): vserver %.1f", ms["vserver"]
    for (k in ms) if (k != "vserver") printf ", %s %.1f (vserver/%s = %.2fx)", k, ms[k], k, ms["vserver"] / ms[k]
    printf "\n"
}' "$results"
