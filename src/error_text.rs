//! An error as one line for the logs: its message and each cause's, where a cause adds
//! something (libraries often repeat their cause in their own message).

/// `e`'s message followed by its causes' (`: `-separated), skipping a cause whose text
/// is already in the line.
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::with_causes;

    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct Outer(String, #[source] std::io::Error);

    #[test]
    fn causes_follow_unless_repeated() {
        let io = || std::io::Error::other("refused");
        assert_eq!(
            with_causes(&Outer("connect".into(), io())),
            "connect: refused"
        );
        assert_eq!(
            with_causes(&Outer("connect: refused".into(), io())),
            "connect: refused"
        );
    }
}
