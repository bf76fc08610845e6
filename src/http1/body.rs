//! Message bodies on the wire: the decoder (Content-Length, chunked, close-delimited) and the
//! chunk-size line.
//!
//! Strict where a lenient reading could desynchronise a connection (the classic smuggling
//! surfaces): a chunk-size line is hex digits, optional extensions and CRLF — no bare LF, no
//! sign, no overflow; extensions and trailers are bounded and free of control characters.

use bytes::{Buf, Bytes, BytesMut};

/// Chunk extensions and trailer fields, in total per body (hyper: 16 KiB of extensions).
const MAX_CHUNK_META: usize = 16 * 1024;
/// Trailer fields at most (hyper's default for header and trailer fields alike).
const MAX_TRAILERS: u8 = 100;

/// Why a message (its head, read by a codec, or its body) could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("invalid response head: {0}")]
    Head(&'static str),
    #[error("response head larger than {0} bytes")]
    HeadTooLarge(usize),
    #[error("invalid chunked body: {0}")]
    Chunk(&'static str),
    #[error("the connection closed before the body ended ({0} bytes missing)")]
    Truncated(u64),
    #[error("the connection closed inside a chunked body")]
    TruncatedChunked,
}

/// The size line of a chunk: `{len:x}\r\n`.
pub fn chunk_size_line(len: usize) -> Bytes {
    Bytes::from(format!("{len:x}\r\n"))
}

/// The response body's framing, and where its decoding stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoder {
    /// This many bytes left.
    Length(u64),
    Chunked(Chunked),
    /// Until the upstream closes.
    Eof,
    /// Ended.
    Done,
}

/// What [`Decoder::decode`] found in the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    Data(Bytes),
    /// The body has ended (the bytes after it, if any, are left in the buffer).
    End,
    /// More bytes are needed.
    More,
}

/// Where a chunked body stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chunked {
    state: ChunkState,
    /// The size being read, or the data left in the current chunk.
    size: u64,
    digits: u8,
    /// Extension and trailer bytes seen so far.
    meta: usize,
    /// Trailer fields seen so far.
    trailers: u8,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    /// Spaces or tabs after the size (before `;` or CR).
    SizeSpace,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final CRLF).
    TrailerStart,
    /// In a trailer field's name (a token), before its colon.
    TrailerName,
    /// In a trailer field's value.
    TrailerValue,
    TrailerLf,
    EndLf,
}

impl Decoder {
    /// Is the body known to have ended (nothing more to read)?
    pub fn is_done(&self) -> bool {
        matches!(self, Decoder::Done)
    }

    /// Bytes still expected, when the framing says.
    pub fn remaining(&self) -> Option<u64> {
        match self {
            Decoder::Length(n) => Some(*n),
            Decoder::Done => Some(0),
            _ => None,
        }
    }

    /// Takes the next piece of body out of `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ParseError> {
        match self {
            Decoder::Done => Ok(Decoded::End),
            Decoder::Length(left) => {
                if buf.is_empty() {
                    return Ok(Decoded::More);
                }
                let take = (*left).min(buf.len() as u64) as usize;
                *left -= take as u64;
                let data = buf.split_to(take).freeze();
                if *left == 0 {
                    *self = Decoder::Done;
                }
                Ok(Decoded::Data(data))
            }
            Decoder::Eof => {
                if buf.is_empty() {
                    return Ok(Decoded::More);
                }
                Ok(Decoded::Data(buf.split().freeze()))
            }
            Decoder::Chunked(c) => {
                let r = c.decode(buf)?;
                if r == Decoded::End {
                    *self = Decoder::Done;
                }
                Ok(r)
            }
        }
    }

    /// The connection ended (read returned 0): the end of a close-delimited body, an error for
    /// any other unfinished one.
    pub fn eof(&mut self) -> Result<(), ParseError> {
        match self {
            Decoder::Eof | Decoder::Done => {
                *self = Decoder::Done;
                Ok(())
            }
            Decoder::Length(n) => Err(ParseError::Truncated(*n)),
            Decoder::Chunked(_) => Err(ParseError::TruncatedChunked),
        }
    }
}

impl Chunked {
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ParseError> {
        use ChunkState::*;
        let bad = |why| Err(ParseError::Chunk(why));
        loop {
            if self.state == Data {
                if buf.is_empty() {
                    return Ok(Decoded::More);
                }
                let take = self.size.min(buf.len() as u64) as usize;
                self.size -= take as u64;
                if self.size == 0 {
                    self.state = DataCr;
                }
                return Ok(Decoded::Data(buf.split_to(take).freeze()));
            }
            let Some(&b) = buf.first() else { return Ok(Decoded::More) };
            buf.advance(1);
            match self.state {
                Size => match hex(b) {
                    Some(d) => {
                        self.digits += 1;
                        if self.digits > 16 {
                            return bad("chunk size too large");
                        }
                        self.size = self.size << 4 | u64::from(d);
                    }
                    None if self.digits == 0 => return bad("chunk size expected"),
                    None => match b {
                        b' ' | b'\t' => self.state = SizeSpace,
                        b';' => self.state = Extension,
                        b'\r' => self.state = SizeLf,
                        _ => return bad("invalid character in chunk size"),
                    },
                },
                SizeSpace => match b {
                    b' ' | b'\t' => {}
                    b';' => self.state = Extension,
                    b'\r' => self.state = SizeLf,
                    _ => return bad("invalid character after chunk size"),
                },
                Extension => {
                    self.meta += 1;
                    if self.meta > MAX_CHUNK_META {
                        return bad("chunk extensions too long");
                    }
                    match b {
                        b'\r' => self.state = SizeLf,
                        b'\n' => return bad("bare LF in chunk extension"),
                        // Control characters other than HTAB have no place in an extension.
                        0..=8 | 10..=31 | 127 => return bad("control character in chunk extension"),
                        _ => {}
                    }
                }
                SizeLf => {
                    if b != b'\n' {
                        return bad("chunk size line not ended by CRLF");
                    }
                    self.digits = 0;
                    self.state = if self.size == 0 { TrailerStart } else { Data };
                }
                Data => unreachable!("handled above"),
                DataCr => {
                    if b != b'\r' {
                        return bad("chunk data not followed by CRLF");
                    }
                    self.state = DataLf;
                }
                DataLf => {
                    if b != b'\n' {
                        return bad("chunk data not followed by CRLF");
                    }
                    self.state = Size;
                }
                // RFC 9112 §7.1.2: the trailer section is field lines, `token ":" value`, as in
                // a head; a line that is not one is refused, never skipped (a parser that skips
                // it and one that refuses disagree on the message).
                TrailerStart => match b {
                    b'\r' => self.state = EndLf,
                    _ if tchar(b) => {
                        self.trailers += 1;
                        if self.trailers > MAX_TRAILERS {
                            return bad("too many trailer fields");
                        }
                        self.state = TrailerName;
                        self.trailer_byte(b)?;
                    }
                    _ => return bad("trailer line is not a field"),
                },
                TrailerName => match b {
                    b':' => {
                        self.state = TrailerValue;
                        self.trailer_byte(b)?;
                    }
                    _ if tchar(b) => self.trailer_byte(b)?,
                    _ => return bad("trailer field name is not a token"),
                },
                TrailerValue => {
                    if b == b'\r' {
                        self.state = TrailerLf;
                    } else {
                        self.trailer_byte(b)?;
                    }
                }
                TrailerLf => {
                    if b != b'\n' {
                        return bad("trailer line not ended by CRLF");
                    }
                    self.state = TrailerStart;
                }
                EndLf => {
                    if b != b'\n' {
                        return bad("chunked body not ended by CRLF");
                    }
                    return Ok(Decoded::End);
                }
            }
        }
    }

    fn trailer_byte(&mut self, b: u8) -> Result<(), ParseError> {
        self.meta += 1;
        if self.meta > MAX_CHUNK_META {
            return Err(ParseError::Chunk("trailer fields too long"));
        }
        if b == b'\n' || (b < 32 && b != b'\t') || b == 127 {
            return Err(ParseError::Chunk("control character in a trailer field"));
        }
        Ok(())
    }
}

/// A token character (RFC 9110 §5.6.2).
fn tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn hex(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Feeds `wire` to a decoder in pieces of `step` bytes; the body and what is left after it.
    pub(crate) fn decode_all(mut d: Decoder, wire: &[u8], step: usize) -> Result<(Vec<u8>, Vec<u8>), ParseError> {
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut rest = wire;
        loop {
            match d.decode(&mut buf)? {
                Decoded::Data(b) => body.extend_from_slice(&b),
                Decoded::End => return Ok((body, buf.to_vec())),
                Decoded::More if rest.is_empty() => {
                    d.eof()?;
                    return Ok((body, Vec::new()));
                }
                Decoded::More => {
                    let n = step.min(rest.len());
                    buf.extend_from_slice(&rest[..n]);
                    rest = &rest[n..];
                }
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_in_any_split() {
        let wire = b"5;ext=1\r\nhello\r\n6 \r\n world\r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for step in 1..wire.len() {
            let (body, rest) = decode_all(Decoder::Chunked(Chunked::default()), wire, step).unwrap();
            assert_eq!(body, b"hello world0123456789");
            // Whatever followed the body in the last piece read stays for the next response.
            assert!(b"NEXT".starts_with(&rest), "{rest:?}");
        }
    }

    #[test]
    fn bad_chunks_are_refused() {
        for wire in [
            &b"5\nhello\r\n0\r\n\r\n"[..],
            b"x\r\n",
            b"-5\r\nhello\r\n0\r\n\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"11111111111111111\r\n",
            b"5;a\nb\r\nhello\r\n0\r\n\r\n",
            b"0\r\nX: 1\n\r\n",
            b" 5\r\nhello\r\n0\r\n\r\n",
            // Trailer lines that are not fields (found by the differential fuzz targets: hyper
            // refuses them, the decoder used to skip them).
            b"0\r\nlo\r\n\r\n",
            b"0\r\nX-T: 1\r\n0\r\n\r\n",
            b"0\r\nX T: 1\r\n\r\n",
            b"0\r\n: 1\r\n\r\n",
            b"0\r\n X: 1\r\n\r\n",
        ] {
            let r = decode_all(Decoder::Chunked(Chunked::default()), wire, 64);
            assert!(r.is_err(), "{:?} accepted as {r:?}", String::from_utf8_lossy(wire));
        }
        // Truncated bodies are errors, a close-delimited one is not.
        assert!(matches!(decode_all(Decoder::Length(10), b"short", 64), Err(ParseError::Truncated(5))));
        assert!(decode_all(Decoder::Chunked(Chunked::default()), b"5\r\nhel", 64).is_err());
        assert_eq!(decode_all(Decoder::Eof, b"all of it", 4).unwrap().0, b"all of it");
    }
}
