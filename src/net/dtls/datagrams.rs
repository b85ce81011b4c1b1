//! The "socket" OpenSSL reads and writes for one DTLS client: datagrams handed in by
//! the listener, and datagrams OpenSSL writes, picked up and sent by the session. One
//! read is one datagram and one write is one datagram, as DTLS expects of a datagram
//! transport; an empty inbox reads as "would block".

use std::collections::VecDeque;
use std::io::{self, Read, Write};

/// Datagrams waiting for OpenSSL to read, and those it wrote.
#[derive(Debug, Default)]
pub struct Datagrams {
    inbox: VecDeque<Vec<u8>>,
    outbox: Vec<Vec<u8>>,
}

impl Datagrams {
    /// Starting with one datagram to read.
    pub fn with(first: &[u8]) -> Self {
        let mut datagrams = Self::default();
        datagrams.push(first.to_vec());
        datagrams
    }

    /// Hands OpenSSL one more datagram.
    pub fn push(&mut self, datagram: Vec<u8>) {
        self.inbox.push_back(datagram);
    }

    /// The datagrams OpenSSL wrote since the last call, to be sent.
    pub fn take_written(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.outbox)
    }
}

impl Read for Datagrams {
    /// One whole datagram; a buffer too small for it gets its start (OpenSSL reads
    /// with room for the largest record, so this does not happen).
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let datagram = self.inbox.pop_front().ok_or(io::ErrorKind::WouldBlock)?;
        let n = datagram.len().min(buf.len());
        buf[..n].copy_from_slice(&datagram[..n]);
        Ok(n)
    }
}

impl Write for Datagrams {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.outbox.push(buf.to_vec());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_whole_datagrams_in_order_then_would_block() {
        let mut d = Datagrams::with(b"first");
        d.push(b"second".to_vec());
        let mut buf = [0u8; 16];
        assert_eq!(d.read(&mut buf).unwrap(), 5);
        assert_eq!(&buf[..5], b"first");
        assert_eq!(d.read(&mut buf).unwrap(), 6);
        let err = d.read(&mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        d.write_all(b"one").unwrap();
        d.write_all(b"two").unwrap();
        assert_eq!(d.take_written(), vec![b"one".to_vec(), b"two".to_vec()]);
        assert!(d.take_written().is_empty());
    }
}
