//! Which kind of archive a file is, told by its first bytes (never by its name: a download
//! URL often has none, or the wrong one), and the decoder that reads it.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};

/// The archive formats extract reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Tar,
    TarGz,
    TarXz,
    TarZst,
    TarBz2,
    Zip,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Tar => "tar",
            Format::TarGz => "tar.gz",
            Format::TarXz => "tar.xz",
            Format::TarZst => "tar.zst",
            Format::TarBz2 => "tar.bz2",
            Format::Zip => "zip",
        }
    }
}

/// How much of the start of a file detection looks at: a tar header block.
const SNIFF: usize = 512;

/// Tells the format from the first bytes; `None` when it is none of them.
pub fn detect(head: &[u8]) -> Option<Format> {
    let starts = |magic: &[u8]| head.starts_with(magic);
    if starts(&[0x1f, 0x8b]) {
        Some(Format::TarGz)
    } else if starts(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Some(Format::TarXz)
    } else if starts(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some(Format::TarZst)
    } else if starts(b"BZh") && head.get(3).is_some_and(|b| (b'1'..=b'9').contains(b)) {
        Some(Format::TarBz2)
    } else if starts(b"PK\x03\x04") || starts(b"PK\x05\x06") {
        Some(Format::Zip)
    } else if is_tar_header(head) {
        Some(Format::Tar)
    } else {
        None
    }
}

/// A tar header: the ustar magic, or (for the pre-POSIX v7 format, which has none) a
/// header checksum that adds up.
fn is_tar_header(head: &[u8]) -> bool {
    if head.len() < SNIFF {
        return false;
    }
    if &head[257..262] == b"ustar" {
        return true;
    }
    let field = &head[148..156];
    let text: String = field
        .iter()
        .take_while(|b| **b != 0 && **b != b' ')
        .map(|b| *b as char)
        .collect();
    let Ok(stored) = u32::from_str_radix(text.trim(), 8) else {
        return false;
    };
    let sum: u32 = head[..SNIFF]
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                *b as u32
            }
        })
        .sum();
    // An all-zero block sums to 256 with its blank checksum field: not a header.
    sum == stored && head[0] != 0
}

/// Reads the start of the file and rewinds it.
pub fn sniff(file: &mut File) -> io::Result<Option<Format>> {
    let mut head = Vec::with_capacity(SNIFF);
    file.by_ref().take(SNIFF as u64).read_to_end(&mut head)?;
    file.seek(SeekFrom::Start(0))?;
    Ok(detect(&head))
}

/// How much a decoder reads from the file at a time.
const READ_BUFFER: usize = 256 * 1024;

/// The uncompressed tar stream of a (compressed) tar file.
pub fn tar_stream(format: Format, file: File) -> io::Result<Box<dyn Read>> {
    let file = BufReader::with_capacity(READ_BUFFER, file);
    Ok(match format {
        Format::Tar => Box::new(file),
        // Concatenated gzip members (as `cat a.gz b.gz` makes) are one stream, as for gzip.
        Format::TarGz => Box::new(flate2::bufread::MultiGzDecoder::new(file)),
        Format::TarXz => Box::new(lzma_rust2::XzReader::new(file, true)),
        Format::TarZst => Box::new(ZstdFrames::new(file)?),
        Format::TarBz2 => Box::new(bzip2::bufread::MultiBzDecoder::new(file)),
        Format::Zip => unreachable!("a zip archive is not a tar stream"),
    })
}

type ZstdDecoder<R> = ruzstd::decoding::StreamingDecoder<R, ruzstd::decoding::FrameDecoder>;

/// A zstd stream of one or more frames (as `zstd` writes with `--rsyncable`, or as
/// concatenated `.zst` files are), read as one: ruzstd's decoder reads one frame.
struct ZstdFrames<R: BufRead> {
    decoder: Option<ZstdDecoder<R>>,
}

impl<R: BufRead> ZstdFrames<R> {
    fn new(input: R) -> io::Result<Self> {
        Ok(ZstdFrames {
            decoder: Some(ruzstd::decoding::StreamingDecoder::new(input).map_err(invalid)?),
        })
    }
}

fn invalid(error: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error.to_string())
}

impl<R: BufRead> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let Some(decoder) = self.decoder.as_mut() else {
                return Ok(0);
            };
            let read = decoder.read(buf)?;
            if read > 0 || buf.is_empty() {
                return Ok(read);
            }
            // This frame is done: another one may follow.
            let mut input = self.decoder.take().expect("a decoder").into_inner();
            if input.fill_buf()?.is_empty() {
                return Ok(0);
            }
            self.decoder = Some(ruzstd::decoding::StreamingDecoder::new(input).map_err(invalid)?);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_told_by_their_first_bytes() {
        assert_eq!(detect(&[0x1f, 0x8b, 8, 0]), Some(Format::TarGz));
        assert_eq!(detect(b"\xfd7zXZ\x00\x00"), Some(Format::TarXz));
        assert_eq!(detect(&[0x28, 0xb5, 0x2f, 0xfd, 0]), Some(Format::TarZst));
        assert_eq!(detect(b"BZh91AY&SY"), Some(Format::TarBz2));
        assert_eq!(detect(b"BZhx"), None);
        assert_eq!(detect(b"PK\x03\x04rest"), Some(Format::Zip));
        assert_eq!(detect(b"PK\x05\x06"), Some(Format::Zip));
        assert_eq!(detect(b"<html>not an archive</html>"), None);
        let mut ustar = vec![0u8; 512];
        ustar[0] = b'a';
        ustar[257..262].copy_from_slice(b"ustar");
        assert_eq!(detect(&ustar), Some(Format::Tar));
        assert_eq!(
            detect(&[0u8; 512]),
            None,
            "an all-zero block is not a header"
        );
    }
}
