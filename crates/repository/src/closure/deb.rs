//! The dependency closure of requested Debian packages over `Packages` indexes.
//!
//! Relationships follow deb-control(5) and apt's matching: `Depends` and `Pre-Depends` are
//! followed (`Recommends` only on request), each a list of alternatives (`a | b`) of which
//! one already chosen satisfies the relationship, otherwise the first the archive can
//! satisfy is added. A versioned relation (`<<`, `<=`, `=`, `>=`, `>>`, and the obsolete `<`
//! and `>` meaning `<=` and `>=`) is matched by a real package of that version or by a
//! versioned `Provides: name (= V)`; an unversioned Provides satisfies only unversioned
//! relations, as in apt and dpkg.
//!
//! Architectures follow the Multi-Arch basics: an unqualified relation of a package of
//! architecture A is satisfied by a package of A, of `all`, or a `Multi-Arch: foreign` one of
//! any architecture; `:any` also accepts `Multi-Arch: allowed` packages of any architecture;
//! `:native` asks for the native architecture (the most common one in the indexes), and
//! `:ARCH` for that one. `Architecture: all` packages depend as native ones.
//!
//! Among several candidates a real package named as asked wins over providers, then the
//! dependent's architecture, then the highest version.

use std::collections::HashMap;

use super::version::DebVersion;
use super::{Missing, Selection, SubsetOptions};
use crate::deb::control::Stanza;

/// One binary package of an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebEntry {
    /// `Package`.
    pub name: String,
    /// `Version`.
    pub version: DebVersion,
    /// `Architecture`.
    pub arch: String,
    /// `Multi-Arch` (empty when absent).
    pub multi_arch: String,
    /// `Provides`, each with its version when given as `(= V)`.
    pub provides: Vec<(String, Option<DebVersion>)>,
    /// `Pre-Depends` then `Depends`, as lists of alternatives.
    pub depends: Vec<Vec<Relation>>,
    /// `Recommends`.
    pub recommends: Vec<Vec<Relation>>,
}

/// A version operator of a relation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `<<`.
    Less,
    /// `<=` (and the obsolete `<`).
    LessEqual,
    /// `=`.
    Equal,
    /// `>=` (and the obsolete `>`).
    GreaterEqual,
    /// `>>`.
    Greater,
}

impl Op {
    fn accepts(self, have: &DebVersion, want: &DebVersion) -> bool {
        let ord = have.cmp(want);
        match self {
            Op::Less => ord.is_lt(),
            Op::LessEqual => ord.is_le(),
            Op::Equal => ord.is_eq(),
            Op::GreaterEqual => ord.is_ge(),
            Op::Greater => ord.is_gt(),
        }
    }

    fn symbol(self) -> &'static str {
        match self {
            Op::Less => "<<",
            Op::LessEqual => "<=",
            Op::Equal => "=",
            Op::GreaterEqual => ">=",
            Op::Greater => ">>",
        }
    }
}

/// One alternative of a relationship: `name[:arch] [(op version)]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// Package or virtual package name.
    pub name: String,
    /// `any`, `native` or an architecture, when qualified.
    pub arch: Option<String>,
    /// Version constraint.
    pub version: Option<(Op, DebVersion)>,
}

impl std::fmt::Display for Relation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)?;
        if let Some(arch) = &self.arch {
            write!(f, ":{arch}")?;
        }
        if let Some((op, version)) = &self.version {
            write!(f, " ({} {version})", op.symbol())?;
        }
        Ok(())
    }
}

/// Parses one alternative; arch restrictions (`[…]`) and build profiles (`<…>`) are dropped.
fn parse_relation(text: &str) -> Result<Relation, String> {
    let text = text.trim();
    // Arch restrictions and build profiles start outside the parentheses.
    let mut depth = 0usize;
    let mut end = text.len();
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            '[' | '<' if depth == 0 => {
                end = i;
                break;
            }
            _ => {}
        }
    }
    let text = text[..end].trim_end();
    let (head, version) = match text.split_once('(') {
        Some((head, rest)) => {
            let inner = rest
                .strip_suffix(')')
                .ok_or_else(|| format!("missing `)` in `{text}`"))?
                .trim();
            let op_len = inner
                .find(|c: char| !matches!(c, '<' | '>' | '='))
                .unwrap_or(inner.len());
            let op = match &inner[..op_len] {
                "<<" => Op::Less,
                "<=" | "<" => Op::LessEqual,
                "=" => Op::Equal,
                ">=" | ">" => Op::GreaterEqual,
                ">>" => Op::Greater,
                other => return Err(format!("unknown operator `{other}` in `{text}`")),
            };
            let version = DebVersion::parse(inner[op_len..].trim())
                .ok_or_else(|| format!("bad version in `{text}`"))?;
            (head.trim(), Some((op, version)))
        }
        None => (text, None),
    };
    if head.is_empty() || head.contains(char::is_whitespace) {
        return Err(format!("bad relation `{text}`"));
    }
    let (name, arch) = match head.split_once(':') {
        Some((name, arch)) => (name, Some(arch.to_owned())),
        None => (head, None),
    };
    Ok(Relation {
        name: name.to_owned(),
        arch,
        version,
    })
}

/// Parses a relationship field: `a (>= 1) | b, c`.
pub fn parse_relationships(text: &str) -> Result<Vec<Vec<Relation>>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|group| !group.is_empty())
        .map(|group| group.split('|').map(parse_relation).collect())
        .collect()
}

impl DebEntry {
    /// Reads the fields the closure needs from a `Packages` stanza.
    pub fn from_stanza(stanza: &Stanza) -> Result<DebEntry, String> {
        let name = stanza.get("Package").ok_or("a stanza has no Package")?;
        let field = |f: &str| stanza.get(f).unwrap_or("");
        let bad = |what: &str, e: String| format!("`{name}`: bad {what}: {e}");
        let version = DebVersion::parse(field("Version"))
            .ok_or_else(|| format!("`{name}`: bad Version `{}`", field("Version")))?;
        let mut depends =
            parse_relationships(field("Pre-Depends")).map_err(|e| bad("Pre-Depends", e))?;
        depends.extend(parse_relationships(field("Depends")).map_err(|e| bad("Depends", e))?);
        let recommends =
            parse_relationships(field("Recommends")).map_err(|e| bad("Recommends", e))?;
        let provides = parse_relationships(field("Provides"))
            .map_err(|e| bad("Provides", e))?
            .into_iter()
            .flatten()
            .map(|r| {
                let version = r.version.and_then(|(op, v)| (op == Op::Equal).then_some(v));
                (r.name, version)
            })
            .collect();
        Ok(DebEntry {
            name: name.to_owned(),
            version,
            arch: field("Architecture").to_owned(),
            multi_arch: field("Multi-Arch").to_owned(),
            provides,
            depends,
            recommends,
        })
    }
}

struct Index<'a> {
    packages: &'a [DebEntry],
    by_name: HashMap<&'a str, Vec<usize>>,
    /// Virtual name to (provider, provided version).
    providers: HashMap<&'a str, Vec<(usize, Option<&'a DebVersion>)>>,
    native: String,
}

impl<'a> Index<'a> {
    fn new(packages: &'a [DebEntry]) -> Index<'a> {
        let mut by_name: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut providers: HashMap<&str, Vec<(usize, Option<&DebVersion>)>> = HashMap::new();
        let mut arch_count: HashMap<&str, usize> = HashMap::new();
        for (i, p) in packages.iter().enumerate() {
            by_name.entry(&p.name).or_default().push(i);
            for (name, version) in &p.provides {
                providers
                    .entry(name)
                    .or_default()
                    .push((i, version.as_ref()));
            }
            if p.arch != "all" {
                *arch_count.entry(&p.arch).or_default() += 1;
            }
        }
        let native = arch_count
            .into_iter()
            .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(a.0)))
            .map_or_else(|| "amd64".to_owned(), |(a, _)| a.to_owned());
        Index {
            packages,
            by_name,
            providers,
            native,
        }
    }

    /// Whether package `candidate` may satisfy `relation` for a dependent of `arch`.
    fn arch_fits(&self, candidate: usize, relation: &Relation, arch: &str) -> bool {
        let p = &self.packages[candidate];
        let own = p.arch == arch || p.arch == "all";
        match relation.arch.as_deref() {
            None => own || p.multi_arch == "foreign",
            Some("any") => own || matches!(p.multi_arch.as_str(), "foreign" | "allowed"),
            Some("native") => p.arch == self.native || p.arch == "all",
            Some(wanted) => p.arch == wanted || p.arch == "all",
        }
    }

    /// Candidates for `relation` from `arch`, best first.
    fn candidates(&self, relation: &Relation, arch: &str) -> Vec<usize> {
        let mut real: Vec<usize> = self
            .by_name
            .get(relation.name.as_str())
            .into_iter()
            .flatten()
            .copied()
            .filter(|&i| self.arch_fits(i, relation, arch))
            .filter(|&i| {
                relation
                    .version
                    .as_ref()
                    .is_none_or(|(op, want)| op.accepts(&self.packages[i].version, want))
            })
            .collect();
        let rank = |i: usize| u8::from(self.packages[i].arch != arch);
        real.sort_by(|&a, &b| {
            rank(a)
                .cmp(&rank(b))
                .then_with(|| self.packages[b].version.cmp(&self.packages[a].version))
                .then_with(|| a.cmp(&b))
        });
        let mut provided: Vec<usize> = self
            .providers
            .get(relation.name.as_str())
            .into_iter()
            .flatten()
            .filter(|(i, version)| {
                self.arch_fits(*i, relation, arch)
                    && match (&relation.version, version) {
                        (None, _) => true,
                        (Some((op, want)), Some(have)) => op.accepts(have, want),
                        (Some(_), None) => false,
                    }
            })
            .map(|(i, _)| *i)
            .collect();
        provided.sort_by(|&a, &b| {
            rank(a)
                .cmp(&rank(b))
                .then_with(|| self.packages[a].name.cmp(&self.packages[b].name))
                .then_with(|| self.packages[b].version.cmp(&self.packages[a].version))
        });
        real.extend(provided);
        real
    }
}

/// Resolves `requested` (`name` or `name:arch`) and their closure over `packages`.
pub fn resolve_deb(
    packages: &[DebEntry],
    requested: &[String],
    options: &SubsetOptions,
) -> Selection {
    let index = Index::new(packages);
    let mut selected = vec![false; packages.len()];
    let mut order = Vec::new();
    let mut missing = Vec::new();
    let mut queue = Vec::new();
    let add =
        |i: usize, selected: &mut Vec<bool>, queue: &mut Vec<usize>, order: &mut Vec<usize>| {
            if !selected[i] {
                selected[i] = true;
                order.push(i);
                queue.push(i);
            }
        };
    for name in requested {
        let relation = match parse_relation(name) {
            Ok(relation) => relation,
            Err(_) => {
                missing.push(Missing {
                    needed_by: None,
                    what: name.clone(),
                });
                continue;
            }
        };
        let mut found = index.candidates(&relation, &index.native);
        if found.is_empty() && relation.arch.is_none() {
            // A requested name may be of another architecture than the most common one.
            let any_arch = Relation {
                arch: Some("any".into()),
                ..relation.clone()
            };
            found = index.candidates(&any_arch, &index.native);
            let mut same_name: Vec<usize> = index
                .by_name
                .get(relation.name.as_str())
                .into_iter()
                .flatten()
                .copied()
                .collect();
            same_name.sort_by(|&a, &b| packages[b].version.cmp(&packages[a].version));
            found.extend(same_name);
        }
        match found.first() {
            Some(&i) => add(i, &mut selected, &mut queue, &mut order),
            None => missing.push(Missing {
                needed_by: None,
                what: name.clone(),
            }),
        }
    }
    while let Some(package) = queue.pop() {
        let p = &packages[package];
        let arch = if p.arch == "all" {
            index.native.as_str()
        } else {
            p.arch.as_str()
        };
        let weak = if options.with_recommends {
            p.recommends.as_slice()
        } else {
            &[]
        };
        for (group, strong) in p
            .depends
            .iter()
            .map(|g| (g, true))
            .chain(weak.iter().map(|g| (g, false)))
        {
            let choices: Vec<Vec<usize>> =
                group.iter().map(|r| index.candidates(r, arch)).collect();
            let satisfied = choices.iter().flatten().any(|&i| selected[i]);
            if satisfied {
                continue;
            }
            match choices.iter().find_map(|c| c.first()) {
                Some(&i) => add(i, &mut selected, &mut queue, &mut order),
                None if strong => missing.push(Missing {
                    needed_by: Some(format!("{} {} ({})", p.name, p.version, p.arch)),
                    what: group
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(" | "),
                }),
                None => {}
            }
        }
    }
    Selection {
        chosen: order,
        missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_relations() {
        let groups =
            parse_relationships("a (>= 1:2.0~rc1), b:any | c (<< 3) [amd64], d <!nocheck>")
                .unwrap();
        assert_eq!(groups.len(), 3);
        assert_eq!(groups[0][0].to_string(), "a (>= 1:2.0~rc1)");
        assert_eq!(groups[1][0].arch.as_deref(), Some("any"));
        assert_eq!(groups[1][1].to_string(), "c (<< 3)");
        assert_eq!(groups[2][0].to_string(), "d");
        assert_eq!(
            parse_relation("x (< 2)").unwrap().version.unwrap().0,
            Op::LessEqual
        );
        assert!(parse_relation("x (~ 2)").is_err());
    }

    fn entry(name: &str, arch: &str, multi_arch: &str, depends: &str) -> DebEntry {
        DebEntry {
            name: name.into(),
            version: DebVersion::parse("1.0-1").unwrap_or_default(),
            arch: arch.into(),
            multi_arch: multi_arch.into(),
            provides: Vec::new(),
            depends: parse_relationships(depends).unwrap_or_default(),
            recommends: Vec::new(),
        }
    }

    fn closure(entries: &[DebEntry], wanted: &str) -> (Vec<String>, Vec<String>) {
        let selection = resolve_deb(entries, &[wanted.to_owned()], &SubsetOptions::default());
        let mut chosen: Vec<String> = selection
            .chosen
            .iter()
            .map(|&i| format!("{}:{}", entries[i].name, entries[i].arch))
            .collect();
        chosen.sort();
        let missing = selection.missing.iter().map(|m| m.what.clone()).collect();
        (chosen, missing)
    }

    #[test]
    fn multi_arch_basics() {
        let base = [
            entry("native-filler", "amd64", "", ""),
            entry("native-filler2", "amd64", "", ""),
            entry("native-filler3", "amd64", "", ""),
            entry("helper", "i386", "foreign", ""),
            entry("lib", "i386", "", ""),
            entry("tool", "i386", "allowed", ""),
            entry("plain", "i386", "", ""),
            entry("x", "amd64", "same", ""),
            entry("x", "i386", "same", ""),
        ];
        let with = |depends: &str| {
            let mut all = base.to_vec();
            all.push(entry("app", "amd64", "", depends));
            closure(&all, "app")
        };
        // A foreign-arch package satisfies an unqualified relation only if Multi-Arch: foreign.
        assert_eq!(with("helper").0, ["app:amd64", "helper:i386"]);
        assert_eq!(with("lib").1, ["lib"]);
        assert_eq!(with("lib:i386").0, ["app:amd64", "lib:i386"]);
        // `:any` also accepts Multi-Arch: allowed, not a plain package of another arch.
        assert_eq!(with("tool:any").0, ["app:amd64", "tool:i386"]);
        assert_eq!(with("plain:any").1, ["plain:any"]);
        // Unqualified and `:native` pick the dependent's / native architecture.
        assert_eq!(with("x").0, ["app:amd64", "x:amd64"]);
        assert_eq!(with("x:native").0, ["app:amd64", "x:amd64"]);
        assert_eq!(with("x:i386").0, ["app:amd64", "x:i386"]);
        // A requested name of another architecture than the native one is still found.
        assert_eq!(closure(&base, "plain").0, ["plain:i386"]);
    }
}
