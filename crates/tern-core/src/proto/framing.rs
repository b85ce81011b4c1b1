//! Finding message boundaries on a byte stream (RFC 8656 §12.5: TURN over TCP/TLS).
//!
//! STUN messages and ChannelData arrive back to back; ChannelData is padded to a
//! multiple of four on streams. Framing is check-then-parse: an incomplete frame is a
//! normal state ("need more bytes"), not an error; only bytes that cannot start a frame,
//! or a frame longer than allowed, are errors, and the connection is then closed.

use super::channel_data::HEADER_LEN as CHANNEL_HEADER_LEN;
use stun::message::MESSAGE_HEADER_SIZE;

/// What the start of a stream buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// A whole STUN message of this many bytes.
    Stun(usize),
    /// A whole ChannelData frame: `len` bytes of message (header + data), followed by
    /// padding up to `padded`.
    ChannelData { len: usize, padded: usize },
    /// Not enough bytes yet.
    Incomplete,
}

/// Why a stream cannot go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("bytes that are neither STUN nor ChannelData")]
    NotTurn,
    #[error("frame of {0} bytes is over the limit")]
    TooLong(usize),
}

/// Looks at the start of `buf` and says whether a whole frame is there.
/// `max_frame` bounds a frame's size (header included).
pub fn check(buf: &[u8], max_frame: usize) -> Result<Frame, FramingError> {
    let Some(&first) = buf.first() else {
        return Ok(Frame::Incomplete);
    };
    let (header, len) = match first >> 6 {
        0b00 => (MESSAGE_HEADER_SIZE, MESSAGE_HEADER_SIZE),
        0b01 => (CHANNEL_HEADER_LEN, CHANNEL_HEADER_LEN),
        _ => return Err(FramingError::NotTurn),
    };
    if buf.len() < 4 {
        return Ok(Frame::Incomplete);
    }
    if header == MESSAGE_HEADER_SIZE
        && buf.len() >= 8
        && buf[4..8] != stun::message::MAGIC_COOKIE.to_be_bytes()
    {
        return Err(FramingError::NotTurn);
    }
    let body = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    let len = len + body;
    let padded = if header == CHANNEL_HEADER_LEN {
        len.next_multiple_of(4)
    } else {
        len
    };
    if padded > max_frame {
        return Err(FramingError::TooLong(padded));
    }
    if buf.len() < padded {
        return Ok(Frame::Incomplete);
    }
    Ok(if header == CHANNEL_HEADER_LEN {
        Frame::ChannelData { len, padded }
    } else {
        Frame::Stun(len)
    })
}

/// Zero bytes that pad a ChannelData frame of `len` bytes on a stream.
pub fn channel_padding(len: usize) -> &'static [u8] {
    const ZEROS: [u8; 3] = [0; 3];
    &ZEROS[..len.next_multiple_of(4) - len]
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 4096;

    #[test]
    fn incomplete_until_whole() {
        let stun = [
            0, 1, 0, 4, 0x21, 0x12, 0xa4, 0x42, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4,
        ];
        for cut in 0..stun.len() {
            assert_eq!(check(&stun[..cut], MAX), Ok(Frame::Incomplete), "cut {cut}");
        }
        assert_eq!(check(&stun, MAX), Ok(Frame::Stun(24)));
    }

    #[test]
    fn channel_data_is_padded_on_streams() {
        let cd = [0x40, 0, 0, 5, 1, 2, 3, 4, 5, 0, 0, 0, 0xff];
        assert_eq!(check(&cd[..9], MAX), Ok(Frame::Incomplete));
        assert_eq!(
            check(&cd[..12], MAX),
            Ok(Frame::ChannelData { len: 9, padded: 12 })
        );
        assert_eq!(
            check(&cd, MAX),
            Ok(Frame::ChannelData { len: 9, padded: 12 })
        );
        assert_eq!(channel_padding(9), &[0, 0, 0]);
        assert_eq!(channel_padding(8), &[] as &[u8]);
    }

    #[test]
    fn refuses_other_bytes_and_oversize() {
        // A TLS record looks like a STUN header until the magic cookie is missing.
        let client_hello = [0x16, 3, 1, 0, 0xc8, 1, 0, 0, 0xc4, 3, 3];
        assert_eq!(check(&client_hello, MAX), Err(FramingError::NotTurn));
        assert_eq!(check(&[0x80], MAX), Err(FramingError::NotTurn));
        assert_eq!(check(&[0xC0, 0, 0, 0], MAX), Err(FramingError::NotTurn));
        assert_eq!(
            check(&[0, 1, 0xff, 0xfc], 1000),
            Err(FramingError::TooLong(65552))
        );
        assert_eq!(
            check(&[0x40, 0, 0xff, 0xff], 1000),
            Err(FramingError::TooLong(65540))
        );
    }
}
