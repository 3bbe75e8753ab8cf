#!/bin/bash
# Shared storage across guests on xfs: `vserver --all unify` against `duperemove -dr` (the
# generic extent deduplicator) on identical copies of the same guests, side by side in one run,
# in a fresh xfs image (reflink on) beside BENCH_DIR. GUESTS guests are made from one built
# guest by plain copies (no shared extents: `cp -a --reflink=never`), each with its own name;
# then one copy of all of them is handed to duperemove and the other to vserver, first with
# `--min-size 128K` (the files duperemove's 128 KiB blocks see), then, on fresh copies, the
# whole run. Prints for each the time and the disk the guests use afterwards (`df`), as a
# multiple of one guest's.
#
#   bench/unify.sh [deb|rpm] [GUESTS] [VSERVER-BINARY]    (default: deb 20)
#
# deb: a Debian minbase guest from the .debs the Debian-guest test caches in
# /var/tmp/vserver-test-debs; rpm: a guest of 300 generated packages. Needs root, xfsprogs and
# duperemove (apt-get install xfsprogs duperemove). BENCH_DIR must not lie below /tmp.
#
# Measured (2 cores, release, quiet machine, cold cache for each tool):
#   deb 10 guests (184.6 MB each): duperemove 4.18 s, saved 894 MB, 4.88x one guest left;
#                                  unify 8.03 s, saved 1504 MB, 1.57x one guest left (1.92x time)
#   rpm 20 guests (32.5 MB each):  duperemove 2.35 s, saved 261 MB, 12.90x one guest left;
#                                  unify 4.03 s, saved 303 MB, 11.63x one guest left (1.71x time)
# (the rpm fixture guests are mostly database, which unify leaves alone; duperemove also merged
# the identical databases of these copies)
# With the package state unified too (2 cores shared with four compiling builds, release):
#   deb 20 guests (185.1 MB each): duperemove 32.37 s, saved 1895 MB, 9.71x one guest left;
#                                  unify 37.46 s, saved 3464 MB, 1.24x one guest left (1.16x time)
# Today (2 cores, release, quiet machine), package state included:
#   deb 10 guests (185.5 MB each): duperemove 5.23 s, saved 902 MB, 4.86x one guest left;
#                                  unify 10.44 s, saved 1647 MB, 0.84x one guest left (1.99x time)
#   of unify's 10.25 s, 0.90 s is the scan (databases, stat of every file); the rest is the
#   kernel's compare-and-share, one FIDEDUPERANGE per file (~150 us each on this loop image),
#   for the same cost per byte saved as duperemove's; 16 threads instead of 2: 11.58 s.
# With read-ahead before each compare (the kernel's compare reads page by page, waiting for each)
# and the groups that save the most first (2 cores, release):
#   deb 10 guests: duperemove 6.20 s, saved 902 MB, 4.86x one guest left;
#                  unify --min-size 128K 3.35 s, saved 893 MB, 4.91x left (0.54x time);
#                  unify 6.03 s, saved 1646 MB, 0.85x left (0.97x time)
#   deb 20 guests: duperemove 11.48 s, saved 1903 MB, 9.69x left;
#                  unify --min-size 128K 7.09 s, saved 1883 MB, 9.80x left (0.62x time);
#                  unify 18.08 s, saved 3470 MB, 1.24x left (1.58x time)
#   rpm 20 guests (33.4 MB each): duperemove 2.56 s, saved 278 MB, 12.58x left;
#                  unify --min-size 128K 2.07 s, saved 158 MB (0.81x time);
#                  unify 3.57 s, saved 458 MB, 7.18x left (1.39x time); of each guest 12 MB are
#                  config files, the rpm database and dnf's history, never shared by unify
#   (a second run of 10: duperemove 5.70 s; unify 6.22 s, 1.09x). What is left of unify is kernel time
#   per file: xfs's remapping transactions (about a third of it), the compare, the opens.
set -euo pipefail
kind=${1:-deb}
guests=${2:-20}
here=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$here/target}
vserver=${3:-$(ls -t "$target/release/vserver" "$target/debug/vserver" 2>/dev/null | head -1)}
fixtures=$(ls -t "$target/release/vserver-fixtures" "$target/debug/vserver-fixtures" 2>/dev/null | head -1)
dir=${BENCH_DIR:-$here/target/bench-unify}
cache=/var/tmp/vserver-test-debs
[ "$(id -u)" = 0 ] || { echo "unify.sh: needs root" >&2; exit 2; }
for tool in mkfs.xfs duperemove; do
  command -v $tool >/dev/null || { echo "unify.sh: needs $tool" >&2; exit 2; }
done
. "$here/bench/deb-mirror.sh"
rm -rf "$dir"; mkdir -p "$dir"
truncate -s 24G "$dir.img"; mkfs.xfs -q -f -m reflink=1 "$dir.img"
mount -o loop "$dir.img" "$dir"
trap 'umount "$dir"; rm -f "$dir.img"' EXIT
now() { date +%s.%N; }
used() { sync; df --output=used -B1 "$dir" | tail -1; }

setup() {  # $1: where (vserver roots below it)
  export VSERVER_CONFDIR=$1/etc VSERVER_ROOTDIR=$1/roots VSERVER_PKGDIR=$1/roots/.pkg
}
mkdir -p "$dir/vs" "$dir/dup"
setup "$dir/vs"
if [ "$kind" = deb ]; then
  make_deb_mirror "$dir/vs" "$vserver"
  "$vserver" g1 build -m apt -q -- -d localdeb --variant minbase
else
  "$fixtures" rpm "$dir/repo" --count 300 --prefix un >/dev/null
  "$vserver" vrepo index -q "$dir/repo"
  "$vserver" vdistro add bench --releasever 1 --repo "bench=file://$dir/repo" >/dev/null 2>&1
  "$vserver" g1 build -m yum -q -- -d bench -- "un-*"
fi
base=$(used)
one_guest=$(( $(du -sB1 "$dir/vs/roots/g1" | cut -f1) + $(du -sB1 "$dir/vs/roots/.pkg/g1" | cut -f1) ))
copies() {  # g2..GUESTS as plain copies of g1 (again: unshared, no index)
  rm -rf "$dir/vs/roots/.pkg/.unify"
  local i=2
  while [ $i -le "$guests" ]; do
    rm -rf "$dir/vs/roots/g$i" "$dir/vs/roots/.pkg/g$i"
    cp -a --reflink=never "$dir/vs/roots/g1" "$dir/vs/roots/g$i"
    cp -a --reflink=never "$dir/vs/roots/.pkg/g1" "$dir/vs/roots/.pkg/g$i"
    mkdir -p "$dir/vs/etc/g$i"
    sed -e "s/^name = \"g1\"/name = \"g$i\"/" -e "s|/roots/g1\"|/roots/g$i\"|" -e '/^id = /d' \
      "$dir/vs/etc/g1/config.toml" > "$dir/vs/etc/g$i/config.toml"
    i=$((i + 1))
  done
}
copies
cp -a --reflink=never "$dir/vs/roots" "$dir/dup/roots"
before=$(used)
all_vs=$(( ($(used) - base) / 2 ))
cold() { sync; echo 3 > /proc/sys/vm/drop_caches; }
cold
t0=$(now)
duperemove -dhr -q --hashfile="$dir/dup.hash" "$dir/dup/roots" >/dev/null 2>&1 || true
t1=$(now)
after_dup=$(used)
cold
t2=$(now)
"$vserver" --all unify --min-size 128K --json > "$dir/unify-large.json"
t3=$(now)
saved_large=$(( after_dup - $(used) ))
copies
before_vs=$(used)
cold
t4=$(now)
"$vserver" --all unify --json > "$dir/unify.json"
t5=$(now)
saved_vs=$(( before_vs - $(used) ))
python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(\"unify: scan %.2f s of %.2f s\" % (r[\"scan_seconds\"], r[\"seconds\"]))" "$dir/unify.json"
verify=$("$vserver" --all verify >/dev/null 2>&1 && echo clean || echo CHANGED)
saved_dup=$(( before - after_dup ))
mb() { echo "scale=1; $1 / 1048576" | bc; }
line() {  # name seconds saved
  printf '%-34s %8.2f s  saved %8s MB  left %8s MB (%.2fx one guest)\n' "$1" "$2" "$(mb "$3")" \
    "$(mb $(( all_vs - $3 )))" "$(echo "($all_vs - $3) / $one_guest" | bc -l)"
}
printf '%s guests: %d, one guest %s MB, all %s MB before\n' "$kind" "$guests" "$(mb $one_guest)" "$(mb $all_vs)"
line "duperemove -dr" "$(echo "$t1 - $t0" | bc)" "$saved_dup"
line "vserver --all unify --min-size 128K" "$(echo "$t3 - $t2" | bc)" "$saved_large"
line "vserver --all unify" "$(echo "$t5 - $t4" | bc)" "$saved_vs"
printf 'time ratio to duperemove: unify --min-size 128K %.2f, unify %.2f; every guest verifies: %s\n' \
  "$(echo "($t3 - $t2) / ($t1 - $t0)" | bc -l)" "$(echo "($t5 - $t4) / ($t1 - $t0)" | bc -l)" "$verify"
