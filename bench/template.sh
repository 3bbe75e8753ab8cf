#!/bin/bash
# Export and import of a Debian minbase guest against GNU tar on the same tree, side by side in
# one run: `vserver d export d.tar.zst` (root + package database, read by descriptor) against
# `tar --zstd -cf` of the root and the database directory; `vserver t build -m template`
# (hostile-archive checks, the database rebuilt and verified, own identity) against `tar --zstd
# -xf` of that tar archive. Best of three each, with the ratios.
#
#   bench/template.sh [VSERVER-BINARY]
#
# Needs root, and the .debs the Debian-guest test caches in /var/tmp/vserver-test-debs (cargo
# test -p vserver --test deb_guest). BENCH_DIR must not lie below /tmp.
#
# Measured (2 cores shared with four compiling builds, release binary, minbase of 97 packages):
#   export 1.13 s, 48.4 MB; tar --zstd -cf 0.93 s, 49.6 MB: 1.22x
#   import (checked, database rebuilt and verified) 1.52 s; tar --zstd -xf + sync 0.86 s: 1.76x
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$here/target}
vserver=${1:-$(ls -t "$target/release/vserver" "$target/debug/vserver" 2>/dev/null | head -1)}
dir=${BENCH_DIR:-$here/target/bench-template}
cache=/var/tmp/vserver-test-debs
[ "$(id -u)" = 0 ] || { echo "template.sh: needs root" >&2; exit 2; }
[ -n "$vserver" ] && [ -x "$vserver" ] || { echo "template.sh: no vserver binary (cargo build -p vserver)" >&2; exit 2; }
ls $cache/*.deb >/dev/null 2>&1 || { echo "template.sh: no packages in $cache; run the deb_guest test first" >&2; exit 2; }
. "$here/bench/deb-mirror.sh"

now() { date +%s.%N; }
best() { echo "if ($1 < $2) $1 else $2" | bc; }
rm -rf "$dir"; mkdir -p "$dir"
make_deb_mirror "$dir" "$vserver"
export VSERVER_CONFDIR=$dir/etc VSERVER_ROOTDIR=$dir/vservers VSERVER_PKGDIR=$dir/vservers/.pkg
"$vserver" d build -m apt -q -- -d localdeb --variant minbase
best_export=999; best_tar_c=999; best_import=999; best_tar_x=999
for run in 1 2 3; do
  rm -f "$dir/d.tar.zst" "$dir/tar.tar.zst"
  t0=$(now); "$vserver" d export -q "$dir/d.tar.zst"; t1=$(now)
  tar --zstd -cf "$dir/tar.tar.zst" -C "$dir/vservers" d .pkg/d/dpkg/state; t2=$(now)
  t3=$(now); "$vserver" t build -m template -q -- --source "$dir/d.tar.zst"; t4=$(now)
  mkdir -p "$dir/untar"; t5=$(now); tar --zstd -xf "$dir/tar.tar.zst" -C "$dir/untar"; sync; t6=$(now)
  best_export=$(best "$(echo "$t1 - $t0" | bc)" "$best_export")
  best_tar_c=$(best "$(echo "$t2 - $t1" | bc)" "$best_tar_c")
  best_import=$(best "$(echo "$t4 - $t3" | bc)" "$best_import")
  best_tar_x=$(best "$(echo "$t6 - $t5" | bc)" "$best_tar_x")
  "$vserver" t delete --yes >/dev/null 2>&1; rm -rf "$dir/untar"
done
printf '%-44s %9s %10s\n' what 'best (s)' 'size (MB)'
printf '%-44s %9.2f %10.1f\n' "vserver d export d.tar.zst" "$best_export" "$(echo "$(stat -c %s "$dir/d.tar.zst") / 1048576" | bc -l)"
printf '%-44s %9.2f %10.1f\n' "tar --zstd -cf (root + dpkg/state)" "$best_tar_c" "$(echo "$(stat -c %s "$dir/tar.tar.zst") / 1048576" | bc -l)"
printf '%-44s %9.2f\n' "ratio export / tar -c" "$(echo "$best_export / $best_tar_c" | bc -l)"
printf '%-44s %9.2f\n' "vserver t build -m template (checked+verified)" "$best_import"
printf '%-44s %9.2f\n' "tar --zstd -xf + sync" "$best_tar_x"
printf '%-44s %9.2f\n' "ratio import / tar -x" "$(echo "$best_import / $best_tar_x" | bc -l)"
