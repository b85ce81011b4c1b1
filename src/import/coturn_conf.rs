//! The coturn config file format, as turnserver reads it.
//!
//! Each line is `option`, `option=value` or `option value`; a line starting with `#` is a
//! comment. The file takes the same names as the command line, so a leading `--` is
//! accepted and dropped. Only whole-line comments exist: a `#` inside a value (a
//! password, say) is part of the value, as in coturn.

/// One option line of a coturn config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// 1-based line number, to point the operator at the source.
    pub line: usize,
    /// The option name without `--`, e.g. `listening-port`.
    pub name: String,
    /// The value, trimmed; `None` for a flag.
    pub value: Option<String>,
}

/// Splits a coturn config into its option lines, skipping comments and blank lines.
pub fn parse(text: &str) -> Vec<Entry> {
    text.lines()
        .enumerate()
        .filter_map(|(i, raw)| {
            parse_line(raw).map(|(name, value)| Entry {
                line: i + 1,
                name,
                value,
            })
        })
        .collect()
}

/// One line to `(name, value)`, or `None` for a comment or blank line.
fn parse_line(raw: &str) -> Option<(String, Option<String>)> {
    let line = raw.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let line = line.strip_prefix("--").unwrap_or(line);
    // The name ends at the first '=' or blank, whichever comes first.
    let end = line
        .find(|c: char| c == '=' || c.is_whitespace())
        .unwrap_or(line.len());
    let (name, rest) = line.split_at(end);
    let rest = rest.trim_start();
    let rest = rest.strip_prefix('=').unwrap_or(rest).trim();
    let value = (!rest.is_empty()).then(|| rest.to_string());
    (!name.is_empty()).then(|| (name.to_string(), value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> Option<(String, Option<String>)> {
        parse_line(line)
    }

    #[test]
    fn forms() {
        let pair = |n: &str, v: Option<&str>| Some((n.to_string(), v.map(String::from)));
        assert_eq!(
            one("listening-port=3478"),
            pair("listening-port", Some("3478"))
        );
        assert_eq!(
            one("listening-port 3478"),
            pair("listening-port", Some("3478"))
        );
        assert_eq!(
            one("  listening-port = 3478  "),
            pair("listening-port", Some("3478"))
        );
        assert_eq!(
            one("--realm=example.org"),
            pair("realm", Some("example.org"))
        );
        assert_eq!(one("fingerprint"), pair("fingerprint", None));
        assert_eq!(one("--no-cli"), pair("no-cli", None));
        assert_eq!(
            one("user=bob:pa ss#word"),
            pair("user", Some("bob:pa ss#word"))
        );
        assert_eq!(one("stale-nonce="), pair("stale-nonce", None));
        assert_eq!(one("# listening-port=3478"), None);
        assert_eq!(one("   "), None);
        assert_eq!(one("="), None);
    }

    #[test]
    fn line_numbers() {
        let entries = parse("# c\n\nrealm=x\nno-cli\n");
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].line, 3);
        assert_eq!(entries[1].line, 4);
    }
}
