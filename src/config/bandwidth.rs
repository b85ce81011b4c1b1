//! `[bandwidth]`: token-bucket limits on relayed bytes, per allocation, per user and for
//! the whole server, each direction on its own (coturn's `max-bps` and `bps-capacity`).

use serde::{Deserialize, Deserializer, de};

use crate::core::{BandwidthLimits, Limit};

/// A rate: bytes per second as a number (as coturn's `max-bps`), or a string with a
/// unit, `"2 Mbit/s"`, `"500 kbit/s"`, `"1.5 MB/s"` (decimal prefixes, as links are
/// sold).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bitrate {
    pub bytes_per_sec: u64,
}

impl Bitrate {
    /// 1 kB/s (8 kbit/s): below any audio codec, so anything less is a mistake.
    const MIN: u64 = 1_000;
    /// 100 Gbit/s.
    const MAX: u64 = 12_500_000_000;

    const UNITS: &[(&str, f64)] = &[
        ("bit/s", 0.125),
        ("kbit/s", 125.0),
        ("Mbit/s", 125_000.0),
        ("Gbit/s", 125_000_000.0),
        ("B/s", 1.0),
        ("kB/s", 1_000.0),
        ("MB/s", 1_000_000.0),
        ("GB/s", 1_000_000_000.0),
    ];

    fn parse(text: &str) -> Result<u64, String> {
        let units = "bit/s, kbit/s, Mbit/s, Gbit/s, B/s, kB/s, MB/s or GB/s";
        scaled(text, Self::UNITS)
            .ok_or_else(|| format!("{text:?}: expected a rate such as \"2 Mbit/s\" ({units})"))
    }
}

impl<'de> Deserialize<'de> for Bitrate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes_per_sec = match NumberOrText::deserialize(d)? {
            NumberOrText::Number(n) => n,
            NumberOrText::Text(text) => Bitrate::parse(&text).map_err(de::Error::custom)?,
        };
        if !(Self::MIN..=Self::MAX).contains(&bytes_per_sec) {
            return Err(de::Error::custom(format!(
                "{bytes_per_sec} bytes/s is out of range (1 kB/s to 100 Gbit/s)"
            )));
        }
        Ok(Self { bytes_per_sec })
    }
}

/// A size in bytes: a number, or a string with a unit, `"64 KiB"`, `"250 kB"`, `"1 MB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// One full-size packet on an Ethernet path: a smaller burst would drop every
    /// ordinary media packet.
    const MIN: u64 = 1_500;
    /// 1 GB.
    const MAX: u64 = 1_000_000_000;

    const UNITS: &[(&str, f64)] = &[
        ("B", 1.0),
        ("kB", 1_000.0),
        ("KiB", 1_024.0),
        ("MB", 1_000_000.0),
        ("MiB", 1_048_576.0),
    ];
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = match NumberOrText::deserialize(d)? {
            NumberOrText::Number(n) => n,
            NumberOrText::Text(text) => scaled(&text, Self::UNITS).ok_or_else(|| {
                de::Error::custom(format!(
                    "{text:?}: expected a size such as \"64 KiB\" (B, kB, KiB, MB or MiB)"
                ))
            })?,
        };
        if !(Self::MIN..=Self::MAX).contains(&bytes) {
            return Err(de::Error::custom(format!(
                "{bytes} bytes is out of range (1500 to 1000000000)"
            )));
        }
        Ok(Self(bytes))
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumberOrText {
    Number(u64),
    Text(String),
}

/// `"<number> <unit>"` (the space optional) in the units of `units`, rounded to whole
/// bytes; `None` if the number or unit is not one.
fn scaled(text: &str, units: &[(&str, f64)]) -> Option<u64> {
    let text = text.trim();
    let split = text.len()
        - text
            .trim_start_matches(|c: char| c.is_ascii_digit() || c == '.')
            .len();
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let &(_, factor) = units.iter().find(|(name, _)| *name == unit.trim())?;
    let value = (number * factor).round();
    (value.is_finite() && value < u64::MAX as f64).then_some(value as u64)
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BandwidthSettings {
    /// Each allocation, each direction.
    pub allocation: Option<Bitrate>,
    pub allocation_burst: Option<ByteSize>,
    /// Each user (static name or REST user id) over all its allocations, split over the
    /// fleet by allocation count when clustered.
    pub user: Option<Bitrate>,
    pub user_burst: Option<ByteSize>,
    /// The whole server.
    pub server: Option<Bitrate>,
    pub server_burst: Option<ByteSize>,
}

impl BandwidthSettings {
    /// The limits the engines apply; `None` when no rate is set.
    pub fn limits(&self) -> Option<BandwidthLimits> {
        let limits = BandwidthLimits {
            allocation: limit(self.allocation, self.allocation_burst),
            user: limit(self.user, self.user_burst),
            server: limit(self.server, self.server_burst),
        };
        limits.any().then_some(limits)
    }

    /// A burst needs its rate.
    pub(super) fn orphan_burst(&self) -> Option<&'static str> {
        [
            (
                "bandwidth.allocation_burst",
                self.allocation,
                self.allocation_burst,
            ),
            ("bandwidth.user_burst", self.user, self.user_burst),
            ("bandwidth.server_burst", self.server, self.server_burst),
        ]
        .into_iter()
        .find(|(_, rate, burst)| rate.is_none() && burst.is_some())
        .map(|(key, _, _)| key)
    }
}

/// The default burst: a quarter second of the rate, and at least 16 kB (a dozen
/// full-size packets), so a video keyframe passes whole.
fn default_burst(rate: Bitrate) -> u64 {
    (rate.bytes_per_sec / 4).max(16_000)
}

fn limit(rate: Option<Bitrate>, burst: Option<ByteSize>) -> Option<Limit> {
    let rate = rate?;
    let burst = burst.map_or_else(|| default_burst(rate), |b| b.0);
    Some(Limit::new(rate.bytes_per_sec, burst))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    fn bandwidth(text: &str) -> Result<BandwidthSettings, String> {
        Settings::from_toml(&format!("[bandwidth]\n{text}\n"), "t")
            .map(|s| s.bandwidth)
            .map_err(|e| e.to_string())
    }

    fn rate(text: &str) -> Result<u64, String> {
        bandwidth(&format!("allocation = {text}"))
            .map(|b| b.allocation.expect("a rate").bytes_per_sec)
    }

    #[test]
    fn rates_take_bit_and_byte_units() {
        assert_eq!(rate("\"2 Mbit/s\""), Ok(250_000));
        assert_eq!(rate("\"2Mbit/s\""), Ok(250_000));
        assert_eq!(rate("\"500 kbit/s\""), Ok(62_500));
        assert_eq!(rate("\"1.5 MB/s\""), Ok(1_500_000));
        assert_eq!(rate("\"1 Gbit/s\""), Ok(125_000_000));
        assert_eq!(rate("64000"), Ok(64_000));
        for bad in ["\"2 mbps\"", "\"fast\"", "\"2 Mbit\"", "0", "\"100 bit/s\""] {
            let err = rate(bad).unwrap_err();
            assert!(err.contains("line 2"), "{bad}: {err}");
        }
    }

    #[test]
    fn bursts_default_to_a_quarter_second_and_take_units() {
        let b =
            bandwidth("allocation = \"8 Mbit/s\"\nuser = \"64 kbit/s\"\nuser_burst = \"64 KiB\"")
                .unwrap();
        let limits = b.limits().expect("limits");
        assert_eq!(limits.allocation, Some(Limit::new(1_000_000, 250_000)));
        assert_eq!(limits.user.map(|l| l.burst), Some(65_536));
        assert_eq!(limits.server, None);
        let small = bandwidth("server = \"64 kbit/s\"")
            .unwrap()
            .limits()
            .unwrap();
        assert_eq!(small.server.map(|l| l.burst), Some(16_000));
        assert!(bandwidth("allocation_burst = 1000").is_err());
        assert_eq!(BandwidthSettings::default().limits(), None);
    }

    #[test]
    fn a_burst_without_its_rate_is_named_with_its_line() {
        let err = bandwidth("user = \"1 MB/s\"\nserver_burst = \"1 MB\"").unwrap_err();
        assert!(err.contains("line 3: bandwidth.server_burst"), "{err}");
    }
}
