//! What a data-phase packet carries: a probe (sequence number and send time, 16 bytes
//! at the start of the ChannelData payload, the rest zeros), and the reusable frame
//! around it (ChannelData header, and padding to four bytes on TCP/TLS).

use crate::proto::ChannelHeader;
use crate::proto::channel_data::HEADER_LEN;
use crate::proto::framing::channel_padding;

/// Bytes of payload a probe needs.
pub const PROBE_LEN: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// Counts up from 0 per allocation.
    pub seq: u64,
    /// Send time, nanoseconds since the data phase's clock started.
    pub sent_ns: u64,
}

impl Probe {
    /// The probe at the start of a received payload.
    pub fn read(payload: &[u8]) -> Option<Self> {
        let seq = payload.get(..8)?.try_into().ok()?;
        let sent = payload.get(8..PROBE_LEN)?.try_into().ok()?;
        Some(Self {
            seq: u64::from_be_bytes(seq),
            sent_ns: u64::from_be_bytes(sent),
        })
    }
}

/// One outgoing ChannelData frame, rewritten in place for each probe.
pub struct Frame {
    bytes: Vec<u8>,
}

impl Frame {
    /// A frame on `channel` with `payload` bytes of data (at least [`PROBE_LEN`]),
    /// padded for a stream when `stream`.
    pub fn new(channel: u16, payload: u16, stream: bool) -> Self {
        let len = payload.max(PROBE_LEN as u16);
        let mut bytes = ChannelHeader {
            number: channel,
            len,
        }
        .to_bytes()
        .to_vec();
        bytes.resize(HEADER_LEN + usize::from(len), 0);
        if stream {
            bytes.extend_from_slice(channel_padding(bytes.len()));
        }
        Self { bytes }
    }

    /// Bytes on the wire, padding included.
    pub fn wire_len(&self) -> usize {
        self.bytes.len()
    }

    /// The frame carrying `probe`.
    pub fn stamp(&mut self, probe: Probe) -> &[u8] {
        self.bytes[HEADER_LEN..HEADER_LEN + 8].copy_from_slice(&probe.seq.to_be_bytes());
        self.bytes[HEADER_LEN + 8..HEADER_LEN + PROBE_LEN]
            .copy_from_slice(&probe.sent_ns.to_be_bytes());
        &self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamped_frame_reads_back() {
        let mut frame = Frame::new(0x4000, 17, true);
        let probe = Probe {
            seq: 7,
            sent_ns: 123_456_789,
        };
        let bytes = frame.stamp(probe).to_vec();
        assert_eq!(bytes.len(), 24, "4 + 17, padded to 24");
        let header = ChannelHeader::parse(&bytes).expect("header");
        assert_eq!((header.number, header.len), (0x4000, 17));
        assert_eq!(Probe::read(header.payload(&bytes)), Some(probe));
        assert_eq!(Frame::new(0x4000, 17, false).stamp(probe).len(), 21);
        assert_eq!(Probe::read(&[0; 15]), None);
    }
}
