#!/bin/bash
# Clone of a Debian minbase guest against `cp -a` of its root, side by side in one run, on a
# fresh ext4 and (with mkfs.xfs) a fresh xfs with reflinks, each in a loop image beside
# BENCH_DIR: `vserver c build -m clone -- --source d` copies the root *and* the package state and
# gives the clone its own identity; `cp -a` copies the root only. Each is run three times,
# alternating, and the best time of each is printed with the ratio and the disk each used.
#
#   bench/clone.sh [VSERVER-BINARY]
#
# Needs root, and the .debs the Debian-guest test caches in /var/tmp/vserver-test-debs (cargo
# test -p vserver --test deb_guest); xfs needs xfsprogs. BENCH_DIR must not lie below /tmp.
#
# Measured (2 cores, debug binary, minbase of 97 packages, best of 3; cp -a of coreutils 9
# reflinks on xfs too):
#   ext4: clone 0.64 s, 195 MB (root + 22 MB package state); cp -a 0.65 s, 173 MB: 0.99x
#   xfs:  clone 0.41 s, 5.0 MB (extents shared);              cp -a 0.40 s, 4.7 MB: 1.05x
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
# Default: the newer of the release and debug builds.
target=${CARGO_TARGET_DIR:-$here/target}
vserver=${1:-$(ls -t "$target/release/vserver" "$target/debug/vserver" 2>/dev/null | head -1)}
dir=${BENCH_DIR:-$here/target/bench-clone}
cache=/var/tmp/vserver-test-debs
[ "$(id -u)" = 0 ] || { echo "clone.sh: needs root" >&2; exit 2; }
[ -n "$vserver" ] && [ -x "$vserver" ] || { echo "clone.sh: no vserver binary (cargo build -p vserver)" >&2; exit 2; }
ls $cache/*.deb >/dev/null 2>&1 || { echo "clone.sh: no packages in $cache; run the deb_guest test first" >&2; exit 2; }
. "$here/bench/deb-mirror.sh"

filesystems=ext4
command -v mkfs.xfs >/dev/null && filesystems="ext4 xfs"
now() { date +%s.%N; }
used() { df --output=used -B1 "$1" | tail -1; }
mounted=()
trap 'for m in "${mounted[@]}"; do umount "$m"; rm -f "$m.img"; done' EXIT
rm -rf "$dir"; mkdir -p "$dir"
printf '%-5s %-34s %9s %12s\n' fs what 'best (s)' 'disk (MB)'
for fs in $filesystems; do
  top=$dir/$fs
  mkdir -p "$top"; truncate -s 4G "$top.img"
  if [ $fs = xfs ]; then mkfs.xfs -q -m reflink=1 "$top.img"; else mkfs.ext4 -q -F "$top.img"; fi
  mount -o loop "$top.img" "$top"; mounted+=("$top")
  make_deb_mirror "$top" "$vserver"
  export VSERVER_CONFDIR=$top/etc VSERVER_ROOTDIR=$top/vservers VSERVER_PKGDIR=$top/vservers/.pkg
  "$vserver" d build -m apt -q -- -d localdeb --variant minbase
  best_clone=999; best_cp=999
  for run in 1 2 3; do
    sync; before=$(used "$top"); t0=$(now)
    "$vserver" c build -m clone -q -- --source d
    sync; t1=$(now); clone_disk=$(( $(used "$top") - before ))
    before=$(used "$top"); t2=$(now)
    cp -a "$top/vservers/d" "$top/cp-copy"
    sync; t3=$(now); cp_disk=$(( $(used "$top") - before ))
    best_clone=$(echo "if ($t1 - $t0 < $best_clone) $t1 - $t0 else $best_clone" | bc)
    best_cp=$(echo "if ($t3 - $t2 < $best_cp) $t3 - $t2 else $best_cp" | bc)
    "$vserver" c delete --yes >/dev/null 2>&1; rm -rf "$top/cp-copy"
  done
  printf '%-5s %-34s %9.2f %12.1f\n' $fs "vserver build -m clone" "$best_clone" "$(echo "$clone_disk / 1048576" | bc -l)"
  printf '%-5s %-34s %9.2f %12.1f\n' $fs "cp -a (root only)" "$best_cp" "$(echo "$cp_disk / 1048576" | bc -l)"
  printf '%-5s %-34s %9.2f\n' $fs "ratio clone / cp -a" "$(echo "$best_clone / $best_cp" | bc -l)"
done
