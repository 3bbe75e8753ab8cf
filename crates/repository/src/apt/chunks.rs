//! `Packages.gz` and `Packages.xz` built from chunks of stanzas compressed independently, and the
//! cache of compressed chunks that lets `--update` recompress only the chunks that changed.
//!
//! Compressing the whole `Packages` file costs more CPU than reading the few packages that change
//! between two runs (20,000 stanzas: gzip -6 0.6 s, xz -0 1.1 s). So the index is cut into chunks
//! of whole stanzas; each chunk becomes one gzip member (a `.gz` file may hold several, and every
//! gzip reader, apt's included, reads them all) and one block of a single xz stream (see
//! [`crate::xz_blocks`]). A chunk whose bytes are unchanged since the previous run is copied from
//! the cache instead of being compressed again.
//!
//! Chunk boundaries are content-defined: a chunk ends after a stanza whose first line (the
//! package name) hashes to a marker value, so adding or changing one package moves no boundary
//! elsewhere and only its own chunk is recompressed. Chunks average about [`MARKER_EVERY`]
//! stanzas: small enough that a 1% change leaves most chunks untouched, large enough that gzip
//! and xz lose little (measured below in the benchmark notes of the module using this).
//!
//! The cache (`DIR/.vrepo/apt.chunks`) is keyed by the SHA-256 of a chunk's plain bytes. It is our
//! own file, but a damaged one must not publish a broken index: it ends with the SHA-256 of its
//! content, checked when it is opened, and every chunk taken from it must carry the CRC32 and
//! length of the plain bytes it replaces.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use flate2::Crc;
use sha2::{Digest, Sha256};

use crate::cache::CacheError;
use crate::publish::{STATE_DIR, sync_dir};
use crate::xz_blocks::{XzBlock, compress_block};

const MAGIC: &[u8; 8] = b"VRCHNK1\n";
const TRAILER: &[u8; 4] = b"END\n";
/// What shaped the cached bytes; a cache written with other settings is ignored.
const FINGERPRINT: &str = "apt-chunks-v1 gzip=6 xz=lzma2-preset0-crc32";
/// gzip level of `Packages.gz`, as `gzip -6` and apt-ftparchive.
const GZIP_LEVEL: u32 = 6;
/// xz preset of `Packages.xz`: `Packages` is mostly hex digests, which no preset shrinks much
/// (20,000 stanzas, 20 MB: preset 6 14.6 s of CPU for 3.96 MB, preset 0 1.1 s for 5.09 MB).
const XZ_PRESET: u32 = 0;
/// Fewest stanzas in a chunk (except the last).
const MIN_STANZAS: usize = 8;
/// One stanza in this many ends a chunk, on average.
const MARKER_EVERY: u64 = 32;
/// A chunk ends at the first stanza boundary past this size, marker or not.
const MAX_CHUNK_BYTES: usize = 256 << 10;
/// Largest chunk accepted from a cache file.
const MAX_CACHED_CHUNK: u32 = 64 << 20;

/// Identity of a chunk: the SHA-256 of its plain bytes.
pub(super) type ChunkKey = [u8; 32];

/// Collects stanzas and cuts them into chunks.
#[derive(Default)]
pub(super) struct Chunker {
    current: Vec<u8>,
    stanzas: usize,
}

impl Chunker {
    /// Adds one complete stanza (ending in a blank line); returns a chunk when one is complete.
    pub(super) fn push(&mut self, stanza: &[u8]) -> Option<Vec<u8>> {
        self.current.extend_from_slice(stanza);
        self.stanzas += 1;
        let first_line = stanza.split(|&b| b == b'\n').next().unwrap_or_default();
        let marker = fnv1a(first_line).is_multiple_of(MARKER_EVERY);
        let end = (marker && self.stanzas >= MIN_STANZAS) || self.current.len() >= MAX_CHUNK_BYTES;
        end.then(|| self.take())
    }

    /// The last, possibly short, chunk.
    pub(super) fn finish(&mut self) -> Option<Vec<u8>> {
        (!self.current.is_empty()).then(|| self.take())
    }

    fn take(&mut self) -> Vec<u8> {
        self.stanzas = 0;
        std::mem::take(&mut self.current)
    }
}

/// FNV-1a: a hash that is the same in every build, so chunk boundaries (and the cache) survive
/// an upgrade of the toolchain.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// What identifies a chunk's plain bytes and lets a cached copy be checked against them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ChunkId {
    pub(super) key: ChunkKey,
    pub(super) len: u32,
    pub(super) crc: u32,
}

impl ChunkId {
    /// `None` for a chunk too large to describe (over 4 GiB; chunks are at most a few hundred
    /// KiB plus one stanza).
    pub(super) fn of(plain: &[u8]) -> Option<ChunkId> {
        let mut crc = Crc::new();
        crc.update(plain);
        Some(ChunkId {
            key: Sha256::digest(plain).into(),
            len: u32::try_from(plain.len()).ok()?,
            crc: crc.sum(),
        })
    }
}

/// One chunk in both compressed forms.
#[derive(Debug, Clone)]
pub(super) struct CompressedChunk {
    pub(super) id: ChunkId,
    /// One complete gzip member.
    pub(super) gzip: Vec<u8>,
    /// One xz block.
    pub(super) xz: XzBlock,
    /// Taken from the cache rather than compressed in this run.
    pub(super) reused: bool,
}

/// Compresses a chunk both ways.
pub(super) fn compress_chunk(id: ChunkId, plain: &[u8]) -> io::Result<CompressedChunk> {
    let mut gz = flate2::write::GzEncoder::new(
        Vec::with_capacity(plain.len() / 3),
        flate2::Compression::new(GZIP_LEVEL),
    );
    gz.write_all(plain)?;
    Ok(CompressedChunk {
        id,
        gzip: gz.finish()?,
        xz: compress_block(plain, XZ_PRESET)?,
        reused: false,
    })
}

/// The gzip member of no data, for an index without stanzas (an empty file is not valid gzip).
pub(super) fn empty_gzip_member() -> io::Result<Vec<u8>> {
    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(GZIP_LEVEL)).finish()
}

fn cache_path(dir: &Path) -> PathBuf {
    dir.join(STATE_DIR).join("apt.chunks")
}

/// Where one cached chunk sits in the previous cache file.
#[derive(Debug, Clone, Copy)]
struct Slot {
    offset: u64,
    len: u32,
    crc: u32,
    gzip_len: u32,
    xz_len: u32,
    xz_unpadded: u64,
}

/// The previous run's chunks, read on demand.
pub(super) struct ChunkCache {
    file: Option<File>,
    slots: HashMap<ChunkKey, Slot>,
}

impl ChunkCache {
    /// No cache: every chunk is compressed.
    pub(super) fn empty() -> ChunkCache {
        ChunkCache {
            file: None,
            slots: HashMap::new(),
        }
    }

    /// Opens the cache of repository `dir`; a missing, stale or damaged cache is an empty one.
    pub(super) fn open(dir: &Path) -> ChunkCache {
        let path = cache_path(dir);
        match File::open(&path).and_then(|file| index_cache(&file).map(|slots| (file, slots))) {
            Ok((file, Some(slots))) => ChunkCache {
                file: Some(file),
                slots,
            },
            Ok((_, None)) | Err(_) => ChunkCache::empty(),
        }
    }

    /// The cached chunk with these plain bytes, if there is one and it checks out.
    pub(super) fn get(&self, id: &ChunkId) -> Option<CompressedChunk> {
        let slot = self.slots.get(&id.key)?;
        let file = self.file.as_ref()?;
        if slot.len != id.len || slot.crc != id.crc {
            return None;
        }
        let mut gzip = vec![0u8; usize::try_from(slot.gzip_len).ok()?];
        file.read_exact_at(&mut gzip, slot.offset).ok()?;
        let mut xz = vec![0u8; usize::try_from(slot.xz_len).ok()?];
        file.read_exact_at(&mut xz, slot.offset + u64::from(slot.gzip_len))
            .ok()?;
        if !gzip_member_matches(&gzip, id) {
            return None;
        }
        let (xz, xz_crc) = XzBlock::from_parts(xz, slot.xz_unpadded, u64::from(id.len))?;
        (xz_crc == id.crc).then_some(CompressedChunk {
            id: *id,
            gzip,
            xz,
            reused: true,
        })
    }
}

/// A gzip member whose header is gzip's and whose trailer names these plain bytes.
fn gzip_member_matches(member: &[u8], id: &ChunkId) -> bool {
    if member.len() < 18 || member[..3] != [0x1f, 0x8b, 0x08] {
        return false;
    }
    let trailer = &member[member.len() - 8..];
    trailer[..4] == id.crc.to_le_bytes() && trailer[4..] == id.len.to_le_bytes()
}

/// Reads the cache once, checking its digest, and records where each chunk is.
/// `Ok(None)`: not a cache of ours, or damaged.
fn index_cache(file: &File) -> io::Result<Option<HashMap<ChunkKey, Slot>>> {
    let total = file.metadata()?.len();
    let mut reader = DigestReader {
        inner: BufReader::with_capacity(1 << 16, file),
        digest: Sha256::new(),
        offset: 0,
    };
    let mut magic = [0u8; 8];
    reader.read_exact(&mut magic)?;
    let fingerprint_len = read_u32(&mut reader)?;
    if magic != *MAGIC || fingerprint_len as usize != FINGERPRINT.len() {
        return Ok(None);
    }
    let mut fingerprint = vec![0u8; FINGERPRINT.len()];
    reader.read_exact(&mut fingerprint)?;
    if fingerprint != FINGERPRINT.as_bytes() {
        return Ok(None);
    }
    let mut slots = HashMap::new();
    loop {
        let mut tag = [0u8; 4];
        reader.read_exact(&mut tag)?;
        if tag == *TRAILER {
            break;
        }
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(&tag);
        reader.read_exact(&mut key[4..])?;
        let len = read_u32(&mut reader)?;
        let crc = read_u32(&mut reader)?;
        let gzip_len = read_u32(&mut reader)?;
        let xz_len = read_u32(&mut reader)?;
        let xz_unpadded = read_u64(&mut reader)?;
        if gzip_len > MAX_CACHED_CHUNK || xz_len > MAX_CACHED_CHUNK {
            return Ok(None);
        }
        let offset = reader.offset;
        let data_len = u64::from(gzip_len) + u64::from(xz_len);
        if offset + data_len > total {
            return Ok(None);
        }
        io::copy(&mut (&mut reader).take(data_len), &mut io::sink())?;
        slots.insert(
            key,
            Slot {
                offset,
                len,
                crc,
                gzip_len,
                xz_len,
                xz_unpadded,
            },
        );
    }
    let computed = reader.digest.finalize();
    let mut stored = [0u8; 32];
    reader.inner.read_exact(&mut stored)?;
    let at_end = reader.inner.read(&mut [0u8; 1])? == 0;
    Ok((at_end && computed.as_slice() == stored).then_some(slots))
}

/// Hashes and counts what passes through.
struct DigestReader<R> {
    inner: R,
    digest: Sha256,
    offset: u64,
}

impl<R: Read> Read for DigestReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let got = self.inner.read(buf)?;
        self.digest.update(&buf[..got]);
        self.offset += got as u64;
        Ok(got)
    }
}

fn read_u32(reader: &mut impl Read) -> io::Result<u32> {
    let mut bytes = [0u8; 4];
    reader.read_exact(&mut bytes)?;
    Ok(u32::from_le_bytes(bytes))
}

fn read_u64(reader: &mut impl Read) -> io::Result<u64> {
    let mut bytes = [0u8; 8];
    reader.read_exact(&mut bytes)?;
    Ok(u64::from_le_bytes(bytes))
}

/// Writes the chunks of this run to a new cache; [`ChunkCacheWriter::commit`] puts it in place.
pub(super) struct ChunkCacheWriter {
    tmp: PathBuf,
    path: PathBuf,
    out: Option<BufWriter<File>>,
    digest: Sha256,
    seen: HashSet<ChunkKey>,
}

impl ChunkCacheWriter {
    /// Starts a new cache for repository `dir`.
    pub(super) fn create(dir: &Path) -> Result<ChunkCacheWriter, CacheError> {
        let path = cache_path(dir);
        let tmp = dir
            .join(STATE_DIR)
            .join(format!(".apt.chunks.tmp-{}", std::process::id()));
        let mut writer = ChunkCacheWriter {
            out: Some(BufWriter::new(
                File::create(&tmp).map_err(cache_error("create", &tmp))?,
            )),
            tmp,
            path,
            digest: Sha256::new(),
            seen: HashSet::new(),
        };
        let mut header = MAGIC.to_vec();
        header.extend_from_slice(&(FINGERPRINT.len() as u32).to_le_bytes());
        header.extend_from_slice(FINGERPRINT.as_bytes());
        writer.write(&header)?;
        Ok(writer)
    }

    /// Records a chunk (once, however many indexes hold it).
    pub(super) fn push(&mut self, chunk: &CompressedChunk) -> Result<(), CacheError> {
        if !self.seen.insert(chunk.id.key) {
            return Ok(());
        }
        let (Ok(gzip_len), Ok(xz_len)) = (
            u32::try_from(chunk.gzip.len()),
            u32::try_from(chunk.xz.bytes.len()),
        ) else {
            return Ok(());
        };
        let mut record = Vec::with_capacity(64);
        record.extend_from_slice(&chunk.id.key);
        record.extend_from_slice(&chunk.id.len.to_le_bytes());
        record.extend_from_slice(&chunk.id.crc.to_le_bytes());
        record.extend_from_slice(&gzip_len.to_le_bytes());
        record.extend_from_slice(&xz_len.to_le_bytes());
        record.extend_from_slice(&chunk.xz.unpadded_size.to_le_bytes());
        self.write(&record)?;
        self.write(&chunk.gzip)?;
        self.write(&chunk.xz.bytes)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), CacheError> {
        self.digest.update(bytes);
        match self.out.as_mut() {
            Some(out) => out
                .write_all(bytes)
                .map_err(cache_error("write", &self.tmp)),
            None => Ok(()),
        }
    }

    /// Finishes the file and puts it in place of the previous cache.
    pub(super) fn commit(mut self) -> Result<(), CacheError> {
        self.write(TRAILER)?;
        let digest = std::mem::take(&mut self.digest).finalize();
        let out = self.out.take();
        let result = (|| {
            let mut out = out.ok_or(io::ErrorKind::InvalidInput)?;
            out.write_all(&digest)?;
            let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
            file.sync_all()?;
            std::fs::rename(&self.tmp, &self.path)
        })();
        result.map_err(cache_error("write", &self.path))?;
        if let Some(parent) = self.path.parent() {
            sync_dir(parent)?;
        }
        Ok(())
    }
}

impl Drop for ChunkCacheWriter {
    fn drop(&mut self) {
        // After a successful commit the temporary name no longer exists.
        let _ = std::fs::remove_file(&self.tmp);
    }
}

fn cache_error<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> CacheError + 'a {
    move |source| CacheError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn stanza(i: usize) -> Vec<u8> {
        format!("Package: p{i}\nVersion: 1.{i}\nDescription: d\n\n").into_bytes()
    }

    fn chunks_of(stanzas: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let mut chunker = Chunker::default();
        let mut chunks: Vec<Vec<u8>> = stanzas.iter().filter_map(|s| chunker.push(s)).collect();
        chunks.extend(chunker.finish());
        chunks
    }

    #[test]
    fn a_changed_stanza_changes_only_its_chunk() {
        let stanzas: Vec<Vec<u8>> = (0..2000).map(stanza).collect();
        let before = chunks_of(&stanzas);
        assert!(before.len() > 20, "{} chunks", before.len());
        assert_eq!(before.concat(), stanzas.concat());
        let mut changed = stanzas.clone();
        changed[1000] = b"Package: p1000\nVersion: 2\n\n".to_vec();
        changed.insert(1500, stanza(99_999));
        let after = chunks_of(&changed);
        let old: HashSet<&Vec<u8>> = before.iter().collect();
        let new_chunks = after.iter().filter(|c| !old.contains(c)).count();
        assert!(new_chunks <= 2, "{new_chunks} chunks changed");
    }

    #[test]
    fn cache_round_trip_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(STATE_DIR)).unwrap();
        let plain = stanza(1).repeat(100);
        let id = ChunkId::of(&plain).unwrap();
        let chunk = compress_chunk(id, &plain).unwrap();
        let mut writer = ChunkCacheWriter::create(dir.path()).unwrap();
        writer.push(&chunk).unwrap();
        writer.commit().unwrap();

        let cache = ChunkCache::open(dir.path());
        let got = cache.get(&id).unwrap();
        assert_eq!(got.gzip, chunk.gzip);
        assert_eq!(got.xz, chunk.xz);
        let other = ChunkId::of(b"other").unwrap();
        assert!(cache.get(&other).is_none());

        // Any flipped byte makes the whole cache unusable rather than wrong.
        let path = cache_path(dir.path());
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(ChunkCache::open(dir.path()).get(&id).is_none());
    }
}
