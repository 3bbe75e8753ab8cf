//! Override files: the archive's word on a package's `Priority` and `Section`.
//!
//! Archives do not trust a package's own `Priority`: the index takes it from an override file
//! (apt-ftparchive(1), dpkg-scanpackages(1)), and bootstrappers select the base system on it.
//! Each line is `package priority section [maintainer-rewrite]`; `#` starts a comment; a
//! `package/arch` line refines the plain one for one architecture. The maintainer column is
//! either a new maintainer or `old => new` (several old ones separated by ` // `), as
//! apt-ftparchive reads it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A malformed or unreadable override file.
#[derive(Debug, thiserror::Error)]
pub enum OverrideError {
    /// The file could not be read.
    #[error("failed to read override file `{}`", path.display())]
    Io {
        /// The override file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A line without the three required columns.
    #[error("override file `{}` line {line}: expected `package priority section`", path.display())]
    Malformed {
        /// The override file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
}

/// What the override file says about one package.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OverrideEntry {
    /// The priority to write (`required`, `important`, …).
    pub priority: String,
    /// The section to write.
    pub section: String,
    /// A maintainer rewrite, if the line has a fourth column.
    pub maintainer: Option<MaintainerRewrite>,
}

/// The fourth column of an override line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintainerRewrite {
    /// The maintainers to replace, separated by ` // `; `*` replaces any.
    pub old: String,
    /// The maintainer to write instead.
    pub new: String,
}

impl OverrideEntry {
    /// The maintainer to write instead of `current`, or `None` to keep it.
    pub fn rewrite_maintainer(&self, current: &str) -> Option<&str> {
        let rewrite = self.maintainer.as_ref()?;
        if rewrite.new.is_empty() {
            return None;
        }
        let matches = rewrite.old == "*"
            || rewrite
                .old
                .split(" // ")
                .any(|old| old.trim().eq_ignore_ascii_case(current));
        matches.then_some(rewrite.new.as_str())
    }
}

/// A parsed override file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    entries: HashMap<String, OverrideEntry>,
}

impl Overrides {
    /// Reads and parses the override file at `path`.
    pub fn load(path: &Path) -> Result<Overrides, OverrideError> {
        let text = std::fs::read(path).map_err(|source| OverrideError::Io {
            path: path.to_owned(),
            source,
        })?;
        Overrides::parse(&String::from_utf8_lossy(&text), path)
    }

    /// Parses override text; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Overrides, OverrideError> {
        let mut entries = HashMap::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("");
            let mut columns = line.split_ascii_whitespace();
            let Some(package) = columns.next() else {
                continue;
            };
            let (Some(priority), Some(section)) = (columns.next(), columns.next()) else {
                return Err(OverrideError::Malformed {
                    path: path.to_owned(),
                    line: index + 1,
                });
            };
            let rest = columns.collect::<Vec<_>>().join(" ");
            let maintainer = (!rest.is_empty()).then(|| match rest.split_once("=>") {
                Some((old, new)) if !new.trim().is_empty() => MaintainerRewrite {
                    old: old.trim().to_owned(),
                    new: new.trim().to_owned(),
                },
                _ => MaintainerRewrite {
                    old: "*".to_owned(),
                    new: rest.clone(),
                },
            });
            entries.insert(
                package.to_owned(),
                OverrideEntry {
                    priority: priority.to_owned(),
                    section: section.to_owned(),
                    maintainer,
                },
            );
        }
        Ok(Overrides { entries })
    }

    /// The entry for `package` built for `architecture`: the plain line, refined by a
    /// `package/architecture` line when there is one.
    pub fn get(&self, package: &str, architecture: &str) -> Option<OverrideEntry> {
        let plain = self.entries.get(package);
        let specific = self.entries.get(&format!("{package}/{architecture}"));
        match (plain, specific) {
            (None, None) => None,
            (Some(entry), None) | (None, Some(entry)) => Some(entry.clone()),
            (Some(plain), Some(specific)) => Some(OverrideEntry {
                priority: specific.priority.clone(),
                section: specific.section.clone(),
                maintainer: specific
                    .maintainer
                    .clone()
                    .or_else(|| plain.maintainer.clone()),
            }),
        }
    }

    /// Whether the file had no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines_comments_and_arch_specific_entries() {
        let text = "# comment\napt required admin\n\nfoo optional misc # trailing\n\
                    foo/arm64 extra oldlibs\nbar standard net Old One // Old Two => New <n@x>\n";
        let overrides = Overrides::parse(text, Path::new("ov")).unwrap();
        assert_eq!(overrides.get("apt", "amd64").unwrap().priority, "required");
        assert_eq!(overrides.get("foo", "amd64").unwrap().section, "misc");
        assert_eq!(overrides.get("foo", "arm64").unwrap().section, "oldlibs");
        assert!(overrides.get("nope", "amd64").is_none());
        let bar = overrides.get("bar", "amd64").unwrap();
        assert_eq!(bar.rewrite_maintainer("old two"), Some("New <n@x>"));
        assert_eq!(bar.rewrite_maintainer("someone else"), None);
    }

    #[test]
    fn rejects_short_lines_with_their_number() {
        let err = Overrides::parse("a b c\nbroken line\n", Path::new("ov")).unwrap_err();
        assert!(matches!(err, OverrideError::Malformed { line: 2, .. }));
    }
}
