//! One `.xz` stream assembled from blocks that were compressed separately.
//!
//! An `.xz` stream is a header, any number of independently compressed blocks, an index of the
//! blocks' sizes and a footer. Compressing the blocks one by one lets `vrepo index --update` keep
//! the compressed form of the parts of `Packages` that did not change and compress only the
//! rest. It has to be one stream, not several concatenated ones: apt's decoder stops at the end
//! of the first stream (measured: a `Packages.xz` made of two streams gives "Hash Sum mismatch").
//!
//! A block is made by compressing its data as a complete single-block stream with liblzma and
//! cutting the block out of it; the stream's own index says where the block ends. The checks are
//! CRC32, so a block's check field is the CRC32 of its uncompressed data, which lets a cached
//! block be matched against the data it claims to hold.

use std::io::{self, Write};

use flate2::Crc;
use liblzma::stream::{Check, Filters, LzmaOptions, Stream};

const HEADER_MAGIC: [u8; 6] = [0xfd, b'7', b'z', b'X', b'Z', 0x00];
const FOOTER_MAGIC: [u8; 2] = [b'Y', b'Z'];
/// Stream flags: no reserved bits, check type 0x01 (CRC32).
const STREAM_FLAGS: [u8; 2] = [0x00, 0x01];
const CHECK_LEN: usize = 4;
const HEADER_LEN: usize = 12;
const FOOTER_LEN: usize = 12;

/// One compressed block and the sizes the stream index records for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XzBlock {
    /// Block header, compressed data, padding and check, exactly as they go into a stream.
    pub bytes: Vec<u8>,
    /// The block's size without its padding, as the index records it.
    pub unpadded_size: u64,
    /// Size of the data the block decompresses to.
    pub uncompressed_size: u64,
}

impl XzBlock {
    /// Rebuilds a block from its stored bytes and sizes, checking that they are consistent:
    /// `None` for anything that would not form a valid block. The CRC32 returned is the block's
    /// check field, the CRC32 of the data the block holds.
    pub fn from_parts(
        bytes: Vec<u8>,
        unpadded_size: u64,
        uncompressed_size: u64,
    ) -> Option<(XzBlock, u32)> {
        let header_len = (usize::from(*bytes.first()?) + 1) * 4;
        let unpadded = usize::try_from(unpadded_size).ok()?;
        let valid = bytes[0] != 0
            && bytes.len().is_multiple_of(4)
            && unpadded.div_ceil(4) * 4 == bytes.len()
            && unpadded >= header_len + CHECK_LEN
            && block_header_is_valid(&bytes[..header_len])
            // Padding sits between the compressed data and the check: zero bytes only.
            && bytes[unpadded - CHECK_LEN..bytes.len() - CHECK_LEN]
                .iter()
                .all(|&b| b == 0);
        if !valid {
            return None;
        }
        let crc = u32::from_le_bytes(bytes[bytes.len() - CHECK_LEN..].try_into().ok()?);
        Some((
            XzBlock {
                bytes,
                unpadded_size,
                uncompressed_size,
            },
            crc,
        ))
    }
}

/// Compresses `data` into one block with the LZMA2 preset `preset` and a dictionary no larger
/// than the data needs (a small dictionary makes small blocks cheap to encode).
pub fn compress_block(data: &[u8], preset: u32) -> io::Result<XzBlock> {
    let mut options = LzmaOptions::new_preset(preset).map_err(io::Error::other)?;
    // liblzma's minimum dictionary is 4 KiB.
    let dict = u32::try_from(data.len())
        .unwrap_or(u32::MAX)
        .clamp(4096, 1 << 20);
    options.dict_size(dict);
    let mut filters = Filters::new();
    filters.lzma2(&options);
    let stream = Stream::new_stream_encoder(&filters, Check::Crc32).map_err(io::Error::other)?;
    let mut encoder = liblzma::write::XzEncoder::new_stream(Vec::new(), stream);
    encoder.write_all(data)?;
    let whole = encoder.finish()?;
    extract_single_block(whole, data.len() as u64)
}

/// Cuts the one block out of a complete single-block stream.
fn extract_single_block(mut whole: Vec<u8>, expected_size: u64) -> io::Result<XzBlock> {
    let invalid = || io::Error::new(io::ErrorKind::InvalidData, "unexpected xz encoder output");
    if whole.len() < HEADER_LEN + FOOTER_LEN {
        return Err(invalid());
    }
    let footer = &whole[whole.len() - FOOTER_LEN..];
    let backward = u32::from_le_bytes(footer[4..8].try_into().map_err(|_| invalid())?);
    let index_len = (backward as usize + 1) * 4;
    let index_start = whole
        .len()
        .checked_sub(FOOTER_LEN + index_len)
        .ok_or_else(invalid)?;
    let index = &whole[index_start..whole.len() - FOOTER_LEN];
    let mut pos = 1; // the index indicator
    let records = read_vli(index, &mut pos).ok_or_else(invalid)?;
    if index.first() != Some(&0) || records != 1 {
        return Err(invalid());
    }
    let unpadded = read_vli(index, &mut pos).ok_or_else(invalid)?;
    let uncompressed = read_vli(index, &mut pos).ok_or_else(invalid)?;
    let block_end = HEADER_LEN as u64 + unpadded.div_ceil(4) * 4;
    if uncompressed != expected_size || block_end != index_start as u64 {
        return Err(invalid());
    }
    whole.truncate(index_start);
    whole.drain(..HEADER_LEN);
    Ok(XzBlock {
        bytes: whole,
        unpadded_size: unpadded,
        uncompressed_size: uncompressed,
    })
}

/// Whether a block header's own CRC32 matches.
fn block_header_is_valid(header: &[u8]) -> bool {
    let Some(crc_at) = header.len().checked_sub(4) else {
        return false;
    };
    crc32(&header[..crc_at]).to_le_bytes() == header[crc_at..]
}

/// Writes one `.xz` stream from blocks given in order.
pub struct XzStreamWriter<W: Write> {
    out: W,
    records: Vec<(u64, u64)>,
}

impl<W: Write> XzStreamWriter<W> {
    /// Writes the stream header.
    pub fn new(mut out: W) -> io::Result<Self> {
        out.write_all(&HEADER_MAGIC)?;
        out.write_all(&STREAM_FLAGS)?;
        out.write_all(&crc32(&STREAM_FLAGS).to_le_bytes())?;
        Ok(XzStreamWriter {
            out,
            records: Vec::new(),
        })
    }

    /// Appends a block.
    pub fn append(&mut self, block: &XzBlock) -> io::Result<()> {
        self.out.write_all(&block.bytes)?;
        self.records
            .push((block.unpadded_size, block.uncompressed_size));
        Ok(())
    }

    /// Writes the index and the footer and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        let mut index = vec![0u8];
        write_vli(&mut index, self.records.len() as u64);
        for &(unpadded, uncompressed) in &self.records {
            write_vli(&mut index, unpadded);
            write_vli(&mut index, uncompressed);
        }
        while !index.len().is_multiple_of(4) {
            index.push(0);
        }
        let index_crc = crc32(&index);
        index.extend_from_slice(&index_crc.to_le_bytes());
        self.out.write_all(&index)?;
        let backward = u32::try_from(index.len() / 4 - 1)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "xz index too large"))?;
        let mut tail = Vec::with_capacity(6);
        tail.extend_from_slice(&backward.to_le_bytes());
        tail.extend_from_slice(&STREAM_FLAGS);
        self.out.write_all(&crc32(&tail).to_le_bytes())?;
        self.out.write_all(&tail)?;
        self.out.write_all(&FOOTER_MAGIC)?;
        Ok(self.out)
    }
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = Crc::new();
    crc.update(bytes);
    crc.sum()
}

/// xz's variable-length integers: seven bits per byte, least significant first, at most nine.
fn write_vli(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn read_vli(bytes: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for i in 0..9 {
        let byte = *bytes.get(*pos)?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            // A multi-byte VLI may not end in a zero byte (non-minimal encoding).
            return (i == 0 || byte != 0).then_some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::Read;

    fn assemble(parts: &[&[u8]]) -> Vec<u8> {
        let mut writer = XzStreamWriter::new(Vec::new()).unwrap();
        for part in parts {
            writer.append(&compress_block(part, 0).unwrap()).unwrap();
        }
        writer.finish().unwrap()
    }

    fn decode(stream: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        liblzma::read::XzDecoder::new(stream)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn blocks_decode_as_one_stream() {
        let a = b"Package: a\nVersion: 1\n\n".repeat(300);
        let b = b"Package: b\nVersion: 2\n\n".repeat(7);
        let stream = assemble(&[&a, &b, b"x"]);
        let mut expected = a.clone();
        expected.extend_from_slice(&b);
        expected.push(b'x');
        assert_eq!(decode(&stream), expected);
        // One stream: the single-stream decoder (no LZMA_CONCATENATED) reads all of it.
        let mut single = Vec::new();
        let stream_decoder = Stream::new_stream_decoder(u64::MAX, 0).unwrap();
        liblzma::read::XzDecoder::new_stream(&stream[..], stream_decoder)
            .read_to_end(&mut single)
            .unwrap();
        assert_eq!(single, expected);
    }

    #[test]
    fn no_blocks_is_an_empty_stream() {
        assert_eq!(decode(&assemble(&[])), b"");
    }

    #[test]
    fn block_round_trips_through_its_parts() {
        let data = b"some data to compress, some data to compress\n".repeat(50);
        let block = compress_block(&data, 0).unwrap();
        let (again, crc) = XzBlock::from_parts(
            block.bytes.clone(),
            block.unpadded_size,
            block.uncompressed_size,
        )
        .unwrap();
        assert_eq!(again, block);
        assert_eq!(crc, crc32(&data));
        let mut broken = block.bytes.clone();
        broken[2] ^= 0x55;
        let sizes = (block.unpadded_size, block.uncompressed_size);
        assert!(XzBlock::from_parts(broken, sizes.0, sizes.1).is_none());
        assert!(XzBlock::from_parts(block.bytes.clone(), sizes.0 + 4, sizes.1).is_none());
        assert!(XzBlock::from_parts(Vec::new(), 0, 0).is_none());
        assert!(XzBlock::from_parts(block.bytes[..8].to_vec(), 8, 0).is_none());
    }

    #[test]
    fn vli_round_trips() {
        for value in [0, 1, 127, 128, 300, 1 << 35, u64::MAX >> 1] {
            let mut out = Vec::new();
            write_vli(&mut out, value);
            let mut pos = 0;
            assert_eq!(read_vli(&out, &mut pos), Some(value));
            assert_eq!(pos, out.len());
        }
    }
}
