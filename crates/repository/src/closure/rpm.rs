//! The dependency closure of requested RPMs over an rpm-md primary.
//!
//! Requirements are matched as rpm matches them (`rpmdsCompare`): a capability is provided by
//! a package's explicit Provides, its own `name = E:V-R`, or a file it lists; a versioned
//! requirement overlaps a provide's range, and an unversioned side always overlaps. File
//! requirements can only be resolved from the files primary lists (configuration files,
//! `bin/` paths, as createrepo_c selects them); dnf5 does the same by default, so a file
//! requirement outside them is reported as unresolved. `rpmlib(…)` requirements are rpm's
//! own features and need no package.
//!
//! Rich (boolean) dependencies are parsed into a tree and resolved greedily:
//! `and` needs every operand; `or` is satisfied by an operand already in the set, otherwise
//! the first operand that the repository can satisfy is added; `if`/`unless` add their
//! consequence when the condition holds (or does not) over the set chosen so far, and are
//! looked at again whenever the set grows; `else` branches are added when the condition says
//! so; `with` and `without` pick one package matching all operands (or the first and not
//! the second). Conflicts and Obsoletes do not pull packages in.
//!
//! Among several candidates the best architecture wins (the dependent's own, then `noarch`,
//! then any other), then the highest EVR.

use std::cmp::Ordering;
use std::collections::HashMap;

use super::version::{RangeSense, RpmEvr};
use super::{Missing, Selection, SubsetOptions};
use crate::rpmmd::{Dependency, Package};

const SENSE_LESS: u8 = 2;
const SENSE_GREATER: u8 = 4;
const SENSE_EQUAL: u8 = 8;

/// A simple capability requirement or provide: `name [op evr]`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Capability {
    name: String,
    /// Sense bits and version; `None` when unversioned.
    range: Option<(u8, RpmEvr)>,
}

impl Capability {
    fn from_dependency(dep: &Dependency) -> Capability {
        let sense = match dep.flags.as_deref() {
            Some("EQ") => SENSE_EQUAL,
            Some("LT") => SENSE_LESS,
            Some("GT") => SENSE_GREATER,
            Some("LE") => SENSE_LESS | SENSE_EQUAL,
            Some("GE") => SENSE_GREATER | SENSE_EQUAL,
            _ => 0,
        };
        let range =
            (sense != 0 && dep.version.as_deref().is_some_and(|v| !v.is_empty())).then(|| {
                (
                    sense,
                    RpmEvr {
                        epoch: dep.epoch.clone(),
                        version: dep.version.clone().unwrap_or_default(),
                        release: dep.release.clone().filter(|r| !r.is_empty()),
                    },
                )
            });
        Capability {
            name: dep.name.clone(),
            range,
        }
    }

    /// rpm's `rpmdsCompare` overlap of two ranges on the same name.
    fn overlaps(&self, other: &Capability) -> bool {
        let (Some((f1, v1)), Some((f2, v2))) = (&self.range, &other.range) else {
            return true;
        };
        let sense = match v1.range_sense(f1 & SENSE_EQUAL != 0, v2, f2 & SENSE_EQUAL != 0) {
            RangeSense::AlwaysOverlap => return true,
            RangeSense::Order(sense) => sense,
        };
        match sense {
            Ordering::Less => f1 & SENSE_GREATER != 0 || f2 & SENSE_LESS != 0,
            Ordering::Greater => f1 & SENSE_LESS != 0 || f2 & SENSE_GREATER != 0,
            Ordering::Equal => {
                (f1 & SENSE_EQUAL != 0 && f2 & SENSE_EQUAL != 0)
                    || (f1 & SENSE_LESS != 0 && f2 & SENSE_LESS != 0)
                    || (f1 & SENSE_GREATER != 0 && f2 & SENSE_GREATER != 0)
            }
        }
    }
}

impl std::fmt::Display for Capability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)?;
        if let Some((sense, evr)) = &self.range {
            let op = match *sense {
                SENSE_EQUAL => "=",
                SENSE_LESS => "<",
                SENSE_GREATER => ">",
                s if s == SENSE_LESS | SENSE_EQUAL => "<=",
                _ => ">=",
            };
            write!(f, " {op} {evr}")?;
        }
        Ok(())
    }
}

/// A parsed requirement: simple or rich.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Simple(Capability),
    And(Vec<Requirement>),
    Or(Vec<Requirement>),
    With(Vec<Requirement>),
    Without(Box<Requirement>, Box<Requirement>),
    If {
        then: Box<Requirement>,
        condition: Box<Requirement>,
        otherwise: Option<Box<Requirement>>,
    },
    Unless {
        then: Box<Requirement>,
        condition: Box<Requirement>,
        otherwise: Option<Box<Requirement>>,
    },
}

impl Requirement {
    fn has_condition(&self) -> bool {
        match self {
            Requirement::Simple(_) => false,
            Requirement::If { .. } | Requirement::Unless { .. } => true,
            Requirement::And(v) | Requirement::Or(v) | Requirement::With(v) => {
                v.iter().any(Requirement::has_condition)
            }
            Requirement::Without(a, b) => a.has_condition() || b.has_condition(),
        }
    }
}

/// Tokens of a rich dependency: parentheses and words.
fn tokenize(text: &str) -> Vec<&str> {
    let mut tokens = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        if c == '(' || c == ')' || c.is_whitespace() {
            if let Some(s) = start.take() {
                tokens.push(&text[s..i]);
            }
            if !c.is_whitespace() {
                tokens.push(&text[i..i + 1]);
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        tokens.push(&text[s..]);
    }
    tokens
}

const OPERATORS: [&str; 7] = ["and", "or", "if", "unless", "with", "without", "else"];

struct RichParser<'a> {
    tokens: Vec<&'a str>,
    at: usize,
}

impl<'a> RichParser<'a> {
    fn peek(&self) -> Option<&'a str> {
        self.tokens.get(self.at).copied()
    }

    fn next(&mut self) -> Option<&'a str> {
        let token = self.peek();
        self.at += 1;
        token
    }

    /// `( operand (op operand)* )`.
    fn group(&mut self) -> Result<Requirement, String> {
        if self.next() != Some("(") {
            return Err("expected `(`".into());
        }
        let first = self.operand()?;
        let mut op: Option<&str> = None;
        let mut operands = vec![first];
        let mut otherwise = None;
        loop {
            match self.next() {
                Some(")") => break,
                Some("else") if matches!(op, Some("if" | "unless")) && otherwise.is_none() => {
                    otherwise = Some(Box::new(self.operand()?));
                }
                Some(word) if OPERATORS.contains(&word) && word != "else" => {
                    if op.is_some_and(|o| o != word || matches!(o, "if" | "unless" | "without")) {
                        return Err(format!("cannot chain `{}` with `{word}`", op.unwrap_or("")));
                    }
                    op = Some(word);
                    operands.push(self.operand()?);
                }
                Some(word) => return Err(format!("unexpected `{word}`")),
                None => return Err("missing `)`".into()),
            }
        }
        let mut operands = operands.into_iter();
        let mut take = || operands.next().map(Box::new).ok_or("missing operand");
        Ok(match op {
            None => *take()?,
            Some("and") => Requirement::And(operands.collect()),
            Some("or") => Requirement::Or(operands.collect()),
            Some("with") => Requirement::With(operands.collect()),
            Some("without") => Requirement::Without(take()?, take()?),
            Some("if") => Requirement::If {
                then: take()?,
                condition: take()?,
                otherwise,
            },
            Some(_) => Requirement::Unless {
                then: take()?,
                condition: take()?,
                otherwise,
            },
        })
    }

    /// A nested group or `name [op evr]`.
    fn operand(&mut self) -> Result<Requirement, String> {
        match self.peek() {
            Some("(") => self.group(),
            Some(word) if word != ")" && !OPERATORS.contains(&word) => {
                self.at += 1;
                let sense = match self.peek() {
                    Some("=" | "==") => SENSE_EQUAL,
                    Some("<") => SENSE_LESS,
                    Some(">") => SENSE_GREATER,
                    Some("<=" | "=<") => SENSE_LESS | SENSE_EQUAL,
                    Some(">=" | "=>") => SENSE_GREATER | SENSE_EQUAL,
                    _ => 0,
                };
                let range = if sense != 0 {
                    self.at += 1;
                    let evr = self.next().ok_or("missing version")?;
                    Some((sense, RpmEvr::parse(evr)))
                } else {
                    None
                };
                Ok(Requirement::Simple(Capability {
                    name: word.to_owned(),
                    range,
                }))
            }
            Some(word) => Err(format!("unexpected `{word}`")),
            None => Err("unexpected end".into()),
        }
    }
}

fn parse_requirement(dep: &Dependency) -> Result<Requirement, String> {
    if !dep.name.starts_with('(') {
        return Ok(Requirement::Simple(Capability::from_dependency(dep)));
    }
    let mut parser = RichParser {
        tokens: tokenize(&dep.name),
        at: 0,
    };
    let requirement = parser.group()?;
    if parser.at != parser.tokens.len() {
        return Err("text after the closing `)`".into());
    }
    Ok(requirement)
}

/// Who provides what, over the whole repository.
struct Index<'a> {
    packages: &'a [Package],
    evrs: Vec<RpmEvr>,
    /// Capability name to (package, provided range).
    provides: HashMap<&'a str, Vec<(usize, Capability)>>,
    /// Path to the packages listing it in primary.
    files: HashMap<&'a str, Vec<usize>>,
    by_name: HashMap<&'a str, Vec<usize>>,
}

fn is_source(package: &Package) -> bool {
    matches!(package.arch.as_str(), "src" | "nosrc")
}

impl<'a> Index<'a> {
    fn new(packages: &'a [Package]) -> Index<'a> {
        let mut index = Index {
            packages,
            evrs: Vec::with_capacity(packages.len()),
            provides: HashMap::new(),
            files: HashMap::new(),
            by_name: HashMap::new(),
        };
        for (i, p) in packages.iter().enumerate() {
            let evr = RpmEvr {
                epoch: Some(p.epoch.to_string()),
                version: p.version.clone(),
                release: Some(p.release.clone()),
            };
            index.evrs.push(evr.clone());
            if is_source(p) {
                continue;
            }
            index.by_name.entry(&p.name).or_default().push(i);
            index.provides.entry(&p.name).or_default().push((
                i,
                Capability {
                    name: p.name.clone(),
                    range: Some((SENSE_EQUAL, evr)),
                },
            ));
            for dep in &p.provides {
                index
                    .provides
                    .entry(&dep.name)
                    .or_default()
                    .push((i, Capability::from_dependency(dep)));
            }
            for file in &p.files {
                index.files.entry(&file.path).or_default().push(i);
            }
        }
        index
    }

    /// Every package providing `capability`.
    fn candidates(&self, capability: &Capability) -> Vec<usize> {
        let mut out: Vec<usize> = self
            .provides
            .get(capability.name.as_str())
            .into_iter()
            .flatten()
            .filter(|(_, provided)| provided.overlaps(capability))
            .map(|(i, _)| *i)
            .collect();
        if capability.name.starts_with('/') {
            out.extend(
                self.files
                    .get(capability.name.as_str())
                    .into_iter()
                    .flatten(),
            );
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    fn arch_rank(&self, candidate: usize, wanted_arch: &str) -> u8 {
        let arch = self.packages[candidate].arch.as_str();
        if arch == wanted_arch {
            0
        } else if arch == "noarch" {
            1
        } else {
            2
        }
    }

    /// The best of `candidates` for a dependent of `wanted_arch`: best architecture, then
    /// highest EVR, then the lowest index (primary order) for a stable choice.
    fn best(&self, candidates: &[usize], wanted_arch: &str) -> Option<usize> {
        candidates.iter().copied().min_by(|&a, &b| {
            self.arch_rank(a, wanted_arch)
                .cmp(&self.arch_rank(b, wanted_arch))
                .then_with(|| self.evrs[b].compare(&self.evrs[a]))
                .then_with(|| a.cmp(&b))
        })
    }
}

struct Resolver<'a> {
    index: Index<'a>,
    selected: Vec<bool>,
    order: Vec<usize>,
    missing: Vec<Missing>,
    native_arch: String,
}

impl Resolver<'_> {
    /// The architecture a package's dependencies prefer: its own, or the native one for
    /// `noarch`.
    fn dependent_arch(&self, package: &Package) -> String {
        if package.arch == "noarch" {
            self.native_arch.clone()
        } else {
            package.arch.clone()
        }
    }

    fn add(&mut self, package: usize, queue: &mut Vec<usize>) {
        if !self.selected[package] {
            self.selected[package] = true;
            self.order.push(package);
            queue.push(package);
        }
    }

    fn satisfied(&self, requirement: &Requirement) -> bool {
        match requirement {
            Requirement::Simple(c) => self.index.candidates(c).iter().any(|&i| self.selected[i]),
            Requirement::And(all) => all.iter().all(|r| self.satisfied(r)),
            Requirement::Or(any) => any.iter().any(|r| self.satisfied(r)),
            Requirement::With(_) | Requirement::Without(..) => self
                .package_candidates(requirement)
                .is_some_and(|c| c.iter().any(|&i| self.selected[i])),
            Requirement::If {
                then,
                condition,
                otherwise,
            } => {
                if self.satisfied(condition) {
                    self.satisfied(then)
                } else {
                    otherwise.as_ref().is_none_or(|o| self.satisfied(o))
                }
            }
            Requirement::Unless {
                then,
                condition,
                otherwise,
            } => {
                if self.satisfied(condition) {
                    otherwise.as_ref().is_none_or(|o| self.satisfied(o))
                } else {
                    self.satisfied(then)
                }
            }
        }
    }

    /// The packages that on their own satisfy a `with`/`without`/simple requirement.
    fn package_candidates(&self, requirement: &Requirement) -> Option<Vec<usize>> {
        match requirement {
            Requirement::Simple(c) => Some(self.index.candidates(c)),
            Requirement::With(all) => {
                let mut sets = all.iter().map(|r| self.package_candidates(r));
                let mut out = sets.next()??;
                for set in sets {
                    let set = set?;
                    out.retain(|i| set.contains(i));
                }
                Some(out)
            }
            Requirement::Without(a, b) => {
                let mut out = self.package_candidates(a)?;
                let not = self.package_candidates(b)?;
                out.retain(|i| !not.contains(i));
                Some(out)
            }
            Requirement::Or(any) => {
                let mut out = Vec::new();
                for r in any {
                    out.extend(self.package_candidates(r)?);
                }
                Some(out)
            }
            _ => None,
        }
    }

    /// Whether the repository could satisfy `requirement` at all.
    fn resolvable(&self, requirement: &Requirement) -> bool {
        match requirement {
            Requirement::And(all) => all.iter().all(|r| self.resolvable(r)),
            Requirement::Or(any) => any.iter().any(|r| self.resolvable(r)),
            Requirement::If { then, .. } | Requirement::Unless { then, .. } => {
                self.resolvable(then)
            }
            other => self
                .package_candidates(other)
                .is_some_and(|c| !c.is_empty()),
        }
    }

    /// Adds what `requirement` of `dependent` needs; returns what could not be found.
    fn require(
        &mut self,
        requirement: &Requirement,
        arch: &str,
        queue: &mut Vec<usize>,
    ) -> Result<(), String> {
        if self.satisfied(requirement) {
            return Ok(());
        }
        match requirement {
            Requirement::And(all) => {
                let mut failed = Vec::new();
                for r in all {
                    if let Err(e) = self.require(r, arch, queue) {
                        failed.push(e);
                    }
                }
                if failed.is_empty() {
                    Ok(())
                } else {
                    Err(failed.join(", "))
                }
            }
            Requirement::Or(any) => match any.iter().find(|r| self.resolvable(r)) {
                Some(first) => self.require(first, arch, queue),
                None => Err(describe(requirement)),
            },
            Requirement::If {
                then,
                condition,
                otherwise,
            } => {
                if self.satisfied(condition) {
                    self.require(then, arch, queue)
                } else if let Some(o) = otherwise {
                    self.require(o, arch, queue)
                } else {
                    Ok(())
                }
            }
            Requirement::Unless {
                then,
                condition,
                otherwise,
            } => {
                if !self.satisfied(condition) {
                    self.require(then, arch, queue)
                } else if let Some(o) = otherwise {
                    self.require(o, arch, queue)
                } else {
                    Ok(())
                }
            }
            simple_or_with => {
                let candidates = self.package_candidates(simple_or_with).unwrap_or_default();
                match self.index.best(&candidates, arch) {
                    Some(best) => {
                        self.add(best, queue);
                        Ok(())
                    }
                    None => Err(describe(requirement)),
                }
            }
        }
    }
}

fn describe(requirement: &Requirement) -> String {
    match requirement {
        Requirement::Simple(c) => c.to_string(),
        Requirement::And(v) => join(v, "and"),
        Requirement::Or(v) => join(v, "or"),
        Requirement::With(v) => join(v, "with"),
        Requirement::Without(a, b) => format!("({} without {})", describe(a), describe(b)),
        Requirement::If {
            then, condition, ..
        } => format!("({} if {})", describe(then), describe(condition)),
        Requirement::Unless {
            then, condition, ..
        } => format!("({} unless {})", describe(then), describe(condition)),
    }
}

fn join(parts: &[Requirement], op: &str) -> String {
    let parts: Vec<String> = parts.iter().map(describe).collect();
    format!("({})", parts.join(&format!(" {op} ")))
}

fn nevra(p: &Package) -> String {
    let epoch = if p.epoch != 0 {
        format!("{}:", p.epoch)
    } else {
        String::new()
    };
    format!("{}-{epoch}{}-{}.{}", p.name, p.version, p.release, p.arch)
}

/// Resolves `requested` (names, provides or paths; `name.arch` picks an architecture) and
/// their closure over `packages`. Returns the chosen packages (indexes into `packages`, in
/// the order they were added) and what could not be resolved.
pub fn resolve_rpm(
    packages: &[Package],
    requested: &[String],
    options: &SubsetOptions,
) -> Selection {
    let index = Index::new(packages);
    let native_arch = most_common_arch(packages);
    let mut resolver = Resolver {
        selected: vec![false; packages.len()],
        index,
        order: Vec::new(),
        missing: Vec::new(),
        native_arch,
    };
    let mut queue = Vec::new();
    for name in requested {
        match pick_requested(&resolver, name) {
            Some(i) => resolver.add(i, &mut queue),
            None => resolver.missing.push(Missing {
                needed_by: None,
                what: name.clone(),
            }),
        }
    }
    // Parsed once per package, on first visit.
    let mut conditional: Vec<(usize, Requirement, bool)> = Vec::new();
    loop {
        while let Some(package) = queue.pop() {
            let p = &packages[package];
            let arch = resolver.dependent_arch(p);
            let weak = if options.with_recommends {
                p.recommends.as_slice()
            } else {
                &[]
            };
            for (dep, strong) in p
                .requires
                .iter()
                .map(|d| (d, true))
                .chain(weak.iter().map(|d| (d, false)))
            {
                if dep.name.starts_with("rpmlib(") {
                    continue;
                }
                let requirement = match parse_requirement(dep) {
                    Ok(r) => r,
                    Err(reason) => {
                        if strong {
                            resolver.missing.push(Missing {
                                needed_by: Some(nevra(p)),
                                what: format!("{} (unparsable: {reason})", dep.name),
                            });
                        }
                        continue;
                    }
                };
                if requirement.has_condition() {
                    conditional.push((package, requirement.clone(), strong));
                }
                if let Err(what) = resolver.require(&requirement, &arch, &mut queue)
                    && strong
                {
                    let what = if what.starts_with('/') {
                        format!("{what} (a file not listed in primary)")
                    } else {
                        what
                    };
                    resolver.missing.push(Missing {
                        needed_by: Some(nevra(p)),
                        what,
                    });
                }
            }
        }
        // A condition may have become true as the set grew.
        for (package, requirement, strong) in &conditional {
            let p = &packages[*package];
            let arch = resolver.dependent_arch(p);
            if let Err(what) = resolver.require(requirement, &arch, &mut queue)
                && *strong
            {
                let missing = Missing {
                    needed_by: Some(nevra(p)),
                    what,
                };
                if !resolver.missing.contains(&missing) {
                    resolver.missing.push(missing);
                }
            }
        }
        if queue.is_empty() {
            break;
        }
    }
    Selection {
        chosen: resolver.order,
        missing: resolver.missing,
    }
}

fn most_common_arch(packages: &[Package]) -> String {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for p in packages {
        if !is_source(p) && p.arch != "noarch" {
            *counts.entry(&p.arch).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(a.0)))
        .map_or_else(|| std::env::consts::ARCH.to_owned(), |(a, _)| a.to_owned())
}

fn pick_requested(resolver: &Resolver<'_>, name: &str) -> Option<usize> {
    let index = &resolver.index;
    let arch = resolver.native_arch.as_str();
    if let Some(found) = index.by_name.get(name) {
        return index.best(found, arch);
    }
    if let Some((base, wanted)) = name.rsplit_once('.')
        && let Some(found) = index.by_name.get(base)
    {
        let of_arch: Vec<usize> = found
            .iter()
            .copied()
            .filter(|&i| index.packages[i].arch == wanted)
            .collect();
        if !of_arch.is_empty() {
            return index.best(&of_arch, wanted);
        }
    }
    let capability = Capability {
        name: name.to_owned(),
        range: None,
    };
    index.best(&index.candidates(&capability), arch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dep(name: &str) -> Dependency {
        Dependency {
            name: name.into(),
            ..Dependency::default()
        }
    }

    #[test]
    fn parses_rich_dependencies() {
        let r = parse_requirement(&dep("(a >= 1.0 or (b if c else d))")).unwrap();
        assert_eq!(describe(&r), "(a >= 1.0 or (b if c))");
        assert!(r.has_condition());
        let r = parse_requirement(&dep("(a with b without c)"));
        assert!(r.is_err());
        let r = parse_requirement(&dep("(a and b and c)")).unwrap();
        assert!(matches!(r, Requirement::And(v) if v.len() == 3));
        assert!(parse_requirement(&dep("(a or b")).is_err());
        assert!(parse_requirement(&dep("(a or b) c")).is_err());
    }

    #[test]
    fn overlap_follows_rpm() {
        let cap = |text: &str| -> Capability {
            match parse_requirement(&dep(&format!("({text})"))).unwrap() {
                Requirement::Simple(c) => c,
                other => panic!("{other:?}"),
            }
        };
        assert!(cap("a >= 1.0").overlaps(&cap("a = 1.0-3")));
        assert!(!cap("a > 1.0").overlaps(&cap("a = 1.0-3")));
        assert!(cap("a > 1.0-1").overlaps(&cap("a = 1.0-3")));
        assert!(!cap("a < 0.5").overlaps(&cap("a = 1.0-3")));
        assert!(cap("a < 1:0.5").overlaps(&cap("a = 1.0-3")));
        assert!(cap("a >= 1.0~rc1").overlaps(&cap("a = 1.0~rc2-1")));
        assert!(cap("a >= 2").overlaps(&cap("a")));
        assert!(cap("a < 1").overlaps(&cap("a < 2")));
        // rpmverOverlap: equal versions, one release missing, `=` on the side without one.
        assert!(cap("a <= 1.0").overlaps(&cap("a = 1.0-3")));
        assert!(!cap("a < 1.0").overlaps(&cap("a = 1.0-3")));
        assert!(cap("a = 1.0-3").overlaps(&cap("a = 1.0")));
        assert!(!cap("a = 1.0-3").overlaps(&cap("a = 1.0-4")));
        // An epoch on one side only counts when it is above 0.
        assert!(cap("a = 0:1.0").overlaps(&cap("a = 1.0")));
        assert!(!cap("a = 1:1.0").overlaps(&cap("a = 1.0")));
    }
}
