//! Subscription patterns: globs over stream-root-relative paths, segment by segment.
//!
//! The protocol's rules are small enough to match directly instead of compiling a regex
//! (no new dependency): `*` is exactly one path segment, `**` is zero or more segments, and
//! any other segment must be equal. A segment such as `a*` is taken literally.
//!
//! Matching must stay cheap because it runs for every append against every pattern, on the
//! subscription task: a backtracking matcher took exponential time on `**/**/…/x` against a
//! deep path (one PUT stalled the task for good). Here consecutive `**` are collapsed and the
//! match is the classic wildcard scan that only ever resumes from the last `**` seen, so it
//! costs at most pattern segments × path segments steps; both counts are capped by
//! configuration (`max_pattern_segments`, `max_path_segments`).

/// Why a pattern is refused (a 400 with this message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// No pattern at all.
    #[error("pattern is empty")]
    Empty,
    /// `a//b`, a leading or a trailing `/`.
    #[error("pattern has an empty segment")]
    EmptySegment,
    /// More segments than `max_pattern_segments`.
    #[error(
        "pattern has {segments} segments, more than {max} (streams.subscriptions.max_pattern_segments)"
    )]
    TooDeep {
        /// Segments of the pattern.
        segments: usize,
        /// The configured maximum.
        max: usize,
    },
}

/// Checks a pattern before it is stored (400 otherwise).
pub fn validate(pattern: &str, max_segments: usize) -> Result<(), PatternError> {
    if pattern.is_empty() {
        return Err(PatternError::Empty);
    }
    if pattern.split('/').any(str::is_empty) {
        return Err(PatternError::EmptySegment);
    }
    let segments = pattern.split('/').count();
    if segments > max_segments {
        return Err(PatternError::TooDeep {
            segments,
            max: max_segments,
        });
    }
    Ok(())
}

/// Number of `/`-separated segments of a path.
pub fn depth(path: &str) -> usize {
    path.split('/').count()
}

/// True when `path` matches `pattern`.
pub fn matches(pattern: &str, path: &str) -> bool {
    let mut pat: Vec<&str> = Vec::new();
    for token in pattern.split('/') {
        if !(token == "**" && pat.last() == Some(&"**")) {
            pat.push(token);
        }
    }
    let segs: Vec<&str> = path.split('/').collect();
    let (mut p, mut s) = (0, 0);
    // After a `**`: the pattern position following it and the path position it resumes at.
    let mut resume: Option<(usize, usize)> = None;
    while s < segs.len() {
        match pat.get(p) {
            Some(&"**") => {
                resume = Some((p + 1, s));
                p += 1;
            }
            Some(&token) if token == "*" || token == segs[s] => {
                p += 1;
                s += 1;
            }
            _ => match resume {
                // Let the last `**` swallow one more segment and retry from there.
                Some((after_star, from)) => {
                    resume = Some((after_star, from + 1));
                    p = after_star;
                    s = from + 1;
                }
                None => return false,
            },
        }
    }
    pat[p.min(pat.len())..].iter().all(|t| *t == "**")
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
        assert!(matches("**/x", "x"));
        assert!(!matches("**/x", "a/x/b"));
        assert!(matches("a/**/b/**/c", "a/b/x/b/c"));
        assert!(matches("a/**/**/c", "a/c"));
        assert!(matches("**/b/*/d", "a/b/b/c/d"));
        assert!(!matches("**/b/*/d", "a/b/c/e"));
        assert!(matches("**", "a/b"));
        assert!(matches("a/*/c", "a/b/c"));
        assert!(!matches("a/*/c", "a/b/d"));
        assert!(!matches("events/a*", "events/ab"));
        assert!(matches("x/y", "x/y"));
        assert!(!matches("x/y", "x/y/z"));
        assert!(validate("a//b", 32).is_err());
        assert!(validate("a/**", 32).is_ok());
        assert!(validate("a/b/c", 2).is_err());
    }

    #[test]
    fn adversarial_patterns_are_linear() {
        let pattern = format!("{}nomatch", "**/".repeat(18));
        let path = vec!["s"; 40].join("/");
        let started = std::time::Instant::now();
        assert!(!matches(&pattern, &path));
        let alternating = format!("{}nomatch", "**/a/".repeat(15));
        let path = vec!["a"; 200].join("/");
        assert!(!matches(&alternating, &path));
        assert!(started.elapsed() < std::time::Duration::from_millis(200));
    }
}
