//! Version comparison exactly as rpm and dpkg do it.
//!
//! - [`rpmvercmp`] is rpm's segment comparison (rpmio/rpmvercmp.c, rpm 4.18): alphanumeric
//!   segments, numbers beat letters, `~` sorts before anything (even the end), `^` sorts after
//!   the end but before anything else. [`RpmEvr::compare`] adds the epoch and release rules of
//!   `rpmverCmp` (rpmio/rpmver.c): a missing epoch is 0, a missing release the empty string.
//!   Dependency ranges use `rpmverOverlap`'s different rules instead (a release counts only
//!   when both sides have one, so `foo >= 1.0` accepts every release of 1.0).
//! - [`dpkg_compare`] is dpkg's `dpkg_version_compare` (lib/dpkg/version.c): numeric epoch,
//!   then upstream version and revision with `verrevcmp`, where `~` sorts before the end,
//!   letters before other characters and digit runs compare as numbers.
//!
//! Both are checked against the real tools (`rpm.vercmp` in rpm's Lua, `dpkg
//! --compare-versions`) on generated pairs in `tests/mirror_subset_vercmp.rs`.

use std::cmp::Ordering;

/// Compares two version (or release) strings as rpm's `rpmvercmp` does.
pub fn rpmvercmp(a: &str, b: &str) -> Ordering {
    if a == b {
        return Ordering::Equal;
    }
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    let at = |s: &[u8], k: usize| s.get(k).copied().unwrap_or(0);
    let separator = |c: u8| c != 0 && !c.is_ascii_alphanumeric() && c != b'~' && c != b'^';
    while at(a, i) != 0 || at(b, j) != 0 {
        while separator(at(a, i)) {
            i += 1;
        }
        while separator(at(b, j)) {
            j += 1;
        }
        let (x, y) = (at(a, i), at(b, j));
        if x == b'~' || y == b'~' {
            if x != b'~' {
                return Ordering::Greater;
            }
            if y != b'~' {
                return Ordering::Less;
            }
            i += 1;
            j += 1;
            continue;
        }
        if x == b'^' || y == b'^' {
            if x == 0 {
                return Ordering::Less;
            }
            if y == 0 {
                return Ordering::Greater;
            }
            if x != b'^' {
                return Ordering::Greater;
            }
            if y != b'^' {
                return Ordering::Less;
            }
            i += 1;
            j += 1;
            continue;
        }
        if x == 0 || y == 0 {
            break;
        }
        let numeric = x.is_ascii_digit();
        let class = |c: u8| {
            if numeric {
                c.is_ascii_digit()
            } else {
                c.is_ascii_alphabetic()
            }
        };
        let (start_a, start_b) = (i, j);
        while class(at(a, i)) {
            i += 1;
        }
        while class(at(b, j)) {
            j += 1;
        }
        let mut seg_a = &a[start_a..i];
        let mut seg_b = &b[start_b..j];
        // A segment of the other kind (or none) on b's side: numbers are newer than letters.
        if seg_b.is_empty() {
            return if numeric {
                Ordering::Greater
            } else {
                Ordering::Less
            };
        }
        if numeric {
            while seg_a.first() == Some(&b'0') {
                seg_a = &seg_a[1..];
            }
            while seg_b.first() == Some(&b'0') {
                seg_b = &seg_b[1..];
            }
            match seg_a.len().cmp(&seg_b.len()) {
                Ordering::Equal => {}
                other => return other,
            }
        }
        match seg_a.cmp(seg_b) {
            Ordering::Equal => {}
            other => return other,
        }
    }
    match (at(a, i) == 0, at(b, j) == 0) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        _ => Ordering::Greater,
    }
}

/// An rpm `[epoch:]version[-release]`; epoch and release may be absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct RpmEvr {
    /// The epoch, when given.
    pub epoch: Option<String>,
    /// The version.
    pub version: String,
    /// The release, when given.
    pub release: Option<String>,
}

impl RpmEvr {
    /// Parses `E:V-R` as rpm's `rpmverParse` does: the epoch is the digits before the first
    /// `:`, the release what follows the last `-`.
    pub fn parse(text: &str) -> RpmEvr {
        let (epoch, rest) = match text.split_once(':') {
            Some((e, rest)) if e.bytes().all(|c| c.is_ascii_digit()) => {
                (Some(if e.is_empty() { "0" } else { e }.to_owned()), rest)
            }
            _ => (None, text),
        };
        let (version, release) = match rest.rsplit_once('-') {
            Some((v, r)) => (v.to_owned(), Some(r.to_owned())),
            None => (rest.to_owned(), None),
        };
        RpmEvr {
            epoch,
            version,
            release,
        }
    }

    /// rpm's `rpmverCmp` (package ordering, `rpm.vercmp`): epochs (missing = 0), versions,
    /// then releases, a missing release counting as the empty string.
    pub fn compare(&self, other: &RpmEvr) -> Ordering {
        let e1 = self.epoch.as_deref().unwrap_or("0");
        let e2 = other.epoch.as_deref().unwrap_or("0");
        rpmvercmp(e1, e2)
            .then_with(|| rpmvercmp(&self.version, &other.version))
            .then_with(|| {
                rpmvercmp(
                    self.release.as_deref().unwrap_or(""),
                    other.release.as_deref().unwrap_or(""),
                )
            })
    }
}

/// The result of comparing the two sides of a dependency range, as rpm's `rpmverOverlap`
/// does before looking at the operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RangeSense {
    /// The versions order this way.
    Order(Ordering),
    /// Equal versions where one side has no release and the other side's operator includes
    /// `=`: rpm then always reports an overlap (`foo >= 1.0` matches `foo = 1.0-3`).
    AlwaysOverlap,
}

impl RpmEvr {
    /// rpm's `rpmverOverlap` comparison: epochs count only when both sides have one, or
    /// when the one side that has it is above 0; releases only when both sides have one.
    pub(crate) fn range_sense(
        &self,
        self_has_equal: bool,
        other: &RpmEvr,
        other_has_equal: bool,
    ) -> RangeSense {
        let present =
            |e: &Option<String>| e.as_deref().filter(|e| !e.is_empty()).map(str::to_owned);
        let positive =
            |e: &Option<String>| present(e).is_some_and(|e| e.parse::<u64>().unwrap_or(0) > 0);
        let mut sense = match (present(&self.epoch), present(&other.epoch)) {
            (Some(a), Some(b)) => rpmvercmp(&a, &b),
            _ if positive(&self.epoch) => Ordering::Greater,
            _ if positive(&other.epoch) => Ordering::Less,
            _ => Ordering::Equal,
        };
        if sense == Ordering::Equal {
            sense = rpmvercmp(&self.version, &other.version);
            if sense == Ordering::Equal {
                let r1 = self.release.as_deref().filter(|r| !r.is_empty());
                let r2 = other.release.as_deref().filter(|r| !r.is_empty());
                match (r1, r2) {
                    (Some(a), Some(b)) => sense = rpmvercmp(a, b),
                    (Some(_), None) if other_has_equal => return RangeSense::AlwaysOverlap,
                    (None, Some(_)) if self_has_equal => return RangeSense::AlwaysOverlap,
                    _ => {}
                }
            }
        }
        RangeSense::Order(sense)
    }
}

impl std::fmt::Display for RpmEvr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(epoch) = &self.epoch {
            write!(f, "{epoch}:")?;
        }
        f.write_str(&self.version)?;
        if let Some(release) = &self.release {
            write!(f, "-{release}")?;
        }
        Ok(())
    }
}

/// dpkg's `order()`: `~` first, then the end of the string and digits, letters, the rest.
fn dpkg_order(c: u8) -> i32 {
    if c.is_ascii_digit() {
        0
    } else if c.is_ascii_alphabetic() {
        i32::from(c)
    } else if c == b'~' {
        -1
    } else if c != 0 {
        i32::from(c) + 256
    } else {
        0
    }
}

/// dpkg's `verrevcmp` over an upstream version or a revision.
fn verrevcmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let at = |s: &[u8], k: usize| s.get(k).copied().unwrap_or(0);
    let (mut i, mut j) = (0, 0);
    while at(a, i) != 0 || at(b, j) != 0 {
        while (at(a, i) != 0 && !at(a, i).is_ascii_digit())
            || (at(b, j) != 0 && !at(b, j).is_ascii_digit())
        {
            let (x, y) = (dpkg_order(at(a, i)), dpkg_order(at(b, j)));
            if x != y {
                return x.cmp(&y);
            }
            i += 1;
            j += 1;
        }
        while at(a, i) == b'0' {
            i += 1;
        }
        while at(b, j) == b'0' {
            j += 1;
        }
        let mut first_diff = Ordering::Equal;
        while at(a, i).is_ascii_digit() && at(b, j).is_ascii_digit() {
            if first_diff == Ordering::Equal {
                first_diff = at(a, i).cmp(&at(b, j));
            }
            i += 1;
            j += 1;
        }
        if at(a, i).is_ascii_digit() {
            return Ordering::Greater;
        }
        if at(b, j).is_ascii_digit() {
            return Ordering::Less;
        }
        if first_diff != Ordering::Equal {
            return first_diff;
        }
    }
    Ordering::Equal
}

/// A Debian `[epoch:]upstream[-revision]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct DebVersion {
    /// The epoch (0 when absent).
    pub epoch: u64,
    /// The upstream version.
    pub upstream: String,
    /// The Debian revision (empty when absent).
    pub revision: String,
}

impl DebVersion {
    /// Parses a version as dpkg's `parseversion` splits it; `None` for a bad epoch.
    pub fn parse(text: &str) -> Option<DebVersion> {
        let text = text.trim();
        let (epoch, rest) = match text.split_once(':') {
            Some((e, rest)) => (e.parse().ok()?, rest),
            None => (0, text),
        };
        let (upstream, revision) = match rest.rsplit_once('-') {
            Some((u, r)) => (u, r),
            None => (rest, ""),
        };
        Some(DebVersion {
            epoch,
            upstream: upstream.to_owned(),
            revision: revision.to_owned(),
        })
    }
}

impl PartialOrd for DebVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for DebVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        self.epoch
            .cmp(&other.epoch)
            .then_with(|| verrevcmp(&self.upstream, &other.upstream))
            .then_with(|| verrevcmp(&self.revision, &other.revision))
    }
}

impl std::fmt::Display for DebVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.epoch != 0 {
            write!(f, "{}:", self.epoch)?;
        }
        f.write_str(&self.upstream)?;
        if !self.revision.is_empty() {
            write!(f, "-{}", self.revision)?;
        }
        Ok(())
    }
}

/// Compares two Debian version strings as `dpkg --compare-versions` does; `None` if either
/// has a bad epoch.
pub fn dpkg_compare(a: &str, b: &str) -> Option<Ordering> {
    Some(DebVersion::parse(a)?.cmp(&DebVersion::parse(b)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::{Equal, Greater, Less};

    #[test]
    fn rpm_table() {
        for (a, b, want) in [
            ("1.0", "1.0", Equal),
            ("1.0", "2.0", Less),
            ("1.0~rc1", "1.0", Less),
            ("1.0~rc1", "1.0~rc2", Less),
            ("1.0^git1", "1.0", Greater),
            ("1.0^git1", "1.0.1", Less),
            ("1.0^", "1.0", Greater),
            ("1a", "1.a", Equal),
            ("10", "9", Greater),
            ("010", "10", Equal),
            ("a", "1", Less),
            ("1.0a", "1.0", Greater),
            ("fc40", "fc41", Less),
            ("1_0", "1.0", Equal),
        ] {
            assert_eq!(rpmvercmp(a, b), want, "{a} vs {b}");
            assert_eq!(rpmvercmp(b, a), want.reverse(), "{b} vs {a}");
        }
        let older = RpmEvr::parse("1:1.0-1");
        assert_eq!(older.compare(&RpmEvr::parse("2.0-1")), Greater);
        assert_eq!(RpmEvr::parse("1.0").compare(&RpmEvr::parse("1.0-5")), Less);
        assert_eq!(
            RpmEvr::parse("0:1.0-1").compare(&RpmEvr::parse("1.0-1")),
            Equal
        );
    }

    #[test]
    fn dpkg_table() {
        for (a, b, want) in [
            ("1.0", "1.0-0", Equal),
            ("1.0~rc1", "1.0", Less),
            ("1.0", "1.0+b1", Less),
            ("1:0.1", "2.0", Greater),
            ("1.0-1~bpo12+1", "1.0-1", Less),
            ("1.10", "1.9", Greater),
            ("1.0a", "1.0+", Less),
            ("2.30-1", "2.30-1+deb12u1", Less),
        ] {
            assert_eq!(dpkg_compare(a, b), Some(want), "{a} vs {b}");
        }
        assert_eq!(dpkg_compare("x:1", "1"), None);
    }
}
