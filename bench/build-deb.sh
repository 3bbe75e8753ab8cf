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
# private /tmp. Usage: bench/build-deb.sh [VSERVER-BINARY]
#
# Measured (2 cores, disk, debug vserver binary, a release build compiling at the same time):
#   vserver 78.7 s / 96 packages, mmdebstrap 129.5 s / 96, debootstrap 150.5 s / 87;
#   ratio vserver/mmdebstrap 0.61, vserver/debootstrap 0.52.
# On a quiet machine with a release binary the three are close: vserver 11.8-13.8 s,
# mmdebstrap 12.6-13.8 s, debootstrap 15.4-16.1 s (ratio 0.93-1.00). Most of it is
# `dpkg --install` of the Essential set (8.2 s in our sandbox, 10.0 s for the same command
# outside any sandbox), which both do the same way.
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

rm -rf "$dir"; mkdir -p "$dir/mirror/pool"
cp -l $cache/*.deb "$dir/mirror/pool/" 2>/dev/null || cp $cache/*.deb "$dir/mirror/pool/"
names=$(for f in "$dir"/mirror/pool/*.deb; do dpkg-deb -f "$f" Package; done | sort -u)
# The archive's priorities, from the host's apt lists (a .deb's own Priority can differ).
apt-cache show --no-all-versions $names | awk '
  /^Package: /{p=$2} /^Priority: /{pr=$2} /^Section: /{s=$2}
  /^$/{ if (p!="" && !(p in seen)) { seen[p]=1; print p, pr, s }; p=""; pr="optional"; s="misc" }' \
  > "$dir/override"
"$vserver" vrepo index --suite bookworm --component main --override "$dir/override" "$dir/mirror" >/dev/null
mkdir -p "$dir/etc/.distributions/localdeb/apt"
printf 'family = "deb"\nreleasever = "12"\n' > "$dir/etc/.distributions/localdeb/distribution.toml"
echo "deb [trusted=yes] file://$dir/mirror bookworm main" > "$dir/etc/.distributions/localdeb/apt/sources.list"

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
