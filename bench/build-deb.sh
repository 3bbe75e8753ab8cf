#!/bin/bash
# Debian minbase from one local mirror, same disk, side by side in one run:
#   vserver G build -m apt --variant minbase   (our bootstrap: host apt + dpkg, database outside)
#   mmdebstrap --variant=minbase --mode=root   (copy:// mirror)
#   debootstrap --variant=minbase --no-check-gpg (file:// mirror)
# Prints wall times, the ratio to mmdebstrap and the package count of each result.
#
# Needs root, mmdebstrap and debootstrap (apt-get install mmdebstrap debootstrap), and the .debs
# the Debian-guest test caches in /var/tmp/vserver-test-debs (cargo test -p vserver --test
# deb_guest). BENCH_DIR must not lie below /tmp or /var/tmp: each sandboxed operation gets a
# private /tmp. BENCH_FS=loop runs all three on a fresh ext4 (mkfs.ext4 defaults, with a
# journal) in an image file beside BENCH_DIR: same disk, and no leftovers of earlier runs.
# Usage: bench/build-deb.sh [VSERVER-BINARY]
#
# Why BENCH_FS=loop: these machines' root file system is ext4 without a journal, where the inode
# allocator skips recently freed inodes one by one; each tool then pays for the files the
# previous run (and the previous tool) deleted, and the numbers drift upwards run after run.
#
# Measured (2 cores, release binary, one run per line):
#   BENCH_FS=loop:  vserver 8.0 / 9.0 s, mmdebstrap 14.9 / 17.0 s, debootstrap 17.0 / 16.6 s;
#                   96 / 96 / 87 packages; ratio to mmdebstrap 0.53 / 0.53.
#   root fs:        first run of the session 8.5 s vs 15.2 s (0.56); back to back 12.0-14.8 s vs
#                   18.5-22.6 s (0.65-0.66).
# With the write boundary, dpkg's entry point and its gate (issue 13), BENCH_FS=loop, release,
# alternating with the binary from before: vserver 7.6 / 7.4 s, before 7.6 / 6.6 s; mmdebstrap
# 12.1-15.8 s (0.56-0.58x now).
# Before each package was decompressed only once and only the maintainer scripts' toolbox was
# extracted beforehand, the same machine measured 11.8-13.8 s vs 12.6-13.8 s (0.93-1.00).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
vserver=${1:-${CARGO_TARGET_DIR:-$here/target}/release/vserver}
cache=/var/tmp/vserver-test-debs
dir=${BENCH_DIR:-$here/target/bench-deb}
[ "$(id -u)" = 0 ] || { echo "build-deb.sh: needs root" >&2; exit 2; }
[ -x "$vserver" ] || { echo "build-deb.sh: no $vserver (cargo build --release -p vserver)" >&2; exit 2; }
for tool in mmdebstrap debootstrap; do
  command -v $tool >/dev/null || { echo "build-deb.sh: needs $tool (apt-get install $tool)" >&2; exit 2; }
done
ls $cache/*.deb >/dev/null 2>&1 || { echo "build-deb.sh: no packages in $cache; run the deb_guest test first" >&2; exit 2; }

rm -rf "$dir"; mkdir -p "$dir"
if [ "${BENCH_FS:-}" = loop ]; then
  image=$dir.img
  rm -f "$image"; truncate -s 8G "$image"; mkfs.ext4 -q -F "$image"
  mount -o loop "$image" "$dir"
  trap 'umount "$dir"; rm -f "$image"' EXIT
fi
. "$here/bench/deb-mirror.sh"
make_deb_mirror "$dir" "$vserver"

now() { date +%s.%N; }
sync
t0=$(now)
VSERVER_CONFDIR=$dir/etc VSERVER_ROOTDIR=$dir/vservers VSERVER_PKGDIR=$dir/vservers/.pkg \
  "$vserver" d build -m apt -q -- -d localdeb --variant minbase
sync
t1=$(now)
mmdebstrap --quiet --variant=minbase --mode=root bookworm "$dir/mmdebstrap" \
  "deb [trusted=yes] copy://$dir/mirror bookworm main"
sync
t2=$(now)
debootstrap --variant=minbase --no-check-gpg bookworm "$dir/debootstrap" "file://$dir/mirror" >/dev/null
sync
t3=$(now)

count() { grep -c '^Status: install ok installed' "$1"; }
v=$(echo "$t1 - $t0" | bc); m=$(echo "$t2 - $t1" | bc); d=$(echo "$t3 - $t2" | bc)
printf '%-28s %8s %10s\n' tool 'wall (s)' packages
printf '%-28s %8.1f %10d\n' "vserver build -m apt" "$v" "$(count "$dir/vservers/.pkg/d/dpkg/state/status")"
printf '%-28s %8.1f %10d\n' "mmdebstrap --mode=root" "$m" "$(count "$dir/mmdebstrap/var/lib/dpkg/status")"
printf '%-28s %8.1f %10d\n' "debootstrap" "$d" "$(count "$dir/debootstrap/var/lib/dpkg/status")"
printf 'ratio vserver/mmdebstrap: %.2f   vserver/debootstrap: %.2f\n' "$(echo "$v / $m" | bc -l)" "$(echo "$v / $d" | bc -l)"
