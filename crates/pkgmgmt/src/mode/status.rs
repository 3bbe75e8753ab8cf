//! A strict parser of dpkg's `status` file (deb822 stanzas, see deb822(5) and dpkg's
//! `lib/dpkg/parse.c`), for reading a guest's database on externalize.
//!
//! The file comes from a guest and becomes host state that the host's dpkg opens as root, so it
//! is not copied: it is parsed here, every field checked, and written out again from the parsed
//! form. Refused: anything but UTF-8, a field name that is not a known dpkg field (or an `X-`
//! field), a field given twice in a stanza, a continuation line outside a field, control
//! characters, a package name, version or architecture outside dpkg's syntax, a `Status` that is
//! not three known words, a conffile path that is not a plain absolute path, a package given
//! twice.

use std::collections::BTreeSet;
use std::fmt::Write as _;

/// The fields dpkg writes into `status` for a package (and a few that archive tools add).
const KNOWN_FIELDS: &[&str] = &[
    "Package",
    "Essential",
    "Protected",
    "Status",
    "Priority",
    "Section",
    "Installed-Size",
    "Origin",
    "Maintainer",
    "Original-Maintainer",
    "Bugs",
    "Architecture",
    "Multi-Arch",
    "Source",
    "Version",
    "Config-Version",
    "Replaces",
    "Provides",
    "Depends",
    "Pre-Depends",
    "Recommends",
    "Suggests",
    "Breaks",
    "Conflicts",
    "Enhances",
    "Conffiles",
    "Description",
    "Homepage",
    "Built-Using",
    "Static-Built-Using",
    "Important",
    "Triggers-Awaited",
    "Triggers-Pending",
    "Tag",
    "Build-Essential",
    "Build-Ids",
    "Auto-Built-Package",
    "Cnf-Extra-Commands",
    "Cnf-Visible-Pkgname",
    "Cnf-Priority-Bonus",
    "Cnf-Ignore-Commands",
    "Gstreamer-Version",
    "Gstreamer-Elements",
    "Gstreamer-Uri-Sources",
    "Gstreamer-Uri-Sinks",
    "Gstreamer-Encoders",
    "Gstreamer-Decoders",
    "Python-Version",
    "Python3-Version",
    "Python-Egg-Name",
    "Ruby-Versions",
    "Lua-Versions",
    "Go-Import-Path",
    "Postgresql-Catversion",
    "Javascript-Version",
];

/// dpkg's want states, error flags and package states (`Status: WANT FLAG STATE`).
const WANTS: &[&str] = &["unknown", "install", "hold", "deinstall", "purge"];
const FLAGS: &[&str] = &["ok", "reinstreq"];
const STATES: &[&str] = &[
    "not-installed",
    "config-files",
    "half-installed",
    "unpacked",
    "half-configured",
    "triggers-awaited",
    "triggers-pending",
    "installed",
];

/// One package's stanza: its fields in the order given, values without the `Name:` part
/// (continuation lines joined with `\n`, each keeping its leading space).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stanza {
    fields: Vec<(String, String)>,
}

impl Stanza {
    /// A field's value, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(field, _)| field.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The package name.
    pub fn package(&self) -> &str {
        self.get("Package").unwrap_or_default()
    }

    /// `NAME:ARCH=VERSION`, or `NAME:ARCH` without a version.
    pub fn identity(&self) -> String {
        let mut text = format!(
            "{}:{}",
            self.package(),
            self.get("Architecture").unwrap_or("none")
        );
        if let Some(version) = self.get("Version") {
            text.push('=');
            text.push_str(version);
        }
        text
    }

    /// Whether dpkg counts the package as installed (configured).
    pub fn is_installed(&self) -> bool {
        self.get("Status")
            .is_some_and(|s| s.split(' ').nth(2) == Some("installed"))
    }
}

/// A refusal: the stanza (1-based) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("dpkg status, stanza {stanza}: {problem}")]
pub struct StatusError {
    /// The stanza's number (1-based; 0 for the file as a whole).
    pub stanza: usize,
    /// What is wrong.
    pub problem: String,
}

fn refuse<T>(stanza: usize, problem: impl Into<String>) -> Result<T, StatusError> {
    Err(StatusError {
        stanza,
        problem: problem.into(),
    })
}

/// Parses a whole `status` file.
pub fn parse_status(bytes: &[u8]) -> Result<Vec<Stanza>, StatusError> {
    let text = std::str::from_utf8(bytes).or_else(|_| refuse(0, "not UTF-8"))?;
    let mut stanzas = Vec::new();
    let mut seen = BTreeSet::new();
    let mut current: Vec<(String, String)> = Vec::new();
    let mut number = 1;
    let lines = text.split('\n');
    for line in lines.chain(std::iter::once("")) {
        if line.chars().any(|c| c.is_control() && c != '\t') {
            return refuse(number, "a control character");
        }
        if line.trim().is_empty() {
            if !current.is_empty() {
                let stanza = check_stanza(number, std::mem::take(&mut current))?;
                let key = (
                    stanza.package().to_owned(),
                    stanza.get("Architecture").unwrap_or_default().to_owned(),
                );
                if !seen.insert(key) {
                    return refuse(
                        number,
                        format!("package `{}` given twice", stanza.package()),
                    );
                }
                stanzas.push(stanza);
                number += 1;
            }
            continue;
        }
        if line.starts_with([' ', '\t']) {
            let Some((_, value)) = current.last_mut() else {
                return refuse(number, "a continuation line outside a field");
            };
            value.push('\n');
            value.push_str(line);
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return refuse(
                number,
                format!("a line that is not `Field: value`: `{line}`"),
            );
        };
        let known = KNOWN_FIELDS.iter().any(|k| k.eq_ignore_ascii_case(name))
            || (name.len() > 2
                && name[..2].eq_ignore_ascii_case("x-")
                && name[2..]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-'));
        if !known {
            return refuse(number, format!("unknown field `{name}`"));
        }
        if current.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
            return refuse(number, format!("field `{name}` given twice"));
        }
        current.push((name.to_owned(), value.trim().to_owned()));
    }
    if stanzas.len() > 1_000_000 {
        return refuse(0, "too many stanzas");
    }
    Ok(stanzas)
}

fn check_stanza(number: usize, fields: Vec<(String, String)>) -> Result<Stanza, StatusError> {
    let stanza = Stanza { fields };
    let Some(package) = stanza.get("Package") else {
        return refuse(number, "no Package field");
    };
    if !valid_package_name(package) {
        return refuse(number, format!("invalid package name `{package}`"));
    }
    let Some(status) = stanza.get("Status") else {
        return refuse(number, format!("package `{package}` has no Status"));
    };
    let words: Vec<&str> = status.split(' ').collect();
    let valid_status = words.len() == 3
        && WANTS.contains(&words[0])
        && FLAGS.contains(&words[1])
        && STATES.contains(&words[2]);
    if !valid_status {
        return refuse(
            number,
            format!("package `{package}`: invalid Status `{status}`"),
        );
    }
    if let Some(version) = stanza.get("Version")
        && !valid_version(version)
    {
        return refuse(
            number,
            format!("package `{package}`: invalid Version `{version}`"),
        );
    }
    if words[2] != "not-installed" && stanza.get("Version").is_none() {
        return refuse(number, format!("package `{package}` has no Version"));
    }
    if let Some(arch) = stanza.get("Architecture")
        && !(arch.len() <= 64
            && !arch.is_empty()
            && arch
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'))
    {
        return refuse(
            number,
            format!("package `{package}`: invalid Architecture `{arch}`"),
        );
    }
    if let Some(conffiles) = stanza.get("Conffiles") {
        for line in conffiles.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let mut parts = line.split(' ');
            let (path, digest) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let flag_ok = parts
                .next()
                .is_none_or(|f| f == "obsolete" || f == "remove-on-upgrade")
                && parts.next().is_none();
            let digest_ok = digest == "newconffile"
                || (digest.len() == 32 && digest.bytes().all(|b| b.is_ascii_hexdigit()));
            if !(plain_absolute_path(path) && digest_ok && flag_ok) {
                return refuse(
                    number,
                    format!("package `{package}`: invalid conffile line `{line}`"),
                );
            }
        }
    }
    Ok(stanza)
}

/// dpkg's package-name syntax: lower-case letters, digits, `+-.`, starting with a letter or
/// digit, at least two characters.
pub fn valid_package_name(name: &str) -> bool {
    name.len() >= 2
        && name.len() <= 128
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
}

fn valid_version(version: &str) -> bool {
    !version.is_empty()
        && version.len() <= 256
        && version.as_bytes()[0].is_ascii_alphanumeric()
        && version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".+~:-".contains(&b))
}

/// An absolute path whose components are all plain (no `.`, `..`, empty components are
/// tolerated only as a trailing slash), of printable characters.
pub fn plain_absolute_path(path: &str) -> bool {
    path.starts_with('/')
        && path.len() <= 4096
        && !path.chars().any(char::is_control)
        && path
            .trim_end_matches('/')
            .split('/')
            .skip(1)
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

/// Writes stanzas back in dpkg's format.
pub fn render_status(stanzas: &[Stanza]) -> String {
    let mut text = String::new();
    for stanza in stanzas {
        for (name, value) in &stanza.fields {
            if value.starts_with('\n') || value.is_empty() {
                let _ = writeln!(text, "{name}:{value}");
            } else {
                let _ = writeln!(text, "{name}: {value}");
            }
        }
        text.push('\n');
    }
    text
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;

    const GOOD: &str = "Package: hello\nStatus: install ok installed\nPriority: optional\n\
        Architecture: amd64\nVersion: 2.10-3\nConffiles:\n /etc/hello.conf 0123456789abcdef0123456789abcdef\n\
        Description: says hello\n friendly\n .\n really\n\n\
        Package: gone\nStatus: purge ok not-installed\n\n";

    #[test]
    fn a_real_status_file_round_trips() {
        let stanzas = parse_status(GOOD.as_bytes()).unwrap();
        assert_eq!(stanzas.len(), 2);
        assert_eq!(stanzas[0].identity(), "hello:amd64=2.10-3");
        assert!(stanzas[0].is_installed());
        assert!(!stanzas[1].is_installed());
        let rendered = render_status(&stanzas);
        assert_eq!(rendered, GOOD);
        assert_eq!(parse_status(rendered.as_bytes()).unwrap(), stanzas);
    }

    #[test]
    fn the_host_status_file_parses_when_there_is_one() {
        if let Ok(bytes) = std::fs::read("/var/lib/dpkg/status") {
            let stanzas = parse_status(&bytes).unwrap();
            assert_eq!(
                parse_status(render_status(&stanzas).as_bytes()).unwrap(),
                stanzas
            );
        }
    }

    #[test]
    fn odd_input_is_refused() {
        let bad = [
            "Package: a\nStatus: install ok installed\nVersion: 1\nEvil: yes\n",
            "Package: a\nStatus: install ok installed\nVersion: 1\nVersion: 2\n",
            " continuation first\n",
            "Package: A_B\nStatus: install ok installed\nVersion: 1\n",
            "Package: ab\nStatus: install ok broken\nVersion: 1\n",
            "Package: ab\nStatus: install ok installed\nVersion: 1;rm\n",
            "Package: ab\nStatus: install ok installed\n",
            "Package: ab\nStatus: install ok installed\nVersion: 1\nConffiles:\n /etc/../x 0123456789abcdef0123456789abcdef\n",
            "Package: ab\nStatus: install ok installed\nVersion: 1\nConffiles:\n etc/x 0123456789abcdef0123456789abcdef\n",
            "Package: ab\nStatus: install ok installed\nVersion: 1\n\nPackage: ab\nStatus: install ok installed\nVersion: 1\n",
            "Package: ab\nStatus: install ok installed\nVersion: 1\nDescription: \u{1b}[2J\n",
            "no colon here\n",
        ];
        for text in bad {
            assert!(parse_status(text.as_bytes()).is_err(), "{text:?}");
        }
        assert!(parse_status(b"Package: ab\xff\n").is_err());
    }
}
