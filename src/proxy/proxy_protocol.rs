//! PROXY protocol (v1 text and v2 binary, as HAProxy specifies it): reading the header an outer
//! load balancer puts before a connection's first byte, and writing one toward an upstream.
//! Parsing is the `ppp` crate's; this module only moves bytes.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use ppp::v2;
use ppp::{HeaderResult, PartialResult};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::config::ProxyProtocol;

/// The largest header accepted: a v2 header with a generous set of TLVs.
const MAX: usize = 4096;

/// The client behind `stream`: the address its PROXY header carries, or `peer` for a `LOCAL` /
/// `UNKNOWN` header (the load balancer's own health checks). Bounded by the handshake timeout.
pub async fn accept(stream: &mut TcpStream, peer: SocketAddr) -> io::Result<SocketAddr> {
    match tokio::time::timeout(super::HANDSHAKE_TIMEOUT, read_header(stream)).await {
        Ok(r) => r.map(|a| a.unwrap_or(peer)),
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "no complete PROXY header in time")),
    }
}

/// Reads the PROXY header at the start of `stream` and exactly that: the bytes after it stay in
/// the socket for the protocol that follows. Returns the client's address, or `None` for a
/// `LOCAL` / `UNKNOWN` header.
async fn read_header(stream: &mut TcpStream) -> io::Result<Option<SocketAddr>> {
    let mut buf = vec![0u8; MAX];
    let mut seen = 0;
    loop {
        // Peek until the whole header is there, then consume only it.
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed before a PROXY header"));
        }
        let parsed = HeaderResult::parse(&buf[..n]);
        if parsed.is_incomplete() {
            if n == MAX {
                return Err(invalid(format!("PROXY header longer than {MAX} bytes")));
            }
            if n == seen {
                // Nothing new since the last peek: wait a little for the rest of the header.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            seen = n;
            continue;
        }
        let (len, addr) = match parsed {
            HeaderResult::V1(Ok(h)) => (
                h.header.len(),
                match h.addresses {
                    ppp::v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                    ppp::v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                    ppp::v1::Addresses::Unknown => None,
                },
            ),
            HeaderResult::V2(Ok(h)) => (
                h.len(),
                match (h.command, h.addresses) {
                    (v2::Command::Local, _) => None,
                    (_, v2::Addresses::IPv4(a)) => Some(SocketAddr::from((a.source_address, a.source_port))),
                    (_, v2::Addresses::IPv6(a)) => Some(SocketAddr::from((a.source_address, a.source_port))),
                    _ => None,
                },
            ),
            HeaderResult::V1(Err(e)) => return Err(invalid(format!("bad PROXY v1 header: {e}"))),
            HeaderResult::V2(Err(e)) => return Err(invalid(format!("bad PROXY v2 header: {e}"))),
        };
        let mut header = vec![0u8; len];
        stream.read_exact(&mut header).await?;
        return Ok(addr);
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// The header announcing a connection from `client` to `local`.
pub fn header(version: ProxyProtocol, client: SocketAddr, local: SocketAddr) -> Vec<u8> {
    // Both sides in one family, as the protocol requires.
    let (client, local) = match (client, local) {
        (SocketAddr::V4(_), SocketAddr::V6(l)) => match l.ip().to_ipv4_mapped() {
            Some(ip) => (client, SocketAddr::from((ip, l.port()))),
            None => (SocketAddr::from((client.ip().to_canonical(), client.port())), local),
        },
        (c, l) => {
            (SocketAddr::from((c.ip().to_canonical(), c.port())), SocketAddr::from((l.ip().to_canonical(), l.port())))
        }
    };
    match version {
        ProxyProtocol::V1 => ppp::v1::Addresses::from((client, local)).to_string().into_bytes(),
        ProxyProtocol::V2 => {
            v2::Builder::with_addresses(v2::Version::Two | v2::Command::Proxy, v2::Protocol::Stream, (client, local))
                .build()
                .expect("writing a header into a Vec cannot fail")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_headers_parse_back() {
        let c: SocketAddr = "10.1.2.3:5555".parse().unwrap();
        let l: SocketAddr = "10.9.9.9:80".parse().unwrap();
        assert_eq!(header(ProxyProtocol::V1, c, l), b"PROXY TCP4 10.1.2.3 10.9.9.9 5555 80\r\n");
        let v2 = header(ProxyProtocol::V2, c, l);
        match HeaderResult::parse(&v2) {
            HeaderResult::V2(Ok(h)) => {
                assert_eq!(h.len(), v2.len());
                assert!(matches!(h.addresses, v2::Addresses::IPv4(a) if a.source_port == 5555));
            }
            other => panic!("{other:?}"),
        }
        // A v4 client on a dual-stack socket is announced as v4.
        let mapped: SocketAddr = "[::ffff:10.1.2.3]:5555".parse().unwrap();
        let l6: SocketAddr = "[::ffff:10.9.9.9]:80".parse().unwrap();
        assert_eq!(header(ProxyProtocol::V1, mapped, l6), b"PROXY TCP4 10.1.2.3 10.9.9.9 5555 80\r\n");
    }
}
