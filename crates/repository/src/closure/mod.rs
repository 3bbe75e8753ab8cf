//! Dependency closures for `vrepo mirror --packages`: which packages of a repository a set of
//! requested ones needs, so a mirror can hold just those and still install them.
//!
//! - [`version`] compares versions exactly as rpm (`rpmvercmp`, EVR) and dpkg do.
//! - [`resolve_rpm`] walks Requires (versioned, file and rich/boolean dependencies) over the
//!   packages of an rpm-md primary; [`resolve_deb`] walks Depends and Pre-Depends (with
//!   alternatives, version relations, virtual and versioned Provides, Multi-Arch qualifiers)
//!   over `Packages` entries. Recommends (rpm's weak Recommends) are followed on request.
//!
//! The resolution is a greedy closure, not a SAT solve: every requirement that the set chosen
//! so far does not satisfy adds the best candidate (newest version of the best architecture),
//! and alternatives take the first one the repository can satisfy. For a mirror this is the
//! right shape: the client resolves again over the subset, so the subset must make some
//! install possible, and a closure that is a little larger than one install set never hurts
//! it. Conflicts and Obsoletes are therefore not considered.

mod deb;
mod rpm;
pub mod version;

use std::path::Path;

pub use deb::{DebEntry, Op, Relation, parse_relationships, resolve_deb};
pub use rpm::resolve_rpm;

/// How to resolve.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubsetOptions {
    /// The requested package names (see [`read_package_list`]).
    pub packages: Vec<String>,
    /// Follow Recommends (rpm and Debian) as well; unresolvable ones are skipped silently.
    pub with_recommends: bool,
    /// Continue when a name or a dependency cannot be resolved (it is reported, not fatal).
    pub skip_missing: bool,
}

/// Something a closure could not find.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// The package whose dependency it is; `None` for a requested name.
    pub needed_by: Option<String>,
    /// The name or dependency, as the metadata writes it.
    pub what: String,
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.needed_by {
            Some(by) => write!(f, "{} (needed by {by})", self.what),
            None => write!(f, "{} (requested)", self.what),
        }
    }
}

/// The result of a resolution.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Indexes of the chosen packages in the input, in the order they were added.
    pub chosen: Vec<usize>,
    /// What could not be resolved.
    pub missing: Vec<Missing>,
}

/// One line listing what is missing: `a (requested), b >= 2 (needed by c-1-1.x86_64)`.
pub fn missing_line(missing: &[Missing]) -> String {
    const SHOWN: usize = 10;
    let mut parts: Vec<String> = missing
        .iter()
        .take(SHOWN)
        .map(ToString::to_string)
        .collect();
    if missing.len() > SHOWN {
        parts.push(format!("and {} more", missing.len() - SHOWN));
    }
    parts.join(", ")
}

/// A package list that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the package list `{}`", path.display())]
pub struct PackageListError {
    /// The list file.
    pub path: std::path::PathBuf,
    /// The cause.
    #[source]
    pub source: std::io::Error,
}

/// The package sets `--packages` accepts as `@NAME` besides names, for Debian families: what
/// a bootstrap variant installs, selected by the source's own index (`Essential: yes`, the
/// archive's `Priority`), as `vserver build -m apt --variant` selects them.
pub const DEB_SETS: &[(&str, &str)] = &[
    ("essential", "the Essential: yes packages"),
    (
        "minbase",
        "Essential, Priority: required and apt (the minbase variant)",
    ),
    ("buildd", "minbase and build-essential (the buildd variant)"),
    ("required", "the Priority: required packages"),
    ("important", "the Priority: important packages"),
    ("standard", "the Priority: standard packages"),
];

/// Whether `token` (as in a `--packages` list) names a package set rather than a package.
pub fn is_set(token: &str) -> bool {
    token
        .strip_prefix('@')
        .is_some_and(|name| DEB_SETS.iter().any(|(set, _)| *set == name))
}

/// What a package of a Debian index contributes to the sets: its name, whether it is
/// Essential, and its Priority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetMember<'a> {
    /// `Package`.
    pub name: &'a str,
    /// `Essential: yes`.
    pub essential: bool,
    /// `Priority` (empty when absent).
    pub priority: &'a str,
}

/// Replaces the `@SET` tokens of `requested` by the names of the packages they select among
/// `members`; other tokens stay as they are. Duplicates are dropped, order kept.
pub fn expand_deb_sets(requested: &[String], members: &[SetMember<'_>]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut push = |name: &str| {
        if seen.insert(name.to_owned()) {
            out.push(name.to_owned());
        }
    };
    let priority = |wanted: &str, push: &mut dyn FnMut(&str)| {
        for m in members.iter().filter(|m| m.priority == wanted) {
            push(m.name);
        }
    };
    for token in requested {
        match token.as_str() {
            "@essential" | "@minbase" | "@buildd" => {
                for m in members.iter().filter(|m| m.essential) {
                    push(m.name);
                }
                if token != "@essential" {
                    priority("required", &mut push);
                    push("apt");
                }
                if token == "@buildd" {
                    push("build-essential");
                }
            }
            "@required" => priority("required", &mut push),
            "@important" => priority("important", &mut push),
            "@standard" => priority("standard", &mut push),
            name => push(name),
        }
    }
    out
}

/// Expands `--packages` values: comma-separated names, or `@FILE` with one name per line
/// (blank lines and `#` comments ignored). `@SET` tokens of [`DEB_SETS`] (`@minbase`) are kept
/// for [`expand_deb_sets`], and `@dist:NAME` for the caller to expand (the distributions are
/// not this crate's); a list file with such a name is read as `@./minbase`. A name may
/// start with `?`: it is optional (left out when the source lacks it, as a distribution's
/// `?NAME`). Duplicates are dropped, order kept.
pub fn read_package_list(values: &[String]) -> Result<Vec<String>, PackageListError> {
    let mut names: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut push = |name: &str| {
        let name = name.trim();
        if !name.is_empty() && seen.insert(name.to_owned()) {
            names.push(name.to_owned());
        }
    };
    for value in values {
        // `@SET` and `@dist:NAME` are tokens for the caller, not files.
        let token = |t: &str| is_set(t) || t.starts_with("@dist:") || !t.starts_with('@');
        if value.split(',').all(|t| token(t.trim())) {
            value.split(',').for_each(&mut push);
        } else if let Some(file) = value.strip_prefix('@') {
            let path = Path::new(file);
            let text = std::fs::read_to_string(path).map_err(|source| PackageListError {
                path: path.to_owned(),
                source,
            })?;
            for line in text.lines() {
                let line = line.split('#').next().unwrap_or("");
                line.split([',', ' ', '\t']).for_each(&mut push);
            }
        } else {
            value.split(',').for_each(&mut push);
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_lists() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("list");
        std::fs::write(&file, "a\n# comment\n\nb # why\nc, a\n").unwrap_or_else(|e| panic!("{e}"));
        let names = read_package_list(&["x,y".into(), format!("@{}", file.display())])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(names, ["x", "y", "a", "b", "c"]);
        assert!(read_package_list(&["@/nonexistent/list".into()]).is_err());
        let names = read_package_list(&["@minbase,hello".into()]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(names, ["@minbase", "hello"]);
    }

    #[test]
    fn deb_sets_select_by_the_index() {
        let members = [
            SetMember {
                name: "dpkg",
                essential: true,
                priority: "required",
            },
            SetMember {
                name: "mawk",
                essential: false,
                priority: "required",
            },
            SetMember {
                name: "less",
                essential: false,
                priority: "important",
            },
        ];
        let expand = |tokens: &[&str]| {
            let tokens: Vec<String> = tokens.iter().map(|t| (*t).to_owned()).collect();
            expand_deb_sets(&tokens, &members)
        };
        assert_eq!(expand(&["@essential"]), ["dpkg"]);
        assert_eq!(
            expand(&["@minbase", "hello"]),
            ["dpkg", "mawk", "apt", "hello"]
        );
        assert_eq!(
            expand(&["@buildd"]),
            ["dpkg", "mawk", "apt", "build-essential"]
        );
        assert_eq!(expand(&["@important", "less"]), ["less"]);
    }
}
