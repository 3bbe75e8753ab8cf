//! Rendering packages as primary, filelists and other XML.
//!
//! Each package renders to a self-contained fragment, so fragments can be produced in parallel,
//! cached for `--update`, and concatenated between a document head and tail. The output follows
//! createrepo_c's layout; values are escaped for XML and characters XML 1.0 cannot carry are
//! dropped (libxml2 refuses them too), so hostile header strings cannot break the document.

use std::fmt::Write as _;

use super::model::{Dependency, Package, is_primary_file};

/// The XML namespace of primary.xml.
pub const NS_COMMON: &str = "http://linux.duke.edu/metadata/common";
/// The XML namespace of `rpm:` elements.
pub const NS_RPM: &str = "http://linux.duke.edu/metadata/rpm";
/// The XML namespace of filelists.xml.
pub const NS_FILELISTS: &str = "http://linux.duke.edu/metadata/filelists";
/// The XML namespace of other.xml.
pub const NS_OTHER: &str = "http://linux.duke.edu/metadata/other";

/// The three metadata documents of a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Document {
    /// primary.xml: names, versions, dependencies, primary files.
    Primary,
    /// filelists.xml: every file.
    Filelists,
    /// other.xml: changelogs.
    Other,
}

impl Document {
    /// All three, in repomd order.
    pub const ALL: [Document; 3] = [Document::Primary, Document::Filelists, Document::Other];

    /// The `type` of the document in repomd.xml and its file-name stem.
    pub fn name(self) -> &'static str {
        match self {
            Document::Primary => "primary",
            Document::Filelists => "filelists",
            Document::Other => "other",
        }
    }

    /// The document head, declaring `count` packages.
    pub fn head(self, count: u64) -> String {
        match self {
            Document::Primary => format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<metadata xmlns=\"{NS_COMMON}\" xmlns:rpm=\"{NS_RPM}\" packages=\"{count}\">\n"
            ),
            Document::Filelists => format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<filelists xmlns=\"{NS_FILELISTS}\" packages=\"{count}\">\n"
            ),
            Document::Other => format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<otherdata xmlns=\"{NS_OTHER}\" packages=\"{count}\">\n"
            ),
        }
    }

    /// The document tail.
    pub fn tail(self) -> &'static str {
        match self {
            Document::Primary => "</metadata>",
            Document::Filelists => "</filelists>",
            Document::Other => "</otherdata>",
        }
    }

    /// Renders one package's fragment of this document.
    pub fn render(self, pkg: &Package, out: &mut String) {
        match self {
            Document::Primary => render_primary(pkg, out),
            Document::Filelists => render_filelists(pkg, out),
            Document::Other => render_other(pkg, out),
        }
    }
}

/// Appends `text` escaped for XML content or a double-quoted attribute.
fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\r' => out.push_str("&#13;"),
            '\t' | '\n' => out.push(c),
            c if is_xml_char(c) => out.push(c),
            _ => {}
        }
    }
}

fn is_xml_char(c: char) -> bool {
    matches!(c, '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

fn attr(out: &mut String, name: &str, value: &str) {
    out.push(' ');
    out.push_str(name);
    out.push_str("=\"");
    escape_into(out, value);
    out.push('"');
}

fn text_element(out: &mut String, indent: &str, name: &str, value: &str) {
    out.push_str(indent);
    out.push('<');
    out.push_str(name);
    if value.is_empty() {
        out.push_str("/>\n");
        return;
    }
    out.push('>');
    escape_into(out, value);
    out.push_str("</");
    out.push_str(name);
    out.push_str(">\n");
}

fn version_element(out: &mut String, indent: &str, pkg: &Package) {
    out.push_str(indent);
    out.push_str("<version");
    attr(out, "epoch", &pkg.epoch.to_string());
    attr(out, "ver", &pkg.version);
    attr(out, "rel", &pkg.release);
    out.push_str("/>\n");
}

fn dependencies(out: &mut String, element: &str, deps: &[Dependency], with_pre: bool) {
    if deps.is_empty() {
        return;
    }
    let _ = writeln!(out, "    <rpm:{element}>");
    for dep in deps {
        out.push_str("      <rpm:entry");
        attr(out, "name", &dep.name);
        if let Some(flags) = &dep.flags {
            attr(out, "flags", flags);
        }
        for (name, value) in [
            ("epoch", &dep.epoch),
            ("ver", &dep.version),
            ("rel", &dep.release),
        ] {
            if let Some(value) = value {
                attr(out, name, value);
            }
        }
        if with_pre && dep.pre {
            attr(out, "pre", "1");
        }
        out.push_str("/>\n");
    }
    let _ = writeln!(out, "    </rpm:{element}>");
}

fn file_element(out: &mut String, indent: &str, path: &str, kind: Option<&str>) {
    out.push_str(indent);
    out.push_str("<file");
    if let Some(kind) = kind {
        attr(out, "type", kind);
    }
    out.push('>');
    escape_into(out, path);
    out.push_str("</file>\n");
}

fn render_primary(pkg: &Package, out: &mut String) {
    out.push_str("<package type=\"rpm\">\n");
    text_element(out, "  ", "name", &pkg.name);
    text_element(out, "  ", "arch", &pkg.arch);
    version_element(out, "  ", pkg);
    out.push_str("  <checksum");
    attr(out, "type", &pkg.checksum_type);
    out.push_str(" pkgid=\"YES\">");
    escape_into(out, &pkg.pkgid);
    out.push_str("</checksum>\n");
    text_element(out, "  ", "summary", &pkg.summary);
    text_element(out, "  ", "description", &pkg.description);
    text_element(out, "  ", "packager", &pkg.packager);
    text_element(out, "  ", "url", &pkg.url);
    let _ = writeln!(
        out,
        "  <time file=\"{}\" build=\"{}\"/>",
        pkg.time_file, pkg.time_build
    );
    let _ = writeln!(
        out,
        "  <size package=\"{}\" installed=\"{}\" archive=\"{}\"/>",
        pkg.size_package, pkg.size_installed, pkg.size_archive
    );
    out.push_str("  <location");
    if let Some(base) = &pkg.location_base {
        attr(out, "xml:base", base);
    }
    attr(out, "href", &pkg.location_href);
    out.push_str("/>\n  <format>\n");
    text_element(out, "    ", "rpm:license", &pkg.license);
    text_element(out, "    ", "rpm:vendor", &pkg.vendor);
    text_element(out, "    ", "rpm:group", &pkg.group);
    text_element(out, "    ", "rpm:buildhost", &pkg.buildhost);
    text_element(out, "    ", "rpm:sourcerpm", &pkg.sourcerpm);
    let _ = writeln!(
        out,
        "    <rpm:header-range start=\"{}\" end=\"{}\"/>",
        pkg.header_start, pkg.header_end
    );
    dependencies(out, "provides", &pkg.provides, false);
    dependencies(out, "requires", &pkg.requires, true);
    dependencies(out, "conflicts", &pkg.conflicts, false);
    dependencies(out, "obsoletes", &pkg.obsoletes, false);
    dependencies(out, "suggests", &pkg.suggests, false);
    dependencies(out, "enhances", &pkg.enhances, false);
    dependencies(out, "recommends", &pkg.recommends, false);
    dependencies(out, "supplements", &pkg.supplements, false);
    for file in pkg.files.iter().filter(|f| is_primary_file(&f.path)) {
        file_element(out, "    ", &file.path, file.kind.as_attr());
    }
    out.push_str("  </format>\n</package>\n");
}

fn package_open(out: &mut String, pkg: &Package) {
    out.push_str("<package");
    attr(out, "pkgid", &pkg.pkgid);
    attr(out, "name", &pkg.name);
    attr(out, "arch", &pkg.arch);
    out.push_str(">\n");
    version_element(out, "  ", pkg);
}

fn render_filelists(pkg: &Package, out: &mut String) {
    package_open(out, pkg);
    for file in &pkg.files {
        file_element(out, "  ", &file.path, file.kind.as_attr());
    }
    out.push_str("</package>\n");
}

fn render_other(pkg: &Package, out: &mut String) {
    package_open(out, pkg);
    for entry in &pkg.changelogs {
        out.push_str("  <changelog");
        attr(out, "author", &entry.author);
        attr(out, "date", &entry.date.to_string());
        out.push('>');
        escape_into(out, &entry.text);
        out.push_str("</changelog>\n");
    }
    out.push_str("</package>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_drops_characters_xml_cannot_carry() {
        let mut out = String::new();
        escape_into(&mut out, "a<b>&\"c\"\u{1}\u{7}d\r");
        assert_eq!(out, "a&lt;b&gt;&amp;&quot;c&quot;d&#13;");
    }
}
