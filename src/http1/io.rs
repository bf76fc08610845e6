//! The two I/O pieces both HTTP/1 codecs' connections share: the read that keeps the reactor's
//! readiness exact, and the write queue behind one `writev`.

use std::io::{self, IoSlice};

use bytes::{Bytes, BytesMut};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// One read into `buf` (`WouldBlock` when nothing was there). A short read drained the socket:
/// the reactor's readable flag is cleared as of before the read (the read runs inside `try_io`,
/// as tokio's own `poll_read` does), so the next wait does not start with a wasted `recvfrom` →
/// EAGAIN, while bytes or a FIN that came during the read still wake the task. (Clearing after
/// the read, with a fresh look at the readiness, can swallow their event: an upload that filled
/// the window then waits for ever.) Used by ferry's HTTP/1 server and its upstream client.
pub fn read_drained(stream: &TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    let spare = buf.capacity() - buf.len();
    let mut drained = None;
    let r = stream.try_io(Interest::READABLE, || {
        let n = stream.try_read_buf(buf)?;
        if n > 0 && n < spare {
            drained = Some(n);
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    });
    match drained {
        Some(n) => Ok(n),
        None => r,
    }
}

/// What is queued for one `writev`, in a fixed array (no allocation per request): here a head
/// and one framed body piece (four parts); ferry's server gathers more (`proxy::h1`).
pub struct Out<const N: usize = 4> {
    parts: [Bytes; N],
    len: usize,
}

impl<const N: usize> Default for Out<N> {
    fn default() -> Self {
        Out { parts: std::array::from_fn(|_| Bytes::new()), len: 0 }
    }
}

impl<const N: usize> Out<N> {
    pub fn push(&mut self, b: Bytes) {
        self.parts[self.len] = b;
        self.len += 1;
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Free places.
    pub fn room(&self) -> usize {
        N - self.len
    }

    /// The queued parts, for one vectored write.
    pub fn slices(&self) -> [IoSlice<'_>; N] {
        std::array::from_fn(|i| IoSlice::new(if i < self.len { &self.parts[i] } else { &[] }))
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Drops `n` written bytes from the front.
    pub fn advance(&mut self, mut n: usize) {
        let mut whole = 0;
        for b in &mut self.parts[..self.len] {
            if n < b.len() {
                let _ = b.split_to(n);
                break;
            }
            n -= b.len();
            whole += 1;
        }
        self.parts[..self.len].rotate_left(whole);
        self.len -= whole;
        for b in &mut self.parts[self.len..] {
            *b = Bytes::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_write_queue_drops_exactly_what_was_written() {
        let mut out = Out::default();
        for p in ["head", "5\r\n", "hello", "\r\n"] {
            out.push(Bytes::from_static(p.as_bytes()));
        }
        let rest = |o: &Out| o.parts[..o.len].iter().flat_map(|b| b.to_vec()).collect::<Vec<u8>>();
        out.advance(2);
        assert_eq!(rest(&out), b"ad5\r\nhello\r\n");
        out.advance(5);
        assert_eq!((rest(&out), out.len), (b"hello\r\n".to_vec(), 2));
        out.advance(7);
        assert!(out.is_empty() && out.parts.iter().all(|b| b.is_empty()));
        out.push(Bytes::from_static(b"0\r\n\r\n"));
        assert_eq!(rest(&out), b"0\r\n\r\n");
    }
}
