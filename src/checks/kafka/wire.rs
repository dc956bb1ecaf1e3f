//! Kafka's framing, by hand: a 4-byte length, a request header (v1, or v2 with a tag buffer
//! for flexible versions), big-endian fields, and in flexible versions compact (uvarint)
//! lengths and tagged fields. Every length the server sends is checked against what is
//! left, and a frame over [`MAX_RESPONSE`] is refused before a buffer is allocated.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::wait::Failure;

/// The largest response we read. ApiVersions, SASL and a Metadata answer without topics
/// take a few KiB even for a large cluster; a bigger length prefix is not a Kafka broker
/// talking (or is an attack).
pub const MAX_RESPONSE: usize = 1024 * 1024;

pub const CLIENT_ID: &str = "initbox";

/// Writes one request: a length prefix, request header v1 (v2 when flexible: a tag
/// buffer after the client id), the body.
pub async fn send<S: AsyncWrite + Unpin>(
    stream: &mut S,
    api: i16,
    version: i16,
    correlation: i32,
    flexible: bool,
    body: &[u8],
) -> std::io::Result<()> {
    let mut request = Vec::with_capacity(32 + body.len());
    request.extend_from_slice(&[0; 4]);
    request.extend_from_slice(&api.to_be_bytes());
    request.extend_from_slice(&version.to_be_bytes());
    request.extend_from_slice(&correlation.to_be_bytes());
    put_string(&mut request, CLIENT_ID);
    if flexible {
        request.push(0);
    }
    request.extend_from_slice(body);
    let size = (request.len() - 4) as u32;
    request[..4].copy_from_slice(&size.to_be_bytes());
    stream.write_all(&request).await?;
    stream.flush().await
}

/// Reads one response and returns its body: the length is checked before the buffer is
/// allocated, the correlation id must be ours, and a flexible header's tags are skipped.
pub async fn receive<S: AsyncRead + Unpin>(
    stream: &mut S,
    api: &str,
    correlation: i32,
    flexible_header: bool,
) -> std::result::Result<Vec<u8>, Failure> {
    let mut prefix = [0u8; 4];
    if let Err(error) = stream.read_exact(&mut prefix).await {
        return Err(match error.kind() {
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset => {
                Failure::Retry(closed(api))
            }
            _ => io_failure(&format!("reading the answer to {api}"), &error),
        });
    }
    if &prefix == b"HTTP" {
        return Err(Failure::Retry(format!(
            "the server answered {api} in HTTP (is this a Kafka port?)"
        )));
    }
    // A TLS record (an alert, or a handshake) where a length was due: an SSL listener.
    if (0x14..=0x17).contains(&prefix[0]) && prefix[1] == 3 && prefix[2] <= 4 {
        return Err(Failure::Retry(format!(
            "the server answered {api} with TLS: an SSL listener? Add --tls"
        )));
    }
    let size = i32::from_be_bytes(prefix);
    if size < 4 || size as usize > MAX_RESPONSE {
        return Err(Failure::Retry(format!(
            "the server announced an answer to {api} of {} bytes, over the {} MiB limit or \
             too short (is this a Kafka port?)",
            u32::from_be_bytes(prefix),
            MAX_RESPONSE / (1024 * 1024)
        )));
    }
    let mut frame = vec![0u8; size as usize];
    stream
        .read_exact(&mut frame)
        .await
        .map_err(|e| io_failure(&format!("reading the answer to {api}"), &e))?;
    let mut r = Reader::new(&frame);
    let got = r.i32().map_err(Failure::Retry)?;
    if got != correlation {
        return Err(Failure::Retry(format!(
            "the answer to {api} has correlation id {got}, not {correlation} (is this a Kafka \
             port?)"
        )));
    }
    if flexible_header {
        r.skip_tags()
            .map_err(|why| Failure::Retry(format!("the answer to {api} is malformed ({why})")))?;
    }
    let start = r.pos;
    frame.drain(..start);
    Ok(frame)
}

fn closed(api: &str) -> String {
    if api == "ApiVersions" {
        "the server closed the connection without answering ApiVersions (is this a Kafka \
         listener? An SSL listener needs --tls)"
            .into()
    } else {
        format!(
            "the broker closed the connection instead of answering {api} (does this listener \
             require SASL? Add --user and --password-file)"
        )
    }
}

pub fn io_failure(action: &str, error: &std::io::Error) -> Failure {
    Failure::Retry(format!("{action}: {}", crate::reason::io(error)))
}

pub fn put_string(buf: &mut Vec<u8>, text: &str) {
    buf.extend_from_slice(&(text.len() as i16).to_be_bytes());
    buf.extend_from_slice(text.as_bytes());
}

pub fn put_compact_string(buf: &mut Vec<u8>, text: &str) {
    put_compact_bytes(buf, text.as_bytes());
}

pub fn put_compact_bytes(buf: &mut Vec<u8>, bytes: &[u8]) {
    put_uvarint(buf, bytes.len() as u64 + 1);
    buf.extend_from_slice(bytes);
}

pub fn put_bytes(buf: &mut Vec<u8>, bytes: &[u8]) {
    buf.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
    buf.extend_from_slice(bytes);
}

pub fn put_uvarint(buf: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        buf.push((value as u8) | 0x80);
        value >>= 7;
    }
    buf.push(value as u8);
}

/// A bounded reader over one response: every length is checked against what is left.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let left = self.buf.len() - self.pos;
        if n > left {
            return Err(format!(
                "a field of {n} bytes runs past the end ({left} left)"
            ));
        }
        let bytes = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    pub fn i16(&mut self) -> std::result::Result<i16, String> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into().unwrap()))
    }

    pub fn i32(&mut self) -> std::result::Result<i32, String> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into().unwrap()))
    }

    pub fn uvarint(&mut self) -> std::result::Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..35).step_by(7) {
            let byte = self.take(1)?[0];
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("a varint longer than 5 bytes".into())
    }

    /// An array's element count: INT32 (-1 = null, read as empty), or a compact uvarint
    /// of count + 1 in flexible versions. Each element takes at least one byte, so a count
    /// over what is left is refused rather than looped over.
    pub fn array_len(&mut self, flexible: bool) -> std::result::Result<usize, String> {
        let count = if flexible {
            self.uvarint()?.saturating_sub(1) as usize
        } else {
            self.i32()?.max(0) as usize
        };
        let left = self.buf.len() - self.pos;
        if count > left {
            return Err(format!("an array of {count} entries in {left} bytes"));
        }
        Ok(count)
    }

    /// A string, or None when null (length -1, or compact length 0).
    pub fn nullable_string(
        &mut self,
        flexible: bool,
    ) -> std::result::Result<Option<String>, String> {
        let len = if flexible {
            match self.uvarint()? {
                0 => return Ok(None),
                n => (n - 1) as usize,
            }
        } else {
            match self.i16()? {
                n if n < 0 => return Ok(None),
                n => n as usize,
            }
        };
        Ok(Some(String::from_utf8_lossy(self.take(len)?).into_owned()))
    }

    pub fn string(&mut self, flexible: bool) -> std::result::Result<String, String> {
        self.nullable_string(flexible)?
            .ok_or_else(|| "a null string where one is required".into())
    }

    /// BYTES (INT32 length) or COMPACT_BYTES; null reads as empty.
    pub fn bytes(&mut self, flexible: bool) -> std::result::Result<&'a [u8], String> {
        let len = if flexible {
            self.uvarint()?.saturating_sub(1) as usize
        } else {
            self.i32()?.max(0) as usize
        };
        self.take(len)
    }

    /// Skips a tagged-fields section (count, then tag, size and bytes for each).
    pub fn skip_tags(&mut self) -> std::result::Result<(), String> {
        let count = self.uvarint()?;
        for _ in 0..count {
            self.uvarint()?;
            let size = self.uvarint()?;
            self.take(usize::try_from(size).map_err(|_| "a tagged field too large")?)?;
        }
        Ok(())
    }
}

/// An error code as Kafka names it, with the number (`UNSUPPORTED_VERSION (error code 35)`).
pub fn error_name(code: i16) -> String {
    let name = match code {
        -1 => "UNKNOWN_SERVER_ERROR",
        7 => "REQUEST_TIMED_OUT",
        8 => "BROKER_NOT_AVAILABLE",
        14 => "COORDINATOR_LOAD_IN_PROGRESS",
        15 => "COORDINATOR_NOT_AVAILABLE",
        31 => "CLUSTER_AUTHORIZATION_FAILED",
        33 => "UNSUPPORTED_SASL_MECHANISM",
        34 => "ILLEGAL_SASL_STATE",
        35 => "UNSUPPORTED_VERSION",
        42 => "INVALID_REQUEST",
        58 => "SASL_AUTHENTICATION_FAILED",
        _ => return format!("error code {code}"),
    };
    format!("{name} (error code {code})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_past_the_end_are_refused_without_allocating() {
        // An array announcing 2^31-1 entries in a 4-byte body.
        let mut r = Reader::new(&[0x7f, 0xff, 0xff, 0xff]);
        assert!(
            r.array_len(false)
                .unwrap_err()
                .contains("2147483647 entries")
        );
        // A string of 0x7fff bytes with two bytes behind it.
        let mut r = Reader::new(&[0x7f, 0xff, b'a', b'b']);
        assert!(
            r.nullable_string(false)
                .unwrap_err()
                .contains("runs past the end")
        );
        // A varint that never ends.
        let mut r = Reader::new(&[0xff; 8]);
        assert!(r.uvarint().unwrap_err().contains("longer than 5 bytes"));
    }

    #[test]
    fn uvarints_round_trip() {
        for value in [0u64, 1, 127, 128, 300, 16_383, 16_384, u32::MAX as u64] {
            let mut buf = Vec::new();
            put_uvarint(&mut buf, value);
            assert_eq!(Reader::new(&buf).uvarint().unwrap(), value, "{buf:?}");
        }
    }
}
