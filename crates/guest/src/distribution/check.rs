//! What a distribution's values may be, written by `vdistro add` or read back from a registered
//! directory.
//!
//! Every value lands in a file that a package manager parses line by line: `distribution.toml`,
//! `yum.repos.d/ID.repo`, `pkgs/NN`, `rpm/macros`, `apt/sources.list`; builds copy the repository
//! files, the macros and the sources into each guest's package state (`.pkg/G/yum/etc`,
//! `.pkg/G/rpm/etc/macros`, `.pkg/G/apt/etc`). A line break inside a value adds lines nobody
//! wrote: `--repo 'base=file:///x\n[evil]\nbaseurl=…'` would register a second repository. So:
//!
//! - a one-line value holds no control character at all ([`has_control`], the rule apt sources
//!   always had), nor the Unicode line and paragraph separators;
//! - each value also has the syntax of what it is: a dnf repository id, a URL with a scheme, an
//!   rpm or dpkg package name, a release version, an architecture from a fixed list per family;
//! - a multi-line file (`pkgs/NN`, `rpm/macros`, a `.repo` file, `sources.list`) may hold line
//!   feeds and tabs and no other control character (a carriage return included: dnf, rpm and apt
//!   would each read it differently), and each of its lines has the shape the file's reader
//!   expects.
//!
//! The same checks run when a registered directory is read back, so that a hand-edited or old
//! file cannot inject into the files builds write either; the built-in distributions pass them
//! too (a unit test).
//!
//! # rpm macros
//!
//! Macros are code for rpm, given by the administrator. The check keeps the file's structure and
//! what the confinement of package operations relies on, not a sandbox for the macro language:
//!
//! - every line is blank, a `#` comment, a definition `%NAME BODY` or `%NAME(OPTIONS) BODY`
//!   (NAME as rpm's macro files allow it: a letter or `_`, then letters, digits and `_`, at
//!   least three characters), or the continuation of a line ending in `\`;
//! - no definition of what vserver itself sets for every guest or what makes rpm load code:
//!   `%_dbpath…` (the database must stay at the guest's `/.rpmdb`, outside the guest's reach),
//!   `%_netsharedpath` (paths rpm never writes into a guest), `%__plugindir` and
//!   `%__transaction_*` (rpm loads a plugin library from these; the vserver plugin confines the
//!   scriptlets). The distribution's macros follow the generated ones in the guest's macros
//!   file, so a definition there would replace them;
//! - nowhere (comments included: rpm joins a line with open braces to the next one) the
//!   built-ins that run commands or define macros when expanded, which would get round the
//!   rule above: `%(…)` (a shell), `%{lua:…}`, `%{expand:…}` (expands again what `%%`
//!   escaped), `%{load:…}` (reads an unchecked file), `%define`, `%global`, `%undefine`.

use std::path::Path;

use vserver_pkgmgmt::Family;

use super::PackageEntry;
use crate::error::{Error, FieldError};

/// dnf's `$basearch` for each architecture rpm distributions are built for: the value is only
/// used as `$basearch` (`--setopt=basearch=`), which is `i386` on i686 and `armhfp` on armv7hl.
pub(crate) const RPM_ARCHES: &[&str] = &[
    "x86_64", "aarch64", "i386", "armhfp", "ppc64le", "s390x", "riscv64",
];

/// dpkg's names of the architectures Debian and Ubuntu release for.
pub(crate) const DEB_ARCHES: &[&str] = &[
    "amd64", "arm64", "i386", "armhf", "armel", "ppc64el", "s390x", "riscv64", "mips64el",
];

/// Macro names a distribution may not define (see the module documentation).
const PROTECTED_MACROS: &[&str] = &["_netsharedpath", "__plugindir"];
/// Prefixes of macro names a distribution may not define: `%_dbpath`, `%_dbpath_rebuild`;
/// `%__transaction_NAME` loads plugin NAME.
const PROTECTED_MACRO_PREFIXES: &[&str] = &["_dbpath", "__transaction_"];
/// rpm built-ins that run code or define macros when expanded (`%(` is checked on its own).
const FORBIDDEN_BUILTINS: &[&str] = &["lua", "expand", "load", "define", "global", "undefine"];

/// Why a value was refused: what it is, the value itself and what would be allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    field: String,
    value: String,
    allowed: String,
}

/// The result of a check.
pub(crate) type Checked<T = ()> = Result<T, Refusal>;

impl Refusal {
    /// The error for distribution `name`; `path` is the registered file the value was read
    /// from, none for a value given to `vdistro add`.
    pub(crate) fn into_error(self, name: &str, path: Option<&Path>) -> Error {
        Error::InvalidField(Box::new(FieldError {
            name: name.to_owned(),
            field: self.field,
            value: self.value,
            allowed: self.allowed,
            path: path.map(Path::to_owned),
        }))
    }

    /// The error for guest `guest`; `path` is its configuration file when the value was read
    /// from it, none for a value given to a build.
    pub(crate) fn into_guest_error(self, guest: &str, path: Option<&Path>) -> Error {
        let file = path
            .map(|p| format!(" in `{}`", p.display()))
            .unwrap_or_default();
        Error::BadRequest {
            guest: guest.to_owned(),
            problem: format!(
                "invalid {} {:?}{file}: {}",
                self.field, self.value, self.allowed
            ),
        }
    }

    /// The field's name (for tests).
    #[cfg(test)]
    pub(crate) fn field(&self) -> &str {
        &self.field
    }
}

fn refuse<T>(field: impl Into<String>, value: &str, allowed: impl Into<String>) -> Checked<T> {
    Err(Refusal {
        field: field.into(),
        value: value.to_owned(),
        allowed: allowed.into(),
    })
}

/// Whether `value` holds a control character (line feed, carriage return, NUL, tab, escape,
/// DEL, C1 controls) or a Unicode line or paragraph separator, which some line readers also
/// split on. The one test behind every check of this module.
pub(crate) fn has_control(value: &str) -> bool {
    value.contains(|c: char| c.is_control() || c == '\u{2028}' || c == '\u{2029}')
}

/// A value that must stay on one line (descriptions, list entries…).
pub(crate) fn one_line(field: &str, value: &str) -> Checked {
    if has_control(value) {
        return refuse(field, value, "one line without control characters");
    }
    Ok(())
}

/// Each line of a multi-line file: no control character but the line feeds between the lines
/// and tabs as blanks. Returns the lines, numbered from 1.
fn file_lines<'a>(what: &str, text: &'a str) -> Checked<Vec<(usize, &'a str)>> {
    let lines: Vec<(usize, &str)> = text
        .split('\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .collect();
    for (number, line) in &lines {
        if has_control(&line.replace('\t', " ")) {
            return refuse(
                format!("{what} line {number}"),
                line,
                "lines without control characters other than tabs (no carriage returns)",
            );
        }
    }
    Ok(lines)
}

/// A word of an apt source line, now also a repository URL: printable ASCII without brackets
/// (apt's option syntax), quotes or `#` (a comment).
fn plain_word(word: &str) -> bool {
    !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_graphic() && !"[]#\"'".contains(c))
}

/// Whether `url` starts with a URL scheme (`http:`, `file:`, `mirror+https:`).
fn has_scheme(url: &str) -> bool {
    url.split_once(':').is_some_and(|(scheme, _)| {
        scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
    })
}

const URL_ALLOWED: &str = "one URL with a scheme (http:, https:, file:): printable ASCII without \
                           spaces, brackets, quotes or `#`";

/// A repository's base URL.
pub(crate) fn url(field: &str, value: &str) -> Checked {
    if has_control(value) || !plain_word(value) || !has_scheme(value) {
        return refuse(field, value, URL_ALLOWED);
    }
    Ok(())
}

/// The words of an apt source after `deb` and its options: URL SUITE [COMPONENT…].
fn source_words_ok(words: &[&str]) -> bool {
    matches!(words, [url, _suite, ..] if has_scheme(url)) && words.iter().all(|w| plain_word(w))
}

const SOURCE_ALLOWED: &str = "`URL SUITE [COMPONENT...]` on one line, the URL with a scheme \
                              (http:, https:, file:), no brackets, quotes or `#`";

/// The words of an apt source as `vdistro add --apt-source` takes it.
#[derive(Debug)]
pub(crate) struct AptSource<'a> {
    pub(crate) url: &'a str,
    pub(crate) suite: &'a str,
    pub(crate) components: Vec<&'a str>,
}

/// An apt source as `vdistro add --apt-source` takes it: `URL SUITE [COMPONENT…]`. A line break
/// or an option bracket would let the registration smuggle in other sources or options.
pub(crate) fn apt_source(source: &str) -> Checked<AptSource<'_>> {
    let words: Vec<&str> = source.split_whitespace().collect();
    match words.as_slice() {
        [url, suite, components @ ..] if !has_control(source) && source_words_ok(&words) => {
            Ok(AptSource {
                url,
                suite,
                components: components.to_vec(),
            })
        }
        _ => refuse("apt source", source, SOURCE_ALLOWED),
    }
}

/// A registered `sources.list`: one-line sources `deb [OPTIONS] URL SUITE [COMPONENT…]` (or
/// `deb-src`), comments and blank lines. The options are `KEY=VALUE` words (`signed-by=…`,
/// `arch=…`, `trusted=yes`), as apt's one-line format has them.
pub(crate) fn sources_list(text: &str) -> Checked {
    for (number, line) in file_lines("apt/sources.list", text)? {
        let field = || format!("apt source on line {number}");
        let words: Vec<&str> = line.split_whitespace().collect();
        let rest = match words.split_first() {
            None => continue,
            Some((first, _)) if first.starts_with('#') => continue,
            Some((&("deb" | "deb-src"), rest)) => rest,
            Some(_) => {
                return refuse(
                    field(),
                    line,
                    "`deb [OPTIONS] URL SUITE [COMPONENT...]`, a `#` comment or a blank line",
                );
            }
        };
        let rest = match rest.first() {
            Some(first) if first.starts_with('[') => {
                let Some(end) = rest.iter().position(|w| w.ends_with(']')) else {
                    return refuse(field(), line, "options closed by `]`");
                };
                let options = rest[..=end].join(" ");
                let options = options.trim_start_matches('[').trim_end_matches(']');
                let option_ok = |o: &str| {
                    o.split_once('=').is_some_and(|(key, value)| {
                        let key = key.trim_end_matches(['+', '-']);
                        !key.is_empty()
                            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                            && plain_word(value)
                    })
                };
                if !options.split_whitespace().all(option_ok) {
                    return refuse(
                        field(),
                        line,
                        "options `[KEY=VALUE ...]` of printable ASCII",
                    );
                }
                &rest[end + 1..]
            }
            _ => rest,
        };
        if !source_words_ok(rest) {
            return refuse(field(), line, SOURCE_ALLOWED);
        }
    }
    Ok(())
}

/// A distribution's one-line description.
pub(crate) fn description(value: &str) -> Checked {
    one_line("description", value)
}

/// A release version (`$releasever`): it becomes part of repository URLs and paths, so no
/// `/` and no leading `.`. Empty: not set.
pub(crate) fn releasever(value: &str) -> Checked {
    let ok = value.is_empty()
        || (value.len() <= 64
            && value.starts_with(|c: char| c.is_ascii_alphanumeric())
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._+~-".contains(c)));
    if !ok {
        return refuse(
            "release version",
            value,
            "letters, digits and `._+~-`, starting with a letter or digit, at most 64 characters",
        );
    }
    Ok(())
}

/// An architecture, one of the family's list. Empty: the host's.
pub(crate) fn arch(family: Family, value: &str) -> Checked {
    let known = match family {
        Family::Rpm => RPM_ARCHES,
        Family::Deb => DEB_ARCHES,
    };
    if !value.is_empty() && !known.contains(&value) {
        return refuse(
            "architecture",
            value,
            format!(
                "one of {} for the {} family, or none for the host's",
                known.join(", "),
                family.as_str()
            ),
        );
    }
    Ok(())
}

/// A dnf repository id: the characters dnf allows in one (letters, digits, `-_.:`), not
/// starting with `.` (`ID.repo` would be a hidden file, not read back).
pub(crate) fn repo_id(value: &str) -> Checked {
    let ok = !value.is_empty()
        && value.len() <= 128
        && !value.starts_with('.')
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c));
    if !ok {
        return refuse(
            "repository id",
            value,
            "letters, digits and `-_.:` (dnf's repository id characters), not starting with `.`",
        );
    }
    Ok(())
}

/// The name of a registered repository file: `ID.repo`.
pub(crate) fn repo_file_name(value: &str) -> Checked {
    match value.strip_suffix(".repo") {
        Some(id) if repo_id(id).is_ok() => Ok(()),
        _ => refuse(
            "repository file name",
            value,
            "`ID.repo`, ID of letters, digits and `-_.:`, not starting with `.`",
        ),
    }
}

/// A registered dnf repository file, copied as it is into every guest's `yum.repos.d`: blank
/// lines, `#` or `;` comments, `[ID]` sections, `KEY=VALUE` options and indented continuation
/// lines of a value.
pub(crate) fn repo_file(text: &str) -> Checked {
    let mut after_option = false;
    for (number, line) in file_lines("repository file", text)? {
        let field = || format!("repository file line {number}");
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with(['#', ';']) {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if after_option {
                continue;
            }
            return refuse(
                field(),
                line,
                "no indented line but the continuation of a value",
            );
        }
        if let Some(section) = trimmed.strip_prefix('[') {
            match section.strip_suffix(']') {
                Some(id) if repo_id(id).is_ok() => {
                    after_option = false;
                    continue;
                }
                _ => {
                    return refuse(
                        field(),
                        line,
                        "a section `[ID]`, ID of letters, digits and `-_.:`",
                    );
                }
            }
        }
        let key_ok = trimmed.split_once('=').is_some_and(|(key, _)| {
            let key = key.trim_end();
            !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        });
        if !key_ok {
            return refuse(
                field(),
                line,
                "`KEY=VALUE`, `[ID]`, an indented continuation, a comment or a blank line",
            );
        }
        after_option = true;
    }
    Ok(())
}

/// rpm's package names: the characters rpmbuild allows in a `Name:` (letters, digits and
/// `._+-`), starting with a letter or digit, so that a name never reads as an option of the
/// `dnf install` it is given to.
fn rpm_package_name(name: &str) -> bool {
    name.len() <= 255
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c))
}

/// A package name of `family` (rpm's, or dpkg's as pkgmgmt checks it in a status file).
pub(crate) fn package_name(family: Family, name: &str) -> Checked {
    let (ok, allowed) = match family {
        Family::Rpm => (
            rpm_package_name(name),
            "an rpm package name: letters, digits and `._+-`, starting with a letter or digit",
        ),
        Family::Deb => (
            vserver_pkgmgmt::mode::valid_package_name(name),
            "a Debian package name: lower-case letters, digits and `+-.`, starting with a \
             letter or digit, at least two characters",
        ),
    };
    if !ok {
        return refuse("package name", name, allowed);
    }
    Ok(())
}

/// One line of a package list: package names, each optionally after `--can-fail` or written
/// `?NAME` (the same), separated by blanks. The caller has checked the line for control
/// characters and removed comments.
pub(crate) fn package_line(family: Family, line: &str) -> Checked<Vec<PackageEntry>> {
    let mut entries = Vec::new();
    let mut can_fail = false;
    for word in line.split_whitespace() {
        if word == "--can-fail" && !can_fail {
            can_fail = true;
            continue;
        }
        let (name, optional) = match word.strip_prefix('?') {
            Some(name) => (name, true),
            None => (word, false),
        };
        package_name(family, name)?;
        entries.push(PackageEntry {
            name: name.to_owned(),
            can_fail: can_fail || optional,
        });
        can_fail = false;
    }
    if can_fail {
        return refuse(
            "package list line",
            line,
            "`--can-fail` followed by a package name",
        );
    }
    Ok(entries)
}

/// A registered package list `pkgs/NN`: lines of [`package_line`], `#` starting a comment.
pub(crate) fn package_list_file(family: Family, text: &str) -> Checked<Vec<PackageEntry>> {
    let mut entries = Vec::new();
    for (_, line) in file_lines("package list", text)? {
        let line = line.split('#').next().unwrap_or_default();
        entries.extend(package_line(family, line)?);
    }
    Ok(entries)
}

/// The name of a package list (`pkgs/NN`) or of a public key file: a plain file name.
pub(crate) fn file_name(field: &str, value: &str) -> Checked {
    let ok = value.len() <= 255
        && value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c));
    if !ok {
        return refuse(
            field,
            value,
            "a file name of letters, digits and `._+-`, starting with a letter or digit",
        );
    }
    Ok(())
}

/// Whether `name` is a macro name rpm's macro files accept (rpm 4.x's `validName`; at least
/// three characters, which every rpm 4 version takes).
fn macro_name(name: &str) -> bool {
    name.len() >= 3
        && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The first built-in of [`FORBIDDEN_BUILTINS`] or `%(` in `line`, if any; `%%` is an escaped
/// `%` and starts nothing.
fn forbidden_expansion(line: &str) -> Option<String> {
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            i += 1;
            continue;
        }
        match bytes.get(i + 1) {
            Some(b'%') => {
                i += 2;
                continue;
            }
            Some(b'(') => return Some("%(".into()),
            _ => {}
        }
        // `%name`, `%{name…}`, `%?name`, `%{!?name:…}`: the name after the flags.
        let name: String = line[i + 1..]
            .trim_start_matches(['{', '?', '!'])
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if FORBIDDEN_BUILTINS.contains(&name.as_str()) {
            return Some(format!("%{name}"));
        }
        i += 1;
    }
    None
}

/// A distribution's rpm macros (see the module documentation for the rule and why).
pub(crate) fn macros(text: &str) -> Checked {
    let mut continued = false;
    for (number, line) in file_lines("rpm macros", text)? {
        let field = || format!("rpm macros line {number}");
        if let Some(found) = forbidden_expansion(line) {
            return refuse(
                field(),
                line,
                format!(
                    "no `{found}`: macros may not run commands or define macros when expanded \
                     (`%(`, lua, expand, load, define, global, undefine)"
                ),
            );
        }
        let was_continued = std::mem::replace(&mut continued, line.ends_with('\\'));
        let trimmed = line.trim_start();
        if was_continued || trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let name = trimmed.strip_prefix('%').and_then(|rest| {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            let (name, after) = rest.split_at(end);
            let ends = after.is_empty() || after.starts_with([' ', '\t', '(']);
            (macro_name(name) && ends).then_some(name)
        });
        let Some(name) = name else {
            return refuse(
                field(),
                line,
                "a definition `%NAME BODY` (NAME: a letter or `_`, then letters, digits, `_`; \
                 at least 3 characters), a `#` comment, a blank line or the continuation of a \
                 line ending in `\\`",
            );
        };
        if PROTECTED_MACROS.contains(&name)
            || PROTECTED_MACRO_PREFIXES.iter().any(|p| name.starts_with(p))
        {
            return refuse(
                field(),
                line,
                format!(
                    "not `%{name}`: vserver sets `%_dbpath` and `%_netsharedpath` for every \
                     guest, and `%__plugindir` and `%__transaction_*` load code into rpm"
                ),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line feed, a carriage return, a NUL, other controls (tab, escape, DEL, a C1 control)
    /// and the Unicode line separator, each inside an otherwise valid value.
    fn hostile(valid: &str) -> Vec<String> {
        ["\n", "\r", "\0", "\t", "\x1b", "\x7f", "\u{85}", "\u{2028}"]
            .iter()
            .flat_map(|c| {
                [
                    format!("{valid}{c}"),
                    format!("{c}{valid}"),
                    format!("{}{c}{}", &valid[..1], &valid[1..]),
                ]
            })
            .collect()
    }

    type Check = Box<dyn Fn(&str) -> Checked>;

    #[test]
    fn every_one_line_field_refuses_control_characters() {
        let checks: Vec<(&str, &str, Check)> = vec![
            ("description", "Local Fedora", Box::new(description)),
            ("release version", "41", Box::new(releasever)),
            ("architecture", "x86_64", Box::new(|v| arch(Family::Rpm, v))),
            ("architecture", "amd64", Box::new(|v| arch(Family::Deb, v))),
            ("repository id", "base", Box::new(repo_id)),
            (
                "repository URL",
                "file:///srv/m",
                Box::new(|v| url("repository URL", v)),
            ),
            (
                "repository file name",
                "base.repo",
                Box::new(repo_file_name),
            ),
            (
                "package name",
                "bash",
                Box::new(|v| package_name(Family::Rpm, v)),
            ),
            (
                "package name",
                "bash",
                Box::new(|v| package_name(Family::Deb, v)),
            ),
            (
                "public key file name",
                "RPM-GPG-KEY",
                Box::new(|v| file_name("public key file name", v)),
            ),
            (
                "package list name",
                "01",
                Box::new(|v| file_name("package list name", v)),
            ),
            (
                "package list",
                "bash ?vim",
                Box::new(|v| one_line("package list", v)),
            ),
            (
                "apt source",
                "http://example.org/debian bookworm main",
                Box::new(|v| apt_source(v).map(drop)),
            ),
        ];
        for (field, valid, check) in &checks {
            assert_eq!(check(valid), Ok(()), "{field}: {valid:?}");
            for value in hostile(valid) {
                let refusal = check(&value).expect_err(&value);
                assert_eq!(refusal.field(), *field, "{value:?}");
                assert_eq!(refusal.value, value);
            }
        }
    }

    #[test]
    fn the_newline_repository_of_the_review_is_refused() {
        let refusal = url("repository URL", "file:///x\n[evil]\nbaseurl=file:///etc").unwrap_err();
        let error = refusal.into_error("local", None);
        assert_eq!(
            error.to_string(),
            format!(
                "distribution `local`: invalid repository URL \
                 \"file:///x\\n[evil]\\nbaseurl=file:///etc\": {URL_ALLOWED}"
            )
        );
        assert!(!error.to_string().contains('\n'));
    }

    #[test]
    fn arch_comes_from_the_family_list() {
        for a in RPM_ARCHES {
            assert_eq!(arch(Family::Rpm, a), Ok(()));
        }
        for a in DEB_ARCHES {
            assert_eq!(arch(Family::Deb, a), Ok(()));
        }
        assert_eq!(arch(Family::Rpm, ""), Ok(()));
        for bad in [
            "..",
            "../x",
            "/",
            "x86_64/..",
            "x86_64/../../etc",
            "amd64",
            "X86_64",
            " ",
        ] {
            assert!(arch(Family::Rpm, bad).is_err(), "{bad:?}");
        }
        for bad in ["..", "../x", "/", "amd64/", "x86_64", "AMD64"] {
            assert!(arch(Family::Deb, bad).is_err(), "{bad:?}");
        }
        let message = arch(Family::Deb, "../x")
            .unwrap_err()
            .into_error("d", None)
            .to_string();
        assert!(message.contains("\"../x\""), "{message}");
        assert!(message.contains("amd64, arm64"), "{message}");
    }

    #[test]
    fn names_ids_and_versions_have_their_syntax() {
        for good in ["base", "fedora-updates", "my_repo.2", "copr:user:proj"] {
            assert_eq!(repo_id(good), Ok(()), "{good}");
        }
        for bad in ["", ".hidden", "..", "a/b", "a b", "[evil]", "a=b", "ä"] {
            assert!(repo_id(bad).is_err(), "{bad:?}");
        }
        for good in ["", "41", "9.5", "rawhide", "22.04", "10-stream"] {
            assert_eq!(releasever(good), Ok(()), "{good}");
        }
        for bad in [".", "..", "../x", "4/1", "-1", "$releasever", "9 5"] {
            assert!(releasever(bad).is_err(), "{bad:?}");
        }
        for good in [
            "bash",
            "glibc-minimal-langpack",
            "libstdc++",
            "perl-Foo_Bar",
            "python3.12",
        ] {
            assert_eq!(package_name(Family::Rpm, good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "-y",
            "--setopt=x",
            ".x",
            "a/b",
            "a b",
            "pkgconfig(x)",
            "a,b",
        ] {
            assert!(package_name(Family::Rpm, bad).is_err(), "{bad:?}");
        }
        for good in ["bash", "libc6", "g++", "libstdc++6", "python3.11-minimal"] {
            assert_eq!(package_name(Family::Deb, good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "a",
            "Bash",
            "-y",
            "--option=x",
            "a/b",
            "libc6:amd64",
            "a_b",
        ] {
            assert!(package_name(Family::Deb, bad).is_err(), "{bad:?}");
        }
        for bad in ["", ".gpg", "-x", "a/b", "../key", "a b"] {
            assert!(file_name("public key file name", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn urls_need_a_scheme_and_one_plain_word() {
        for good in [
            "file:///srv/mirror",
            "http://mirror.example/fedora/$releasever/$basearch/",
        ] {
            assert_eq!(url("repository URL", good), Ok(()), "{good}");
        }
        // Brackets are apt's option syntax: refused everywhere, IPv6 literals included.
        for bad in [
            "https://[::1]:8080/x",
            "/srv/mirror",
            "file:///a b",
            "file:///x#y",
            "\"file:///x\"",
            ":x",
            "1x:/y",
        ] {
            assert!(url("repository URL", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn package_lines() {
        let entries = package_line(Family::Rpm, "bash --can-fail vim ?rootfiles").unwrap();
        let entries: Vec<(&str, bool)> = entries
            .iter()
            .map(|e| (e.name.as_str(), e.can_fail))
            .collect();
        assert_eq!(
            entries,
            [("bash", false), ("vim", true), ("rootfiles", true)]
        );
        for bad in [
            "bash --can-fail",
            "--can-fail --can-fail vim",
            "?",
            "??x",
            "-y",
        ] {
            assert!(package_line(Family::Rpm, bad).is_err(), "{bad:?}");
        }
        let list = package_list_file(Family::Deb, "bash # first\n\n--can-fail\tvim\n").unwrap();
        assert_eq!(list.len(), 2);
        for bad in ["bash\r\nvim\n", "bash\0\n", "bash\x1b[2J\n", "ok\nBAD\n"] {
            assert!(package_list_file(Family::Deb, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn macros_are_definitions_without_code() {
        let good = "# local\n%_excludedocs 1\n%_install_langs\tC:en_US\n\n\
                    %dist .local%%(not a command)\n%with_x(a:) %{-a*} \\\n  continued\n";
        assert_eq!(macros(good), Ok(()));
        assert_eq!(macros(""), Ok(()));
        for bad in [
            "%_dbpath /var/lib/rpm\n",
            "%_dbpath_rebuild /x\n",
            "%_netsharedpath /dev\n",
            "%__plugindir /tmp\n",
            "%__transaction_evil /tmp/evil.so\n",
            "%x_ok %(rm -rf /)\n",
            "%x_ok %{lua: os.execute('id')}\n",
            "%x_ok %{expand:%%(id)}\n",
            "%x_ok %{load:/tmp/m}\n",
            "%x_ok %{global _dbpath /x}\n",
            "%x_ok %define _dbpath /x\n",
            "%x_ok %{?undefine:x}\n",
            "# %(id) in a comment\n",
            "%x_ok 1\nnot a definition\n",
            "%ab 1\n",
            "%1ab 1\n",
            "%x_ok 1\r\n",
            "%x_ok 1\0\n",
            "%x_ok \x1b[2J\n",
            "%x_ok 1\n\u{2028}%_dbpath /x\n",
        ] {
            assert!(macros(bad).is_err(), "{bad:?}");
        }
        let refusal = macros("%x_ok 1\n%_dbpath /var/lib/rpm\n").unwrap_err();
        assert_eq!(refusal.field(), "rpm macros line 2");
    }

    #[test]
    fn repo_files_and_sources_lists_keep_their_structure() {
        let good = "# mine\n[base]\nname=Base $releasever\nbaseurl=file:///a\n  file:///b\n\
                    gpgcheck = 0\n\n[updates]\n;x\nenabled=1\n";
        assert_eq!(repo_file(good), Ok(()));
        for bad in [
            "[base]\r\nbaseurl=file:///x\n",
            "[base]\nbaseurl=file:///x\0\n",
            "[ba se]\n",
            "[base\n",
            "  indented=before any option\n",
            "[base]\nnot an option\n",
            "[base]\nbase url=x\n",
        ] {
            assert!(repo_file(bad).is_err(), "{bad:?}");
        }
        let good = "# local\ndeb file:/srv/m bookworm main\n\
                    deb [arch=amd64 signed-by=/usr/share/keyrings/k.gpg] http://h/d b main c\n\
                    deb-src [ trusted=yes ] http://h/d b main\ndeb file:/srv/flat ./\n";
        assert_eq!(sources_list(good), Ok(()));
        for bad in [
            "deb file:/m b main\r\n",
            "deb file:/m b main\0\n",
            "rpm file:/m b main\n",
            "deb /srv/m b main\n",
            "deb [trusted=yes file:/m b main\n",
            "deb [x] file:/m b main\n",
            "deb file:/m\n",
            "deb file:/m b \"main\"\n",
        ] {
            assert!(sources_list(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn builtins_pass_the_checks() {
        // With the host's archives found and without.
        let apt = tempfile::tempdir().unwrap();
        std::fs::write(
            apt.path().join("sources.list"),
            "deb http://archive.test/debian bookworm main\n\
             deb http://security.test/debian-security bookworm-security main\n",
        )
        .unwrap();
        let found = crate::builtin::builtins(&crate::HostAptSources::read(apt.path()));
        assert!(found.iter().any(|d| d.name == "debian-12"
            && d.missing_archive.is_none()
            && d.apt_sources.contains("bookworm-security")));
        let missing = crate::builtin::builtins(&crate::HostAptSources::read(apt.path().join("x")));
        for d in found.into_iter().chain(missing) {
            let name = &d.name;
            assert_eq!(description(&d.description), Ok(()), "{name}");
            assert_eq!(releasever(&d.releasever), Ok(()), "{name}");
            assert_eq!(arch(d.family, &d.arch), Ok(()), "{name}");
            for (file, text) in &d.repo_files {
                assert_eq!(repo_file_name(file), Ok(()), "{name}");
                assert_eq!(repo_file(text), Ok(()), "{name} {file}");
            }
            for (list, entries) in &d.package_lists {
                assert_eq!(file_name("package list name", list), Ok(()), "{name}");
                for entry in entries {
                    assert_eq!(package_name(d.family, &entry.name), Ok(()), "{name}");
                }
            }
            assert_eq!(sources_list(&d.apt_sources), Ok(()), "{name}");
            assert_eq!(macros(&d.macros), Ok(()), "{name}");
            for key in &d.pubkeys {
                let file = key.file_name().unwrap().to_str().unwrap();
                assert_eq!(file_name("public key file name", file), Ok(()), "{name}");
            }
        }
    }
}
