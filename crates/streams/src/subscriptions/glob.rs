//! Subscription patterns: globs over stream-root-relative paths, segment by segment.
//!
//! The protocol's rules are small enough to match directly instead of compiling a regex
//! (no new dependency): `*` is exactly one path segment, `**` is zero or more segments, and
//! any other segment must be equal. A segment such as `a*` is taken literally, which keeps
//! patterns unambiguous and matching linear in practice.

/// Checks a pattern before it is stored (400 otherwise).
pub fn validate(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err("pattern is empty".into());
    }
    if pattern.split('/').any(str::is_empty) {
        return Err("pattern has an empty segment".into());
    }
    Ok(())
}

/// True when `path` matches `pattern`.
pub fn matches(pattern: &str, path: &str) -> bool {
    let pat: Vec<&str> = pattern.split('/').collect();
    let segs: Vec<&str> = path.split('/').collect();
    match_from(&pat, &segs)
}

fn match_from(pat: &[&str], segs: &[&str]) -> bool {
    match pat.split_first() {
        None => segs.is_empty(),
        Some((&"**", rest)) => (0..=segs.len()).any(|skip| match_from(rest, &segs[skip..])),
        Some((first, rest)) => match segs.split_first() {
            Some((seg, tail)) => (*first == "*" || first == seg) && match_from(rest, tail),
            None => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_is_one_segment_and_double_star_any() {
        assert!(matches("events/*", "events/a"));
        assert!(!matches("events/*", "events/a/b"));
        assert!(!matches("events/*", "events"));
        assert!(matches("events/**", "events"));
        assert!(matches("events/**", "events/a/b"));
        assert!(matches("**/x", "a/b/x"));
        assert!(matches("a/*/c", "a/b/c"));
        assert!(!matches("a/*/c", "a/b/d"));
        assert!(!matches("events/a*", "events/ab"));
        assert!(validate("a//b").is_err());
        assert!(validate("a/**").is_ok());
    }
}
