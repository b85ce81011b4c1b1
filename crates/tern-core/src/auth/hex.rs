//! Hex text for the auth module's own formats (long-term keys, nonces).
//!
//! Owns byte <-> text conversion only; it never decides what the bytes mean. Decoding never
//! panics on input: anything but exactly the expected number of hex digits is `None`.

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Which letter case [`decode`] accepts.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Case {
    /// Only `a`-`f`: for text we produced ourselves, so there is exactly one valid spelling.
    Lower,
    /// `a`-`f` and `A`-`F`: for text a human typed into a config file.
    Any,
}

/// Lowercase hex of `bytes`.
pub(super) fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Decodes exactly `2 * N` hex digits into `N` bytes.
pub(super) fn decode<const N: usize>(text: &str, case: Case) -> Option<[u8; N]> {
    let text = text.as_bytes();
    if text.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        *byte = (digit(pair[0], case)? << 4) | digit(pair[1], case)?;
    }
    Some(out)
}

fn digit(c: u8, case: Case) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' if case == Case::Any => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let bytes = [0x00, 0x7f, 0x80, 0xff, 0x5a];
        assert_eq!(encode(&bytes), "007f80ff5a");
        assert_eq!(decode::<5>("007f80ff5a", Case::Lower), Some(bytes));
        assert_eq!(decode::<5>("007F80FF5A", Case::Any), Some(bytes));
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(decode::<2>("007F", Case::Lower), None);
        assert_eq!(decode::<2>("00g0", Case::Any), None);
        assert_eq!(decode::<2>("000", Case::Any), None);
        assert_eq!(decode::<2>("00000", Case::Any), None);
        // Multi-byte UTF-8 of the right byte length must not be sliced mid-character.
        assert_eq!(decode::<2>("é00", Case::Any), None);
    }
}
