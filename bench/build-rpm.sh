#!/bin/sh
# Benchmark: `vserver G build -m yum` against `dnf --installroot` of the same generated package
# set from the same local repository, on the same disk, side by side in one run.
#
#   bench/build-rpm.sh [COUNT]      (default 2000; needs root, dnf, createrepo_c)
#
# Binaries: $VSERVER (default target/release/vserver, else target/debug/vserver) and
# $FIXTURES (vserver-fixtures, same places). Work happens under $BENCH_DIR (default /var/tmp:
# on disk, where fsync costs what it costs in real life).
#
# Measured (2 cores, Debian 12, /var/tmp on disk, debug binaries, one run each):
#   300 packages:  dnf 13.19 s, vserver 13.61 s (1.03x)
#   2000 packages: dnf 83.98 s, vserver 67.32 s (0.80x; a test run overlapped part of it)
# strace: rpm 4.18 + dnf call fdatasync about 8 times per package (sqlite WAL commits of the
# rpmdb and dnf's history) and syncfs once; no rpm macro tried (_flush_io, _dbi_config nofsync,
# _db_nofsync) removes them.
# Since the build's rpm/dnf run with SandboxCommand::skip_fsync (a seccomp filter makes their
# syncs no-ops; vserver syncfs's the guest and .pkg file systems once at the end), release
# binaries, dnf with --disableplugin=local, fresh package prefix, one run:
#   2000 packages: dnf 79.20 s, vserver 25.85 s (0.33x)
# With the Landlock write boundary, the scriptlet namespace and the lowered bounding set (issue
# 13), BENCH_DIR on a fresh ext4 loop image per run, release, runs alternating with the binary
# from before (same machine, same hour; dnf ran much faster than in the lines above):
#   vserver 8.40 / 9.85 / 10.35 s, before 9.96 / 10.27 / 8.98 s; dnf 11.9-16.6 s (0.59-0.73x):
#   no cost above the noise.
set -eu
count=${1:-2000}
here=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$here/target}
pick() { for p in "$target/release/$1" "$target/debug/$1"; do [ -x "$p" ] && { echo "$p"; return; }; done; echo "missing $1: cargo build -p vserver -p vserver-fixtures -p vserver-rpm-plugin" >&2; exit 1; }
vserver=${VSERVER:-$(pick vserver)}
fixtures=${FIXTURES:-$(pick vserver-fixtures)}
work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/vserver-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT

# A fresh name prefix per run, and the host dnf without its `local` plugin (enabled on this host):
# that plugin copies every package a host dnf installs into /var/lib/dnf/plugins/local and offers
# them as a repository; vserver runs dnf with --noplugins, so the comparison leaves it out too.
prefix=bx$$
echo "generating $count packages in $work/repo"
"$fixtures" rpm "$work/repo" --count "$count" --prefix "$prefix" >/dev/null
createrepo_c --quiet --no-database "$work/repo"

now() { date +%s.%N; }

# 1. dnf --installroot, as a user would run it without vserver.
mkdir -p "$work/dnf/root" "$work/dnf/repos" "$work/dnf/home"
printf '[bench]\nname=bench\nbaseurl=file://%s/repo\ngpgcheck=0\n' "$work" > "$work/dnf/repos/bench.repo"
printf '%%_dbpath /var/lib/rpm\n' > "$work/dnf/home/.rpmmacros"
sync
start=$(now)
HOME=$work/dnf/home dnf -y -q --installroot="$work/dnf/root" --releasever=1 \
    --setopt=reposdir="$work/dnf/repos" --nogpgcheck --disableplugin=local \
    install "$prefix-*" >/dev/null
sync
dnf_time=$(echo "$(now) - $start" | bc)
dnf_count=$(rpm --root "$work/dnf/root" --dbpath /var/lib/rpm -qa 2>/dev/null | wc -l)

# 2. vserver build -m yum, same repository, same disk.
export VSERVER_CONFDIR=$work/vs/etc VSERVER_ROOTDIR=$work/vs/roots VSERVER_PKGDIR=$work/vs/roots/.pkg
"$vserver" vdistro add bench --releasever 1 --repo "bench=file://$work/repo" >/dev/null 2>&1
sync
start=$(now)
"$vserver" bench build -m yum -q -- -d bench -- "$prefix-*"
sync
vs_time=$(echo "$(now) - $start" | bc)
vs_count=$("$vserver" vrpm bench -- -qa | wc -l)

printf '%-28s %8s %10s\n' "tool" "packages" "seconds"
printf '%-28s %8d %10.2f\n' "dnf --installroot" "$dnf_count" "$dnf_time"
printf '%-28s %8d %10.2f\n' "vserver build -m yum" "$vs_count" "$vs_time"
printf 'ratio vserver/dnf: %.2f\n' "$(echo "$vs_time / $dnf_time" | bc -l)"
