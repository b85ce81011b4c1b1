//! The TCP/TLS framer fed one byte stream in pieces, as reads deliver it. The first
//! byte says how many cut points follow (at most 16), each a big-endian u16 offset;
//! the rest is the stream. The driver's loop (append what was read, take every whole
//! frame from the front, keep the rest) must find the same frames and fail after the
//! same frame however the stream is cut, and what it keeps never reaches a frame's
//! limit. Only the kind of failure may depend on the cuts: a STUN header whose length
//! is over the limit is refused as too long from its first 4 bytes, before its magic
//! cookie arrives to show it is not STUN at all (the input kept in the corpus as
//! `regression-error-kind-depends-on-cuts`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tern::proto::framing::{Frame, FramingError, check};

/// Small enough that the fuzzer reaches "too long" (the shipped limit is 65,552).
const MAX_FRAME: usize = 2048;
const MAX_CUTS: usize = 16;

/// What the loop saw: the frames, the error that ended the stream if any, and the
/// bytes kept for later.
#[derive(Debug, PartialEq)]
struct Outcome {
    frames: Vec<Vec<u8>>,
    error: Option<FramingError>,
    kept: Vec<u8>,
}

fuzz_target!(|data: &[u8]| {
    let Some((&cuts, rest)) = data.split_first() else {
        return;
    };
    let cuts = usize::from(cuts) % (MAX_CUTS + 1);
    let Some((cut_bytes, stream)) = rest.split_at_checked(2 * cuts) else {
        return;
    };
    let mut cuts: Vec<usize> = cut_bytes
        .chunks(2)
        .map(|c| usize::from(u16::from_be_bytes([c[0], c[1]])) % (stream.len() + 1))
        .collect();
    cuts.sort_unstable();
    let mut pieces = Vec::with_capacity(cuts.len() + 1);
    let mut at = 0;
    for cut in cuts {
        pieces.push(&stream[at..cut]);
        at = cut;
    }
    pieces.push(&stream[at..]);

    let whole = read(&[stream]);
    let cut = read(&pieces);
    assert_eq!(whole.frames, cut.frames);
    assert_eq!(whole.error.is_some(), cut.error.is_some());
    if whole.error.is_none() {
        assert_eq!(whole.kept, cut.kept);
    }
});

/// The driver's accumulate-then-check loop over `pieces`.
fn read(pieces: &[&[u8]]) -> Outcome {
    let mut buf = Vec::new();
    let mut frames = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        let mut start = 0;
        loop {
            let (len, consumed) = match check(&buf[start..], MAX_FRAME) {
                Err(e) => {
                    return Outcome {
                        frames,
                        error: Some(e),
                        kept: buf,
                    };
                }
                Ok(Frame::Incomplete) => break,
                Ok(Frame::Stun(len)) => {
                    assert!((20..=MAX_FRAME).contains(&len));
                    (len, len)
                }
                Ok(Frame::ChannelData { len, padded }) => {
                    assert!(len >= 4 && padded <= MAX_FRAME);
                    assert!(padded % 4 == 0 && padded - len < 4);
                    (len, padded)
                }
            };
            frames.push(buf[start..start + len].to_vec());
            start += consumed;
        }
        buf.drain(..start);
        assert!(buf.len() < MAX_FRAME, "kept {} bytes", buf.len());
    }
    Outcome {
        frames,
        error: None,
        kept: buf,
    }
}
