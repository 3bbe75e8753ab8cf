//! Which packages of the Essential set must be on disk before dpkg runs its first script.
//!
//! dpkg runs a package's `preinst` before unpacking it, chrooted in the guest, so whatever that
//! script runs must be there already. Debian policy lets a `preinst` rely on the Essential
//! packages and on the package's own Pre-Depends only (§3.8, §7.2), and an Essential package
//! must be usable while merely unpacked (§3.8; its libraries are Pre-Depends for that reason).
//! So the bootstrap extracts the Essential packages and every Pre-Depends target, closed over
//! Pre-Depends: on bookworm 51 of the 89 packages, about 85 of 160 MB (trixie 53 of 69, Ubuntu
//! 24.04 51 of 76; both built and verified). Extracting less costs less,
//! and dpkg replaces fewer files afterwards (on a journal-less ext4, like these machines',
//! every replaced file makes later file creations slower: the allocator skips recently freed
//! inodes, testing them one by one).

use std::collections::HashMap;

use vserver_repository::closure::parse_relationships;
use vserver_repository::deb::control::Stanza;

/// For each of `packages` (control stanzas), whether it belongs to the toolbox.
///
/// Every alternative of a Pre-Depends that the set holds is taken (a package or a provider of
/// a virtual one), not only the one apt would pick: the toolbox may be a little larger than
/// needed, never smaller. A relation that does not parse counts as absent: dpkg reports it.
pub(crate) fn script_toolbox(packages: &[Stanza]) -> Vec<bool> {
    let mut by_name: HashMap<String, Vec<usize>> = HashMap::new();
    for (index, stanza) in packages.iter().enumerate() {
        if let Some(name) = stanza.get("Package") {
            by_name.entry(name.to_owned()).or_default().push(index);
        }
        for provided in relation_names(stanza, "Provides") {
            by_name.entry(provided).or_default().push(index);
        }
    }
    let pre_depends: Vec<Vec<usize>> = packages
        .iter()
        .map(|stanza| {
            relation_names(stanza, "Pre-Depends")
                .iter()
                .filter_map(|name| by_name.get(name))
                .flatten()
                .copied()
                .collect()
        })
        .collect();

    let mut chosen = vec![false; packages.len()];
    let mut pending: Vec<usize> = (0..packages.len())
        .filter(|&i| packages[i].get("Essential") == Some("yes"))
        .chain(pre_depends.iter().flatten().copied())
        .collect();
    while let Some(index) = pending.pop() {
        if !chosen[index] {
            chosen[index] = true;
            pending.extend(&pre_depends[index]);
        }
    }
    chosen
}

/// The names a relationship field mentions, every alternative included.
fn relation_names(stanza: &Stanza, field: &str) -> Vec<String> {
    parse_relationships(stanza.get(field).unwrap_or(""))
        .unwrap_or_default()
        .into_iter()
        .flatten()
        .map(|relation| relation.name)
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn stanza(text: &str) -> Stanza {
        Stanza::parse_bytes(text.as_bytes()).unwrap()
    }

    #[test]
    fn essential_packages_and_pre_depends_closure() {
        let packages = [
            stanza("Package: dash\nEssential: yes\nPre-Depends: libc6 (>= 2.36)\n"),
            stanza("Package: libc6\nDepends: libgcc-s1\n"),
            stanza("Package: libgcc-s1\n"),
            stanza("Package: adduser\nPre-Depends: passwd | shadow-tools\nDepends: base-files\n"),
            stanza("Package: passwd\nPre-Depends: libaudit1:any\n"),
            stanza("Package: libaudit1\n"),
            stanza("Package: base-files\n"),
            stanza("Package: tool\nPre-Depends: awk\n"),
            stanza("Package: mawk\nProvides: awk\n"),
            stanza("Package: unrelated\nDepends: dash\n"),
        ];
        let chosen = script_toolbox(&packages);
        let names: Vec<&str> = packages
            .iter()
            .zip(&chosen)
            .filter(|(_, chosen)| **chosen)
            .map(|(stanza, _)| stanza.get("Package").unwrap())
            .collect();
        assert_eq!(
            names,
            ["dash", "libc6", "passwd", "libaudit1", "mawk"],
            "Depends are not followed; Pre-Depends and providers are"
        );
    }
}
