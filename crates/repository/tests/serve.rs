//! `serve` over real sockets: ranges, conditional requests, content types, persistent
//! connections, and no way out of the served tree (`..`, encoded `..`, hidden state, symlinks
//! planted to point outside).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::Served;
use vserver_repository::serve::{ServeOptions, format_http_date};

fn start(dir: &Path, options: ServeOptions) -> Served {
    Served::start(dir, options)
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `request` raw (so that `..` reaches the server untouched) and reads one response.
fn exchange(reader: &mut BufReader<TcpStream>, request: &str, head: bool) -> Response {
    reader.get_mut().write_all(request.as_bytes()).unwrap();
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let status = line.split(' ').nth(1).unwrap().parse().unwrap();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').unwrap();
        headers.push((name.to_owned(), value.trim().to_owned()));
    }
    let mut response = Response {
        status,
        headers,
        body: Vec::new(),
    };
    let length: usize = response
        .header("content-length")
        .map_or(0, |v| v.parse().unwrap());
    if !head {
        response.body = vec![0; length];
        reader.read_exact(&mut response.body).unwrap();
    }
    response
}

fn get(addr: SocketAddr, target: &str, extra: &str) -> Response {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream);
    exchange(
        &mut reader,
        &format!("GET {target} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n"),
        false,
    )
}

fn tree() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir_all(root.join("repodata")).unwrap();
    std::fs::create_dir_all(root.join(".vrepo")).unwrap();
    std::fs::create_dir_all(root.join("pool/a b")).unwrap();
    std::fs::write(root.join("repodata/repomd.xml"), "<repomd/>\n").unwrap();
    std::fs::write(root.join(".vrepo/lock"), "").unwrap();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(root.join("pool/a b/x+1.rpm"), &data).unwrap();
    std::fs::write(tmp.path().join("secret"), "outside\n").unwrap();
    std::os::unix::fs::symlink(tmp.path().join("secret"), root.join("abs-link")).unwrap();
    std::os::unix::fs::symlink("../secret", root.join("rel-link")).unwrap();
    std::os::unix::fs::symlink("../../secret", root.join("pool/deep-link")).unwrap();
    std::os::unix::fs::symlink("repodata/repomd.xml", root.join("inside-link")).unwrap();
    (tmp, root)
}

#[test]
fn serves_files_ranges_and_conditional_requests() {
    let (_tmp, root) = tree();
    let server = start(&root, ServeOptions::default());
    let data = std::fs::read(root.join("pool/a b/x+1.rpm")).unwrap();

    let r = get(server.addr, "/pool/a%20b/x%2B1.rpm", "");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, data);
    assert_eq!(r.header("content-type"), Some("application/x-rpm"));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));

    let r = get(
        server.addr,
        "/pool/a%20b/x%2B1.rpm",
        "Range: bytes=1000-\r\n",
    );
    assert_eq!(r.status, 206);
    assert_eq!(r.body, data[1000..]);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes 1000-99999/{}", data.len()).as_str())
    );
    let r = get(server.addr, "/pool/a%20b/x%2B1.rpm", "Range: bytes=-10\r\n");
    assert_eq!(r.body, data[data.len() - 10..]);
    let r = get(
        server.addr,
        "/pool/a%20b/x%2B1.rpm",
        "Range: bytes=200000-\r\n",
    );
    assert_eq!(r.status, 416);

    // Written just now: no Last-Modified (whole-second dates could not tell it from a change
    // within the same second), and a conditional request gets the file.
    let fresh_date = format_http_date(SystemTime::now() + Duration::from_secs(5));
    let r = get(server.addr, "/repodata/repomd.xml", "");
    assert_eq!(r.header("content-type"), Some("application/xml"));
    assert_eq!(r.header("last-modified"), None);
    let r = get(
        server.addr,
        "/repodata/repomd.xml",
        &format!("If-Modified-Since: {fresh_date}\r\n"),
    );
    assert_eq!(r.status, 200);
    // Settled for a while: dated, and revalidated with 304.
    std::fs::File::options()
        .write(true)
        .open(root.join("repodata/repomd.xml"))
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(60))
        .unwrap();
    let r = get(server.addr, "/repodata/repomd.xml", "");
    let modified = r.header("last-modified").unwrap().to_owned();
    let r = get(
        server.addr,
        "/repodata/repomd.xml",
        &format!("If-Modified-Since: {modified}\r\n"),
    );
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    let long_ago = format_http_date(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000));
    let r = get(
        server.addr,
        "/repodata/repomd.xml",
        &format!("If-Modified-Since: {long_ago}\r\n"),
    );
    assert_eq!(r.status, 200);

    // A directory without its slash is redirected, with it listed (hidden entries left out).
    assert_eq!(get(server.addr, "/pool", "").status, 301);
    let listing = String::from_utf8(get(server.addr, "/", "").body).unwrap();
    assert!(listing.contains("href=\"repodata/\""), "{listing}");
    assert!(!listing.contains(".vrepo"), "{listing}");

    // HEAD: headers only, then the same connection serves the next request.
    let stream = TcpStream::connect(server.addr).unwrap();
    let mut reader = BufReader::new(stream);
    let r = exchange(
        &mut reader,
        "HEAD /pool/a%20b/x%2B1.rpm HTTP/1.1\r\nHost: x\r\n\r\n",
        true,
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("100000"));
    let r = exchange(
        &mut reader,
        "GET /repodata/repomd.xml HTTP/1.1\r\nHost: x\r\n\r\n",
        false,
    );
    assert_eq!(r.body, b"<repomd/>\n");

    let r = get(server.addr, "/nope", "");
    assert_eq!(r.status, 404);
    let stream = TcpStream::connect(server.addr).unwrap();
    let mut reader = BufReader::new(stream);
    let r = exchange(
        &mut reader,
        "DELETE /repodata/repomd.xml HTTP/1.1\r\nHost: x\r\n\r\n",
        false,
    );
    assert_eq!(r.status, 405);
    assert!(root.join("repodata/repomd.xml").exists());
}

#[test]
fn nothing_outside_the_tree_or_hidden_is_served() {
    let (_tmp, root) = tree();
    let server = start(&root, ServeOptions::default());
    for target in [
        "/../secret",
        "/repodata/../../secret",
        "/%2e%2e/secret",
        "/%2E%2E%2Fsecret",
        "/..%2fsecret",
        "/abs-link",
        "/rel-link",
        "/pool/deep-link",
        "/.vrepo/lock",
        "/.vrepo/",
        "/repodata/%00",
        "//..//secret",
    ] {
        let r = get(server.addr, target, "");
        assert!(
            r.status == 404 || r.status == 403 || r.status == 400,
            "{target}: {}",
            r.status
        );
        assert!(
            !String::from_utf8_lossy(&r.body).contains("outside"),
            "{target} leaked the file outside the tree"
        );
    }
    // A symlink that stays inside the tree is followed.
    let r = get(server.addr, "/inside-link", "");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"<repomd/>\n");
}

#[test]
fn a_full_queue_gets_503_and_shutdown_returns() {
    let (_tmp, root) = tree();
    let served = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = Arc::clone(&served);
    let server = start(
        &root,
        ServeOptions {
            workers: 1,
            queue: 1,
            keep_alive: Duration::from_secs(5),
            logger: Some(Arc::new(move |_| {
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            })),
            ..ServeOptions::default()
        },
    );
    // One idle persistent connection holds the only worker, a second one waits in the queue;
    // a third is turned away at once.
    let mut busy = BufReader::new(TcpStream::connect(server.addr).unwrap());
    let r = exchange(
        &mut busy,
        "GET /repodata/repomd.xml HTTP/1.1\r\nHost: x\r\n\r\n",
        false,
    );
    assert_eq!(r.status, 200);
    let _queued = TcpStream::connect(server.addr).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let r = get(server.addr, "/repodata/repomd.xml", "");
    assert_eq!(r.status, 503);
    drop(busy);
    drop(server);
    assert!(served.load(std::sync::atomic::Ordering::Relaxed) >= 1);
}

#[test]
fn malformed_requests_get_400() {
    let (_tmp, root) = tree();
    let server = start(&root, ServeOptions::default());
    for request in [
        "GARBAGE\r\n\r\n",
        "GET / HTTP/2.0\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
    ] {
        let stream = TcpStream::connect(server.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut reader = BufReader::new(stream);
        let r = exchange(&mut reader, request, false);
        assert_eq!(r.status, 400, "{request:?}");
    }
    let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
    let stream = TcpStream::connect(server.addr).unwrap();
    let mut reader = BufReader::new(stream);
    assert_eq!(exchange(&mut reader, &big, false).status, 431);
}
