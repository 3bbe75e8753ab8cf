#!/bin/bash
# A systemd guest (bookworm: systemd-sysv, nginx-light, openssh-server), the same root booted
# side by side in one run:
#   vserver G start / stop                      (start returns at systemd's READY=1)
#   systemd-nspawn --boot -D ROOT               (--register=no --keep-unit: what runs here
#                                                without systemd as PID 1; --private-network
#                                                as our default net = "none")
# Prints, for each: time from launch until `systemctl is-system-running --wait` answers
# (running or degraded), time to stop (the halt signal until the init is gone), and the memory
# of the idle guest 5 s after it is up (its v1 memory cgroup's usage: the guest's own for
# vserver, one made for the run for nspawn); then the ratios vserver / nspawn.
#
# Needs root, systemd-nspawn (apt-get install systemd-container) and the .debs the service test
# caches (cargo test -p vserver --test service_guests): /var/tmp/vserver-test-debs and
# /var/tmp/vserver-test-debs-services. BENCH_DIR must not lie below /tmp or /var/tmp.
# Usage: bench/boot.sh [VSERVER-BINARY] [RUNS]
#
# Measured (2 cores; release binary; 5 runs, medians; both guests `running`, journald included):
#   vserver  up 0.21 s   stop 0.13 s   idle memory 7.9 MiB
#   nspawn   up 0.30 s   stop 0.15 s   idle memory 9.6 MiB
#   ratio vserver/nspawn: up 0.69, stop 0.91, memory 0.82
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$here/target}
default=$target/release/vserver
[ -x "$default" ] || default=$target/debug/vserver
vserver=${1:-$default}
runs=${2:-3}
dir=${BENCH_DIR:-$here/target/bench-boot}
[ "$(id -u)" = 0 ] || { echo "boot.sh: needs root" >&2; exit 2; }
[ -x "$vserver" ] || { echo "boot.sh: no $vserver (cargo build -p vserver)" >&2; exit 2; }
command -v systemd-nspawn >/dev/null || { echo "boot.sh: needs systemd-nspawn (apt-get install systemd-container)" >&2; exit 2; }
for cache in /var/tmp/vserver-test-debs /var/tmp/vserver-test-debs-services; do
  ls $cache/*.deb >/dev/null 2>&1 || { echo "boot.sh: no packages in $cache; run the service_guests test first" >&2; exit 2; }
done
memory_v1=$(awk '$3 == "cgroup" && $4 ~ /(^|,)memory(,|$)/ {print $2; exit}' /proc/mounts)

rm -rf "$dir"; mkdir -p "$dir/mirror/pool"
export VSERVER_CONFDIR=$dir/etc VSERVER_ROOTDIR=$dir/vservers VSERVER_PKGDIR=$dir/vservers/.pkg VSERVER_RUNDIR=$dir/run
ln /var/tmp/vserver-test-debs/*.deb /var/tmp/vserver-test-debs-services/*.deb "$dir/mirror/pool/" 2>/dev/null \
  || cp -n /var/tmp/vserver-test-debs/*.deb /var/tmp/vserver-test-debs-services/*.deb "$dir/mirror/pool/"
"$vserver" vrepo index -q --suite bookworm --component main "$dir/mirror" >/dev/null
"$vserver" vdistro add benchdeb --family deb --releasever 12 --trusted \
  --apt-source "file://$dir/mirror bookworm main" --pkgs '?vserver-no-such-package' >/dev/null
"$vserver" boot build -q -m apt -- -d benchdeb -- systemd-sysv nginx-light openssh-server 2>/dev/null
root=$dir/vservers/boot

now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

: > "$dir/vserver.txt"; : > "$dir/nspawn.txt"
for run in $(seq "$runs"); do
  # vserver
  t0=$(now)
  "$vserver" boot start >/dev/null
  state=$("$vserver" boot exec systemctl is-system-running --wait || true)
  up=$(since "$t0")
  sleep 5
  mem=$("$vserver" boot status --json | sed -n 's/.*"memory":\([0-9]*\).*/\1/p')
  t0=$(now)
  "$vserver" boot stop >/dev/null
  down=$(since "$t0")
  echo "$up $down ${mem:-0} $state" >> "$dir/vserver.txt"

  # systemd-nspawn, in a memory cgroup of its own
  cg=$memory_v1/vserver-bench-nspawn
  mkdir -p "$cg"
  t0=$(now)
  ( echo $BASHPID > "$cg/cgroup.procs"
    exec systemd-nspawn --register=no --keep-unit --boot --private-network --console=passive \
      -q -D "$root" </dev/null >"$dir/nspawn.log" 2>&1 ) &
  nspawn=$!
  # The container's pid 1: the child of nspawn (a subreaper) whose pid in its own namespace is 1.
  leader=
  for _ in $(seq 1000); do
    for pid in $(pgrep -P $nspawn || true); do
      grep -q '^NSpid:.*[[:space:]]1$' /proc/$pid/status 2>/dev/null && leader=$pid
    done
    # systemctl answers "offline" until systemd's private socket exists.
    [ -n "$leader" ] && [ "$(readlink /proc/$leader/exe 2>/dev/null)" = /usr/lib/systemd/systemd ] \
      && [ -S /proc/$leader/root/run/systemd/private ] && break
    leader=
    sleep 0.01
  done
  state=$(nsenter -t "$leader" -m -p -u -i -C systemctl is-system-running --wait 2>>"$dir/nsenter.log" || true)
  up=$(since "$t0")
  sleep 5
  mem=$(cat "$cg/memory.usage_in_bytes" 2>/dev/null || echo 0)
  t0=$(now)
  kill -TERM $nspawn
  wait $nspawn || true
  down=$(since "$t0")
  rmdir "$cg" 2>/dev/null || true
  echo "$up $down $mem $state" >> "$dir/nspawn.txt"
done

for tool in vserver nspawn; do
  f=$dir/$tool.txt
  printf '%-8s up %6.2f s   stop %6.2f s   idle memory %7.1f MiB   (%s; runs: %s)\n' "$tool" \
    "$(cut -d' ' -f1 "$f" | median)" "$(cut -d' ' -f2 "$f" | median)" \
    "$(echo "$(cut -d' ' -f3 "$f" | median) / 1048576" | bc -l)" \
    "$(cut -d' ' -f4 "$f" | sort | uniq -c | xargs)" "$runs"
done
ratio() { echo "scale=2; $(cut -d' ' -f"$1" "$dir/vserver.txt" | median) / $(cut -d' ' -f"$1" "$dir/nspawn.txt" | median)" | bc -l; }
echo "ratio vserver/nspawn: up $(ratio 1)  stop $(ratio 2)  memory $(ratio 3)"
