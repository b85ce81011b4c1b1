//! A config value that must never be printed: passwords, keys, tokens, URLs that may
//! carry a password.
//!
//! Wrapping the value (rather than writing `Debug` by hand for each section) lets every
//! section derive `Debug` and still keep its secrets out of logs and panics; a new
//! secret-bearing key only has to name this type. Reading the value takes an explicit
//! [`Redacted::expose`], so each place that uses a secret says so.

use serde::Deserialize;
use std::fmt;

/// What `Debug` prints instead of the value.
const PLACEHOLDER: &str = "<redacted>";

/// A value whose `Debug` is a fixed placeholder. Parsed exactly like the value itself.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Redacted<T>(T);

impl<T> Redacted<T> {
    /// The secret itself, for the code that has to use it (never to print it).
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> From<T> for Redacted<T> {
    fn from(value: T) -> Self {
        Self(value)
    }
}

impl<T> fmt::Debug for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(PLACEHOLDER)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_a_placeholder_and_parsing_reads_the_value() {
        #[derive(Debug, Deserialize)]
        struct Section {
            token: Option<Redacted<String>>,
            secrets: Vec<Redacted<String>>,
        }
        let section: Section = toml::from_str("token = \"t0ken\"\nsecrets = [\"a1\", \"b2\"]\n")
            .expect("plain strings parse");
        assert_eq!(
            section.token.as_ref().map(Redacted::expose).unwrap(),
            "t0ken"
        );
        assert_eq!(section.secrets[1].expose(), "b2");
        assert_eq!(
            format!("{section:?}"),
            "Section { token: Some(<redacted>), secrets: [<redacted>, <redacted>] }"
        );
    }
}
