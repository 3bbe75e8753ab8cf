//! "Did you mean" for unknown guest and distribution names (edit distance, as cargo does, with
//! a swap of two neighbours counting as one edit: `tset` is one typo away from `test`).

/// The candidate closest to `name`, if it is close enough to be a likely typo.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    candidates
        .into_iter()
        .map(|c| (distance(name, c), c))
        .filter(|(d, c)| *d <= (name.len().max(c.len()) / 3).max(1))
        .min()
        .map(|(_, c)| c.to_owned())
}

/// The optimal-string-alignment distance: insertions, deletions, substitutions and swaps of
/// two adjacent characters each cost one.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // rows[i][j]: the distance between a[..i] and b[..j].
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j - 1] + cost)
                .min(rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::closest;

    #[test]
    fn suggests_near_names_only() {
        assert_eq!(
            closest("fedora-4", ["fedora-41", "rocky-9"]),
            Some("fedora-41".into())
        );
        assert_eq!(closest("debian", ["fedora-41", "rocky-9"]), None);
        assert_eq!(closest("tset", ["test", "web1"]), Some("test".into()));
        assert_eq!(
            closest("debain-12", ["debian-12"]),
            Some("debian-12".into())
        );
        assert_eq!(closest("mail", ["web1"]), None);
    }
}
