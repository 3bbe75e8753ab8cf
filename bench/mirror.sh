#!/usr/bin/env bash
# vrepo mirror against dnf reposync and wget --mirror, all fetching the same generated rpm-md
# repository from `vrepo serve` on loopback, in one run.
#
#   bench/mirror.sh [COUNT]      (default 20000; the package set is cached in $BENCH_DIR)
#
# Prints the wall time of a cold mirror and of a re-run with nothing to do, for each tool, and
# the ratios. dnf reposync comes from dnf-plugins-core (apt-get install dnf-plugins-core).
# Network traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-20000}
jobs=${JOBS:-4}
bench=${BENCH_DIR:-/var/tmp/vserver-bench}
cargo build --release -q -p vserver -p vserver-fixtures
bin=${CARGO_TARGET_DIR:-$PWD/target}/release
set_dir=$bench/rpm-$count
if [ ! -f "$set_dir/.complete" ]; then
    rm -rf "$set_dir"
    echo "generating $count RPMs in $set_dir (once)"
    "$bin/vserver-fixtures" rpm "$set_dir" --count "$count" --seed 2024
    touch "$set_dir/.complete"
fi

work=$bench/mirror-work
rm -rf "$work"; mkdir -p "$work"
cp -al "$set_dir" "$work/src"
rm -rf "$work/src/repodata" "$work/src/.vrepo" "$work/src/.complete"
"$bin/vserver" vrepo index -q "$work/src"
echo "source: $count packages, $(du -sh "$work/src" | cut -f1)"

"$bin/vserver" vrepo serve --quiet --listen 127.0.0.1:0 "$work/src" 2> "$work/serve.log" &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
for _ in $(seq 50); do grep -q http:// "$work/serve.log" 2>/dev/null && break; sleep 0.1; done
url=$(grep -o 'http://[^ ]*' "$work/serve.log" | head -1)
echo "serving on $url"

# timed NAME CMD...: wall seconds into $wall, printed
timed() {
    local name=$1; shift
    local start end
    start=$(date +%s.%N)
    "$@" > "$work/last.log" 2>&1 || { rc=$?; [ "$rc" -eq 4 ] || { cat "$work/last.log"; echo "$name failed ($rc)"; exit 1; }; }
    end=$(date +%s.%N)
    wall=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }')
    printf '%-44s %8.2f s\n' "$name" "$wall"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

ours() { "$bin/vserver" vrepo mirror --no-verify-signature -q --jobs "$jobs" "$url" "$work/ours"; }
reposync() {
    dnf reposync -q --repofrompath="bench,$url" --repoid=bench --norepopath \
        --download-path "$work/reposync" --download-metadata --releasever=1 \
        --setopt=reposdir=/nonexistent --setopt=cachedir="$work/dnf-cache" \
        --setopt=max_parallel_downloads="$jobs" --nogpgcheck
}
wget_mirror() { wget --mirror -q -np -nH -e robots=off -P "$work/wget" "$url"; }

timed "vrepo mirror, cold (--jobs $jobs)" ours; ours_cold=$wall
timed "vrepo mirror, nothing to do" ours; ours_again=$wall
have_reposync=0
if dnf reposync --help >/dev/null 2>&1; then
    have_reposync=1
    timed "dnf reposync, cold (max_parallel_downloads=$jobs)" reposync; sync_cold=$wall
    timed "dnf reposync, nothing to do" reposync; sync_again=$wall
else
    echo "dnf reposync: not installed (apt-get install dnf-plugins-core)"
fi
timed "wget --mirror, cold" wget_mirror; wget_cold=$wall
timed "wget --mirror, nothing to do" wget_mirror; wget_again=$wall

# Same packages, same metadata in every copy.
diff -rq "$work/src/repodata" "$work/ours/repodata" > /dev/null && echo "vrepo mirror: repodata identical to the source"
n=$(find "$work/ours" -name '*.rpm' | wc -l); echo "vrepo mirror: $n packages"

echo
echo "cold:          wget/vrepo $(ratio "$wget_cold" "$ours_cold")x"
[ "$have_reposync" = 1 ] && echo "cold:          reposync/vrepo $(ratio "$sync_cold" "$ours_cold")x"
echo "nothing to do: wget/vrepo $(ratio "$wget_again" "$ours_again")x"
[ "$have_reposync" = 1 ] && echo "nothing to do: reposync/vrepo $(ratio "$sync_again" "$ours_again")x"
true
