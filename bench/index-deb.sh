#!/bin/sh
# Benchmark: vrepo's apt indexer against apt-ftparchive and dpkg-scanpackages, same input, one run.
#
# Usage: bench/index-deb.sh [COUNT] [WORKDIR]      (defaults: 20000, /tmp/vrepo-bench-deb)
#
# Generates COUNT .debs with the project's fixture generator (kept between runs in WORKDIR),
# then times, each with wall seconds and peak RSS (/usr/bin/time -f '%e %M'):
#   ours cold            full index: Packages, Packages.gz, Packages.xz, Release
#   apt-ftparchive       `apt-ftparchive packages` (uncompressed Packages on stdout only)
#   apt-ftparchive+gz+xz the same piped through gzip and xz -0, i.e. the files we write
#   apt-ftparchive --db  cold (fills its cache), then warm (the number to beat on update)
#   dpkg-scanpackages    (slow: minutes for 20,000 .debs; DPKG_SCANPACKAGES=0 skips it)
#   ours --update        after changing 1% of the packages
# and prints the ratios the issue sets targets for: cold <= 0.7x apt-ftparchive cold, update
# not slower than apt-ftparchive with its --db cache. The page cache is warm for every tool
# (each reads the same files right after the generator or a previous tool).
set -eu

COUNT=${1:-20000}
WORK=${2:-/tmp/vrepo-bench-deb}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
POOL=$WORK/repo/pool

for tool in apt-ftparchive /usr/bin/time gzip xz; do
    command -v "$tool" >/dev/null || { echo "missing: $tool (apt-get install apt-utils time xz-utils)" >&2; exit 1; }
done

echo "building (release)..." >&2
(cd "$ROOT" && cargo build --release -q -p vserver-fixtures -p vserver)
VSERVER=$TARGET/release/vserver

if [ "$(find "$POOL" -name '*.deb' 2>/dev/null | wc -l)" -ne "$COUNT" ]; then
    rm -rf "$WORK"
    mkdir -p "$WORK"
    echo "generating $COUNT .debs..." >&2
    "$TARGET/release/vserver-fixtures" deb "$POOL" --count "$COUNT" --seed 1 >&2
fi
REPO=$WORK/repo
rm -rf "$REPO/.vrepo" "$REPO"/Packages* "$REPO/Release" "$WORK/aftp.db"

# measure NAME COMMAND...: runs COMMAND, appends "NAME wall_s peak_kb cpu_s" to $WORK/results.
# CPU seconds (user + system) are shown too: on a loaded machine they are the steadier number.
measure() {
    name=$1
    shift
    /usr/bin/time -o "$WORK/time.out" -f '%e %M %U %S' "$@" >/dev/null 2>"$WORK/stderr.out" || {
        echo "$name failed:" >&2
        cat "$WORK/stderr.out" >&2
        exit 1
    }
    set -- $(tail -1 "$WORK/time.out")
    cpu=$(echo "$3 $4" | awk '{ printf "%.2f", $1 + $2 }')
    printf '%s %s %s %s\n' "$name" "$1" "$2" "$cpu" >>"$WORK/results"
    printf '%-24s %8s s wall %8s s cpu %8s KB\n' "$name" "$1" "$cpu" "$2" >&2
}
: >"$WORK/results"

cd "$REPO"
# Warm the page cache once so that no tool pays for the first read.
cat pool/*.deb >/dev/null

measure ours-cold "$VSERVER" vrepo index --format deb "$REPO"
measure aftp-cold apt-ftparchive packages pool
measure aftp-cold+gz+xz sh -c 'apt-ftparchive packages pool | tee "$1/P" | gzip -6 > "$1/P.gz" && xz -0 -k -f "$1/P"' _ "$WORK"
measure aftp-db-fill apt-ftparchive --db "$WORK/aftp.db" packages pool
measure aftp-db-warm apt-ftparchive --db "$WORK/aftp.db" packages pool
measure aftp-db-warm+gz+xz sh -c 'apt-ftparchive --db "$2" packages pool | tee "$1/P" | gzip -6 > "$1/P.gz" && xz -0 -k -f "$1/P"' _ "$WORK" "$WORK/aftp.db"
if [ "${DPKG_SCANPACKAGES:-1}" = 1 ]; then
    measure dpkg-scanpackages dpkg-scanpackages pool
fi

# Change 1% of the packages: overwrite every 100th file with another valid .deb (generated
# with another seed), so size, mtime and content change under the same name.
CHANGED=$((COUNT / 100))
rm -rf "$WORK/changes"
"$TARGET/release/vserver-fixtures" deb "$WORK/changes" --count "$CHANGED" --seed 2 --prefix chg >&2
ls "$WORK/changes"/*.deb >"$WORK/changes.list"
ls pool/*.deb | awk 'NR % 100 == 1' | head -n "$CHANGED" | paste - "$WORK/changes.list" |
    while read -r target source; do cp "$source" "$target"; done
measure ours-update "$VSERVER" vrepo index --format deb --update "$REPO"
measure aftp-db-update apt-ftparchive --db "$WORK/aftp.db" packages pool

awk '
    { wall[$1] = $2; rss[$1] = $3; cpu[$1] = $4 }
    END {
        printf "\nratios (wall time; < 1 means vrepo is faster)\n"
        printf "  cold   vs apt-ftparchive packages:          %.2fx (target <= 0.70)\n", wall["ours-cold"] / wall["aftp-cold"]
        printf "  cold   vs apt-ftparchive + gzip + xz:       %.2fx\n", wall["ours-cold"] / wall["aftp-cold+gz+xz"]
        printf "  update vs apt-ftparchive --db (1%% changed): %.2fx (target <= 1.00)\n", wall["ours-update"] / wall["aftp-db-update"]
        printf "  update vs apt-ftparchive --db + gzip + xz:  %.2fx\n", wall["ours-update"] / wall["aftp-db-warm+gz+xz"]
        printf "  cpu    cold %.2f s vs %.2f s, update %.2f s vs %.2f s (ours vs apt-ftparchive)\n", cpu["ours-cold"], cpu["aftp-cold"], cpu["ours-update"], cpu["aftp-db-update"]
        printf "  peak memory cold: ours %d KB, apt-ftparchive %d KB\n", rss["ours-cold"], rss["aftp-cold"]
        if ("dpkg-scanpackages" in wall)
            printf "  cold   vs dpkg-scanpackages:                %.2fx\n", wall["ours-cold"] / wall["dpkg-scanpackages"]
    }' "$WORK/results"
