//! The parts of HTTP/1.1 (RFC 9110, 9112) the file server speaks: request parsing with size
//! limits, response heads, single byte ranges, HTTP dates and content types.

use crate::date::{MONTHS, days_from_civil, format_utc};
use std::io::{self, BufRead, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A parsed request head.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) method: String,
    pub(crate) target: String,
    headers: Vec<(String, String)>,
    pub(crate) keep_alive: bool,
}

impl Request {
    /// The first header called `name` (lower-case).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

pub(crate) enum RequestError {
    Io(#[allow(dead_code)] io::Error),
    Bad(&'static str),
}

/// Reads one request head; `Ok(None)` when the client closed the connection cleanly.
///
/// Request bodies are not expected (GET and HEAD); one announced with `Content-Length` or
/// `Transfer-Encoding` is refused, which also rules out request smuggling.
pub(crate) fn read_request(
    reader: &mut impl BufRead,
    max_bytes: usize,
) -> Result<Option<Request>, RequestError> {
    let mut lines = Vec::new();
    let mut total = 0;
    loop {
        let mut line = Vec::new();
        let n = std::io::Read::take(&mut *reader, (max_bytes - total + 1) as u64)
            .read_until(b'\n', &mut line)
            .map_err(RequestError::Io)?;
        if n == 0 {
            if lines.is_empty() && total == 0 {
                return Ok(None);
            }
            return Err(RequestError::Bad("incomplete request"));
        }
        total += n;
        if total > max_bytes {
            return Err(RequestError::Bad("header too large"));
        }
        if !line.ends_with(b"\n") {
            return Err(RequestError::Bad("incomplete request"));
        }
        while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            line.pop();
        }
        if line.is_empty() {
            // Robustness (RFC 9112 section 2.2): empty lines before the request line are ignored.
            if lines.is_empty() {
                continue;
            }
            break;
        }
        let line = String::from_utf8(line).map_err(|_| RequestError::Bad("header is not UTF-8"))?;
        lines.push(line);
    }
    let mut parts = lines[0].split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(RequestError::Bad("malformed request line"));
    };
    let http11 = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => return Err(RequestError::Bad("unsupported HTTP version")),
    };
    let mut headers = Vec::new();
    for line in &lines[1..] {
        let Some((name, value)) = line.split_once(':') else {
            return Err(RequestError::Bad("malformed header"));
        };
        if name.is_empty() || name.contains([' ', '\t']) {
            return Err(RequestError::Bad("malformed header"));
        }
        headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    let mut request = Request {
        method: method.to_owned(),
        target: target.to_owned(),
        headers,
        keep_alive: http11,
    };
    if request.header("transfer-encoding").is_some()
        || request
            .header("content-length")
            .is_some_and(|v| v.trim() != "0")
    {
        return Err(RequestError::Bad("request bodies are not accepted"));
    }
    if let Some(connection) = request.header("connection") {
        let connection = connection.to_ascii_lowercase();
        if connection.contains("close") {
            request.keep_alive = false;
        } else if connection.contains("keep-alive") {
            request.keep_alive = true;
        }
    }
    Ok(Some(request))
}

/// Finds where a request head ends in the bytes received so far, by the line rules of
/// [`read_request`]: lines end at `\n`, trailing `\r`s do not count, empty lines before the
/// request line are skipped, and the first empty line after it ends the head.
///
/// Each byte is looked at once however the head trickles in (a client may send one byte per
/// packet), so a slow head costs the server no more than a fast one.
#[derive(Debug, Default)]
pub(crate) struct HeadScan {
    /// Where the line being received starts.
    line_start: usize,
    /// How far the search for its end has looked.
    searched: usize,
    /// Whether a non-empty line (the request line) has been seen.
    seen_line: bool,
}

impl HeadScan {
    /// The length of the complete head at the start of `buf`; `None` while it is incomplete.
    /// `buf` must only grow between calls; once a head is found, the scan starts over (for
    /// the bytes after it, once the caller has removed the head).
    pub(crate) fn find(&mut self, buf: &[u8]) -> Option<usize> {
        while let Some(offset) = buf
            .get(self.searched..)
            .and_then(|rest| rest.iter().position(|&b| b == b'\n'))
        {
            let end = self.searched + offset;
            let empty = buf[self.line_start..end].iter().all(|&b| b == b'\r');
            self.line_start = end + 1;
            self.searched = end + 1;
            if !empty {
                self.seen_line = true;
            } else if self.seen_line {
                *self = HeadScan::default();
                return Some(end + 1);
            }
        }
        self.searched = buf.len();
        None
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        301 => "Moved Permanently",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        416 => "Range Not Satisfiable",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Writes a status line and headers (plus `Date`, `Server` and `Connection`).
pub(crate) fn write_head(
    out: &mut impl Write,
    status: u16,
    headers: &[(&str, String)],
    keep_alive: bool,
) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nDate: {}\r\nServer: vrepo\r\n",
        reason(status),
        format_http_date(SystemTime::now())
    );
    for (name, value) in headers {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    head.push_str(if keep_alive {
        "Connection: keep-alive\r\n\r\n"
    } else {
        "Connection: close\r\n\r\n"
    });
    out.write_all(head.as_bytes())
}

/// A short plain-text answer (errors).
pub(crate) fn write_simple(
    out: &mut impl Write,
    status: u16,
    text: &str,
    keep_alive: bool,
) -> io::Result<()> {
    let body = format!("{text}\n");
    write_head(
        out,
        status,
        &[
            ("Content-Type", "text/plain; charset=utf-8".into()),
            ("Content-Length", body.len().to_string()),
        ],
        keep_alive,
    )?;
    out.write_all(body.as_bytes())
}

/// A redirect to `location` (a directory requested without its trailing slash).
pub(crate) fn write_redirect(
    out: &mut impl Write,
    location: &str,
    keep_alive: bool,
) -> io::Result<()> {
    write_head(
        out,
        301,
        &[
            ("Location", location.to_owned()),
            ("Content-Length", "0".into()),
        ],
        keep_alive,
    )
}

/// The answer to a `Range` header for a file of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Range {
    /// Serve the whole file (no usable range: several ranges, another unit, garbage).
    Whole,
    /// Bytes `start..=end`.
    Part(u64, u64),
    /// 416.
    Unsatisfiable,
}

/// Parses `bytes=A-B`, `bytes=A-` or `bytes=-N`; a header we do not handle is ignored, as
/// RFC 9110 section 14.2 allows.
pub(crate) fn parse_range(value: &str, size: u64) -> Range {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Range::Whole;
    };
    if spec.contains(',') {
        return Range::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Range::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        let Ok(suffix) = last.parse::<u64>() else {
            return Range::Whole;
        };
        if suffix == 0 || size == 0 {
            return Range::Unsatisfiable;
        }
        return Range::Part(size.saturating_sub(suffix), size - 1);
    }
    let Ok(start) = first.parse::<u64>() else {
        return Range::Whole;
    };
    let end = if last.is_empty() {
        size.saturating_sub(1)
    } else {
        match last.parse::<u64>() {
            Ok(end) if end >= start => end.min(size.saturating_sub(1)),
            _ => return Range::Whole,
        }
    };
    if start >= size {
        return Range::Unsatisfiable;
    }
    Range::Part(start, end)
}

/// The content type for a file name.
pub(crate) fn content_type(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map_or("", |(_, e)| e);
    match ext {
        "xml" => "application/xml",
        "gz" => "application/gzip",
        "xz" => "application/x-xz",
        "zst" | "zstd" => "application/zstd",
        "bz2" => "application/x-bzip2",
        "rpm" => "application/x-rpm",
        "deb" | "udeb" => "application/vnd.debian.binary-package",
        "asc" | "gpg" | "sig" => "application/pgp-signature",
        "html" | "htm" => "text/html; charset=utf-8",
        "txt" => "text/plain; charset=utf-8",
        "json" => "application/json",
        "sqlite" => "application/vnd.sqlite3",
        "" if matches!(name, "Release" | "InRelease" | "Packages" | "Sources") => {
            "text/plain; charset=utf-8"
        }
        _ => "application/octet-stream",
    }
}

/// Decodes `%XX` escapes; `None` for a malformed escape.
pub(crate) fn percent_decode_bytes(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Percent-encodes a path for an `href`, keeping `/` and unreserved characters.
pub(crate) fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Escapes text for HTML.
pub(crate) fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` (RFC 9110 section 5.6.7, IMF-fixdate).
pub fn format_http_date(time: SystemTime) -> String {
    format_utc(time, "GMT")
}

/// Parses an IMF-fixdate; other (obsolete) formats give `None`, and the header is ignored.
pub fn parse_http_date(text: &str) -> Option<SystemTime> {
    let parts: Vec<&str> = text.split_ascii_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts[..] else {
        return None;
    };
    let day: i64 = day.parse().ok()?;
    let month = MONTHS.iter().position(|m| *m == month)? as i64 + 1;
    let year: i64 = year.parse().ok()?;
    let mut hms = time.split(':').map(|x| x.parse::<u64>().ok());
    let (Some(Some(h)), Some(Some(m)), Some(Some(s)), None) =
        (hms.next(), hms.next(), hms.next(), hms.next())
    else {
        return None;
    };
    if !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = u64::try_from(days).ok()? * 86_400 + h * 3600 + m * 60 + s;
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_round_trip() {
        let t = UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(format_http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(t));
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), None);
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(parse_http_date(&format_http_date(leap)), Some(leap));
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Range::Part(0, 9));
        assert_eq!(parse_range("bytes=90-", 100), Range::Part(90, 99));
        assert_eq!(parse_range("bytes=-10", 100), Range::Part(90, 99));
        assert_eq!(parse_range("bytes=95-200", 100), Range::Part(95, 99));
        assert_eq!(parse_range("bytes=100-", 100), Range::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Range::Whole);
        assert_eq!(parse_range("items=0-1", 100), Range::Whole);
        assert_eq!(parse_range("bytes=5-1", 100), Range::Whole);
    }

    #[test]
    fn parses_requests_and_refuses_bodies() {
        let raw = b"\r\nGET /a%20b HTTP/1.1\r\nHost: x\r\nRange: bytes=1-\r\n\r\n";
        let request = read_request(&mut &raw[..], 1024).ok().flatten().unwrap();
        assert_eq!(request.method, "GET");
        assert_eq!(request.header("range"), Some("bytes=1-"));
        assert!(request.keep_alive);
        let raw = b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
        assert!(matches!(
            read_request(&mut &raw[..], 1024),
            Err(RequestError::Bad(_))
        ));
        let raw = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(2000));
        assert!(matches!(
            read_request(&mut raw.as_bytes(), 1024),
            Err(RequestError::Bad("header too large"))
        ));
    }

    #[test]
    fn finds_the_end_of_a_head_however_it_trickles_in() {
        let raw = b"\r\n\nGET / HTTP/1.1\r\nHost: x\r\r\n\r\nGET /next";
        let head = raw.len() - b"GET /next".len();
        for step in [1, 2, 7, raw.len()] {
            let mut scan = HeadScan::default();
            let mut found = None;
            for end in (step..=raw.len()).step_by(step).chain([raw.len()]) {
                if let Some(n) = scan.find(&raw[..end]) {
                    found = Some(n);
                    break;
                }
            }
            assert_eq!(found, Some(head), "step {step}");
            // The head found is the one read_request reads, to the byte.
            let mut rest = &raw[..head];
            let request = read_request(&mut rest, 1024).ok().flatten().unwrap();
            assert_eq!(request.header("host"), Some("x"));
            assert!(rest.is_empty());
        }
        let mut scan = HeadScan::default();
        assert_eq!(scan.find(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
        assert_eq!(
            HeadScan::default().find(b"\r\n\r\n"),
            None,
            "blank lines alone are no head"
        );
    }
}
