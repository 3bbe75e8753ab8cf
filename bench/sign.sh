#!/bin/sh
# Benchmark: what signing adds to indexing, for apt (InRelease + Release.gpg) and rpm-md
# (repomd.xml.asc), on the same packages in one run.
#
# Usage: bench/sign.sh [COUNT] [WORKDIR]      (defaults: 20000, /tmp/vrepo-bench-sign)
#
# Generates COUNT .debs and COUNT RPMs with the project's fixture generator (kept between runs
# in WORKDIR) and a signing key in a private GnuPG home, then times, each three times:
#   deb-index        vrepo index --suite stable (cold: no --update cache)
#   deb-index+sign   the same with --sign
#   rpm-index        vrepo index (rpm-md)
#   rpm-index+sign   the same with --sign
#   sign-only        gpg --clearsign + --detach-sign of the Release just written (what --sign
#                    runs), for the net cost
# and prints the median of each and the ratio of signing to indexing. The page cache is warm.
set -eu

COUNT=${1:-20000}
WORK=${2:-/tmp/vrepo-bench-sign}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}

for tool in gpg gpgconf; do
    command -v "$tool" >/dev/null || { echo "missing: $tool (apt-get install gpg gpg-agent gpgconf)" >&2; exit 1; }
done

echo "building (release)..." >&2
(cd "$ROOT" && cargo build --release -q -p vserver-fixtures -p vserver)
VSERVER=$TARGET/release/vserver

mkdir -p "$WORK"
DEBS=$WORK/deb
RPMS=$WORK/rpm
if [ "$(find "$DEBS/pool" -name '*.deb' 2>/dev/null | wc -l)" -ne "$COUNT" ]; then
    rm -rf "$DEBS"
    echo "generating $COUNT .debs..." >&2
    "$TARGET/release/vserver-fixtures" deb "$DEBS/pool" --count "$COUNT" --seed 1 >&2
fi
if [ "$(find "$RPMS" -name '*.rpm' 2>/dev/null | wc -l)" -ne "$COUNT" ]; then
    rm -rf "$RPMS"
    echo "generating $COUNT RPMs..." >&2
    "$TARGET/release/vserver-fixtures" rpm "$RPMS" --count "$COUNT" --seed 1 >&2
fi

export GNUPGHOME="$WORK/gnupg"
if ! gpg --batch --list-secret-keys bench@example.invalid >/dev/null 2>&1; then
    rm -rf "$GNUPGHOME"
    mkdir -m 700 "$GNUPGHOME"
    gpg --batch --quiet --passphrase '' --quick-gen-key 'bench <bench@example.invalid>' default default never
fi
trap 'gpgconf --kill gpg-agent' EXIT

# Warm the page cache once so that no run pays for the first read.
find "$DEBS/pool" "$RPMS" -type f \( -name "*.deb" -o -name "*.rpm" \) -exec cat {} + >/dev/null

# median3 COMMAND...: median wall seconds of three runs.
median3() {
    for _ in 1 2 3; do
        start=$(date +%s.%N)
        "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; "$@"; exit 1; }
        end=$(date +%s.%N)
        awk -v a="$start" -v b="$end" 'BEGIN { printf "%.4f\n", b - a }'
    done | sort -n | sed -n 2p
}
clean() { rm -rf "$DEBS/.vrepo" "$DEBS/dists" "$RPMS/.vrepo" "$RPMS/repodata"; }

deb_index() { clean; "$VSERVER" vrepo index -q --suite stable "$DEBS" "$@"; }
rpm_index() { clean; "$VSERVER" vrepo index -q "$RPMS" "$@"; }
sign_only() {
    release=$DEBS/dists/stable/Release
    gpg --batch --yes --digest-algo SHA512 --local-user bench@example.invalid --clearsign -o "$WORK/InRelease" "$release"
    gpg --batch --yes --digest-algo SHA512 --local-user bench@example.invalid --armor --detach-sign -o "$WORK/Release.gpg" "$release"
}

d=$(median3 deb_index)
ds=$(median3 deb_index --sign bench@example.invalid)
r=$(median3 rpm_index)
rs=$(median3 rpm_index --sign bench@example.invalid)
deb_index
s=$(median3 sign_only)

printf '%-16s %8.3f s\n' deb-index "$d" deb-index+sign "$ds" rpm-index "$r" rpm-index+sign "$rs" sign-only "$s"
echo "$d $ds $r $rs $s" | awk '{
    printf "signing / indexing, %d packages: apt %.3f (%.3f s added), rpm-md %.3f (%.3f s added); gpg alone %.3f s (%.3f of apt indexing)\n",
        '"$COUNT"', ($2 - $1) / $1, $2 - $1, ($4 - $3) / $3, $4 - $3, $5, $5 / $1 }'
