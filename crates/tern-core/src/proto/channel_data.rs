//! ChannelData framing (RFC 8656 §12.4): a 4-byte header, channel number and length,
//! then the application data. This is the relayed-packet path, so it is read and
//! written in place with no allocation.

/// Size of the ChannelData header.
pub const HEADER_LEN: usize = 4;

/// Channel numbers a client may bind. RFC 8656 narrowed the range to 0x4FFF, but
/// browsers' libwebrtc and coturn's clients still pick from RFC 5766's 0x4000–0x7FFF.
pub const CHANNEL_NUMBERS: std::ops::RangeInclusive<u16> = 0x4000..=0x7FFF;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelHeader {
    pub number: u16,
    /// Length of the application data, not counting header or padding.
    pub len: u16,
}

impl ChannelHeader {
    /// Reads the header of `buf` and checks that the channel number is in range and
    /// that the announced data fits in `buf` (trailing padding is allowed).
    pub fn parse(buf: &[u8]) -> Option<Self> {
        let header: [u8; HEADER_LEN] = buf.get(..HEADER_LEN)?.try_into().ok()?;
        let number = u16::from_be_bytes([header[0], header[1]]);
        let len = u16::from_be_bytes([header[2], header[3]]);
        let fits = usize::from(len) <= buf.len() - HEADER_LEN;
        (CHANNEL_NUMBERS.contains(&number) && fits).then_some(Self { number, len })
    }

    /// The data the header announces, within `buf` as given to [`ChannelHeader::parse`].
    pub fn payload<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[HEADER_LEN..HEADER_LEN + usize::from(self.len)]
    }

    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        let [n0, n1] = self.number.to_be_bytes();
        let [l0, l1] = self.len.to_be_bytes();
        [n0, n1, l0, l1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_and_rejects_bad() {
        let pkt = [0x40, 0x01, 0x00, 0x03, b'a', b'b', b'c', 0];
        let h = ChannelHeader::parse(&pkt).unwrap();
        assert_eq!((h.number, h.len), (0x4001, 3));
        assert_eq!(h.payload(&pkt), b"abc");
        assert_eq!(h.to_bytes(), [0x40, 0x01, 0x00, 0x03]);
        // length past the end
        assert!(ChannelHeader::parse(&[0x40, 0x01, 0x00, 0x09, 1, 2]).is_none());
        // number out of range (0x8000 is not even ChannelData)
        assert!(ChannelHeader::parse(&[0x80, 0x00, 0x00, 0x00]).is_none());
        assert!(ChannelHeader::parse(&[0x3f, 0xff, 0x00, 0x00]).is_none());
        // upper RFC 5766 range accepted
        assert!(ChannelHeader::parse(&[0x7f, 0xff, 0x00, 0x00]).is_some());
        assert!(ChannelHeader::parse(&[0x40, 0x00, 0x00]).is_none());
    }
}
