#!/bin/sh
# Fleet verification: `vserver --all verify` against `rpm -Va` run guest by guest (through
# vrpm, the host's rpm on each guest's external database), on GUESTS guests of COUNT generated
# packages each (the first built with dnf, the others cloned from it), with the same planted
# changes in each guest (a replaced program, a changed config file, a removed file, a new setuid
# file). Prints both times, the ratio and whether both found the same files.
#
#   bench/verify.sh [GUESTS] [COUNT]      (default 20 guests of 300 packages; needs root, dnf)
#
# Binaries: $VSERVER and $FIXTURES (release, else debug builds). Work under $BENCH_DIR (default
# /var/tmp).
set -eu
guests=${1:-20}
count=${2:-300}
here=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$here/target}
pick() { ls -t "$target/release/$1" "$target/debug/$1" 2>/dev/null | head -1; }
vserver=${VSERVER:-$(pick vserver)}
fixtures=${FIXTURES:-$(pick vserver-fixtures)}
[ -n "$vserver" ] && [ -n "$fixtures" ] || { echo "verify.sh: cargo build -p vserver -p vserver-fixtures -p vserver-rpm-plugin" >&2; exit 2; }
work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/vserver-verify.XXXXXX")
trap 'rm -rf "$work"' EXIT
export VSERVER_CONFDIR=$work/etc VSERVER_ROOTDIR=$work/roots VSERVER_PKGDIR=$work/roots/.pkg
prefix=vf$$
"$fixtures" rpm "$work/repo" --count "$count" --prefix "$prefix" >/dev/null
"$vserver" vrepo index -q "$work/repo"
"$vserver" vdistro add bench --releasever 1 --repo "bench=file://$work/repo" >/dev/null 2>&1
"$vserver" g1 build -m yum -q -- -d bench -- "$prefix-*"
i=2
while [ $i -le "$guests" ]; do "$vserver" g$i build -m clone -q -- --source g1; i=$((i + 1)); done
files=$("$vserver" vrpm g1 -- -qla | wc -l)
i=1
while [ $i -le "$guests" ]; do
  root=$work/roots/g$i
  program=$(find "$root/usr/bin" -name "$prefix-*-tool" -type f | head -1)
  printf '#!/bin/sh\necho replaced\n' > "$program"
  config=$(find "$root/etc" -name '*.conf' -path "*$prefix*" | head -1)
  echo edited >> "$config"
  rm -f "$(find "$root/usr/share/doc" -name README -path "*$prefix*" | head -1)"
  mkdir -p "$root/usr/local/bin"; touch "$root/usr/local/bin/evil"; chmod 4755 "$root/usr/local/bin/evil"
  i=$((i + 1))
done
sync; echo 3 > /proc/sys/vm/drop_caches
now() { date +%s.%N; }
start=$(now)
i=1; : > "$work/rpm.out"
while [ $i -le "$guests" ]; do
  "$vserver" vrpm g$i -- -Va --noscripts | awk -v g=g$i '{print g, $NF}' >> "$work/rpm.out" || true
  i=$((i + 1))
done
rpm_time=$(echo "$(now) - $start" | bc)
sync; echo 3 > /proc/sys/vm/drop_caches
start=$(now)
"$vserver" --all verify --json > "$work/ours.json" || true
ours_time=$(echo "$(now) - $start" | bc)
python3 -c '
import json, sys
for r in json.load(open(sys.argv[1])):
    for f in r["findings"]:
        print(r["guest"], f["path"])' "$work/ours.json" > "$work/ours.out"
same=no; sort "$work/rpm.out" > "$work/a"; sort "$work/ours.out" > "$work/b"; cmp -s "$work/a" "$work/b" && same=yes
printf '%d guests, %d packaged files each (cold cache for each tool)\n' "$guests" "$files"
printf '%-36s %8.2f s  %d findings\n' "vrpm -Va, guest by guest" "$rpm_time" "$(wc -l < "$work/a")"
printf '%-36s %8.2f s  %d findings\n' "vserver --all verify" "$ours_time" "$(wc -l < "$work/b")"
printf 'ratio %.2f; same files found: %s\n' "$(echo "$ours_time / $rpm_time" | bc -l)" "$same"
