//! ChannelData parsing of arbitrary bytes: a header that parses has a channel number
//! in range, announces data that is inside the buffer, writes back to the same bytes,
//! and agrees with classification.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tern::proto::channel_data::{CHANNEL_NUMBERS, HEADER_LEN};
use tern::proto::{ChannelHeader, Kind, classify, is_relayed_data};

fuzz_target!(|data: &[u8]| {
    let kind = classify(data);
    let relayed = is_relayed_data(data);
    let Some(header) = ChannelHeader::parse(data) else {
        return;
    };
    assert_eq!(kind, Kind::ChannelData);
    assert!(relayed);
    assert!(CHANNEL_NUMBERS.contains(&header.number));
    let payload = header.payload(data);
    assert_eq!(payload.len(), usize::from(header.len));
    assert_eq!(payload, &data[HEADER_LEN..HEADER_LEN + payload.len()]);
    assert_eq!(header.to_bytes(), data[..HEADER_LEN]);
});
