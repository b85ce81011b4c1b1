//! The relay port range, a value the config parses and the engine's port pool is
//! bounded by.

use serde::{Deserialize, Deserializer, de};
use std::fmt;
use std::ops::RangeInclusive;
use std::str::FromStr;

/// An inclusive UDP port range for relay sockets, written `"MIN-MAX"`.
///
/// Invariant: `1 <= min <= max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    min: u16,
    max: u16,
}

impl PortRange {
    pub fn new(min: u16, max: u16) -> Result<Self, String> {
        if min == 0 {
            return Err("port range must start at 1 or above".into());
        }
        if min > max {
            return Err(format!("port range {min}-{max} is empty (min > max)"));
        }
        Ok(Self { min, max })
    }

    pub fn min(&self) -> u16 {
        self.min
    }

    pub fn max(&self) -> u16 {
        self.max
    }

    pub fn count(&self) -> usize {
        usize::from(self.max - self.min) + 1
    }

    pub fn contains(&self, port: u16) -> bool {
        (self.min..=self.max).contains(&port)
    }

    pub fn as_range(&self) -> RangeInclusive<u16> {
        self.min..=self.max
    }
}

impl FromStr for PortRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (min, max) = s
            .split_once('-')
            .ok_or_else(|| format!("expected MIN-MAX, got {s:?}"))?;
        let parse = |p: &str| {
            p.trim()
                .parse::<u16>()
                .map_err(|_| format!("{p:?} is not a port number"))
        };
        Self::new(parse(min)?, parse(max)?)
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.min, self.max)
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_range_parses_and_rejects() {
        let r: PortRange = "49152-65535".parse().unwrap();
        assert_eq!((r.min(), r.max(), r.count()), (49152, 65535, 16384));
        assert!("0-10".parse::<PortRange>().is_err());
        assert!("10-5".parse::<PortRange>().is_err());
        assert!("10".parse::<PortRange>().is_err());
        assert!("a-b".parse::<PortRange>().is_err());
    }
}
