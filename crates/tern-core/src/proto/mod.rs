//! The wire format: telling STUN from ChannelData, reading requests strictly, and
//! writing responses. Encoding and attribute types come from the `stun` and `turn`
//! crates; the checks a server needs on top of them (exact lengths, attributes after
//! MESSAGE-INTEGRITY ignored, strict address decoding) live here.
//!
//! Nothing here knows about allocations, credentials or sockets.

pub mod attrs;
pub mod channel_data;
pub mod framing;
pub mod request;
pub mod response;

pub use channel_data::ChannelHeader;
pub use request::{Malformed, Request};
pub use response::Response;

/// What the first bytes of a datagram or stream frame say it is (RFC 8656 §12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Stun,
    ChannelData,
    Other,
}

/// Whether an outgoing message carries relayed data (ChannelData or a Data
/// indication) rather than a response or a ConnectionAttempt: data may be dropped under
/// pressure, the others may not.
pub fn is_relayed_data(bytes: &[u8]) -> bool {
    use stun::message::{CLASS_INDICATION, METHOD_DATA, MessageType};
    match classify(bytes) {
        Kind::ChannelData => true,
        Kind::Stun => {
            let data = MessageType::new(METHOD_DATA, CLASS_INDICATION).value();
            bytes.len() >= 2 && u16::from_be_bytes([bytes[0], bytes[1]]) == data
        }
        Kind::Other => false,
    }
}

/// Whether a stream frame is a ConnectionBind request (RFC 6062 §4.4): what follows
/// it on its connection, once it is answered with success, is no longer framed.
pub fn is_connection_bind_request(bytes: &[u8]) -> bool {
    use stun::message::{CLASS_REQUEST, METHOD_CONNECTION_BIND, MessageType};
    let request = MessageType::new(METHOD_CONNECTION_BIND, CLASS_REQUEST).value();
    bytes.len() >= 2 && u16::from_be_bytes([bytes[0], bytes[1]]) == request
}

/// Classifies by the two most significant bits of the first byte: 0b00 is STUN,
/// 0b01 is ChannelData. Anything else is not ours.
pub fn classify(bytes: &[u8]) -> Kind {
    match bytes.first().map(|b| b >> 6) {
        Some(0b00) => Kind::Stun,
        Some(0b01) => Kind::ChannelData,
        _ => Kind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_channel_data_and_data_indications_are_relayed_data() {
        assert!(is_relayed_data(&[0x40, 0x00, 0x00, 0x00]));
        // A Data indication (0x0017), a ConnectionAttempt indication (0x001C), a
        // success response to Allocate (0x0103), a Binding request (0x0001).
        assert!(is_relayed_data(&[0x00, 0x17, 0x00, 0x00]));
        assert!(!is_relayed_data(&[0x00, 0x1C, 0x00, 0x00]));
        assert!(!is_relayed_data(&[0x01, 0x03, 0x00, 0x00]));
        assert!(!is_relayed_data(&[0x00, 0x01, 0x00, 0x00]));
        assert!(!is_relayed_data(&[0x00]));
    }
}
