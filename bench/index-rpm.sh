#!/usr/bin/env bash
# vrepo index against createrepo_c on the same generated RPMs, in one run.
#
#   bench/index-rpm.sh [COUNT]      (default 20000; the package set is cached in $BENCH_DIR)
#
# Prints wall time and peak memory of each run (median of $RUNS) and the ratios the project
# tracks: cold index, and --update after 1% of the packages changed.
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-20000}
runs=${RUNS:-3}
workers=${WORKERS:-$(nproc)}
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

# measure NAME CMD...: median wall seconds and the peak RSS of that run, into $wall/$rss
measure() {
    local name=$1; shift
    local results=()
    for _ in $(seq "$runs"); do
        [ -n "${PREPARE:-}" ] && eval "$PREPARE"
        /usr/bin/time -f "%e %M" -o /tmp/vserver-bench-time "$@" >/dev/null 2>&1
        results+=("$(cat /tmp/vserver-bench-time)")
    done
    read -r wall rss < <(printf '%s\n' "${results[@]}" | sort -n | sed -n "$(( (runs + 1) / 2 ))p")
    printf '%-42s %8.2f s %9.1f MiB\n' "$name" "$wall" "$(awk -v r="$rss" 'BEGIN { print r / 1024 }')"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

work=$bench/work
rm -rf "$work"; mkdir -p "$work"
cp -al "$set_dir" "$work/ours"; cp -al "$set_dir" "$work/theirs"
rm -f "$work"/*/.complete
echo "== $count RPMs, $workers workers, median of $runs runs"

PREPARE="rm -rf $work/ours/repodata $work/ours/.vrepo"
measure "vrepo index (cold)" "$bin/vserver" vrepo index -q "$work/ours"; ours_cold=$wall; ours_cold_rss=$rss
PREPARE="rm -rf $work/theirs/repodata"
measure "createrepo_c --workers $workers (cold)" createrepo_c -q --workers "$workers" "$work/theirs"; cr_cold=$wall; cr_cold_rss=$rss
measure "createrepo_c --no-database (cold)" createrepo_c -q --workers "$workers" --no-database "$work/theirs"; cr_nodb=$wall
PREPARE=

# 1% of the packages change (new modification time, as a rebuilt package would have).
"$bin/vserver" vrepo index -q "$work/ours"
createrepo_c -q --workers "$workers" "$work/theirs"
changed=$((count / 100))
PREPARE="ls $work/ours | grep '\.rpm$' | sed -n "1,${changed}p" | while read -r f; do touch $work/ours/\$f $work/theirs/\$f; done"
measure "vrepo index --update (1% changed)" "$bin/vserver" vrepo index -q --update "$work/ours"; ours_upd=$wall
measure "createrepo_c --update (1% changed)" createrepo_c -q --workers "$workers" --update "$work/theirs"; cr_upd=$wall
measure "createrepo_c --update --no-database" createrepo_c -q --workers "$workers" --update --no-database "$work/theirs"; cr_upd_nodb=$wall
PREPARE=

echo "== ratios (vrepo / createrepo_c; lower is better)"
echo "cold:                 $(ratio "$ours_cold" "$cr_cold")  (target <= 0.5; vs --no-database: $(ratio "$ours_cold" "$cr_nodb"))"
echo "cold peak memory:     $(ratio "$ours_cold_rss" "$cr_cold_rss")  (target <= 1)"
echo "update after 1%:      $(ratio "$ours_upd" "$cr_upd")  (target <= 0.3; vs --no-database: $(ratio "$ours_upd" "$cr_upd_nodb"))"
