# Sourced by the Debian benchmarks: make_deb_mirror DIR VSERVER makes DIR/mirror, a flat
# `bookworm main` mirror of the .debs the Debian-guest test caches, indexed by VSERVER with the
# archive's priorities, and registers it as the distribution `localdeb` in DIR/etc.
make_deb_mirror() {
  local dir=$1 vserver=$2 names
  : "${cache:=/var/tmp/vserver-test-debs}"
  mkdir -p "$dir/mirror/pool"
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
}
