//! Configuration errors worded for the person editing the file.
//!
//! figment's own text quotes serde's already-quoted lists (``expected `one of `a`, `b`` ``) and
//! prefixes every key with its profile (`default.listen`), a section no sessiond file has.
//! This names the source (the file's path, the environment variable, or the command line),
//! the key as written in TOML, and what was wrong, once per error.

use figment::error::{Error, Kind};
use figment::Source;

/// Every error in `error`, one per line.
pub fn describe(error: Error) -> String {
    let lines: Vec<String> = error.into_iter().map(|e| one(&e)).collect();
    match lines.as_slice() {
        [only] => format!("invalid configuration: {only}"),
        _ => format!("invalid configuration:\n  {}", lines.join("\n  ")),
    }
}

fn one(e: &Error) -> String {
    let key = e.path.join(".");
    let source = e.metadata.as_ref().map(|m| match &m.source {
        Some(Source::File(path)) => format!("in {}", path.display()),
        _ if m.name.contains("environment") => format!(
            "in environment variable SESSIOND_{}",
            e.path.join("__").to_uppercase()
        ),
        _ => "on the command line".to_owned(),
    });
    let what = match &e.kind {
        // The path ends with the unknown key itself: name it once, with its section.
        Kind::UnknownField(_, expected) => {
            let section = match e.path.split_last() {
                Some((_, parent)) if !parent.is_empty() => format!("[{}]", parent.join(".")),
                _ => "the top level".to_owned(),
            };
            return with_source(
                source,
                format!(
                    "unknown key `{key}`; the keys of {section} are {}",
                    expected.join(", ")
                ),
            );
        }
        Kind::UnknownVariant(value, expected) => format!(
            "unknown value `{value}`; expected one of {}",
            expected.join(", ")
        ),
        Kind::MissingField(field) => format!("missing key `{field}`"),
        Kind::InvalidType(actual, expected) | Kind::InvalidValue(actual, expected) => {
            format!("expected {expected}, found {actual}")
        }
        Kind::Message(message) => message.clone(),
        other => other.to_string(),
    };
    if key.is_empty() {
        with_source(source, what)
    } else {
        with_source(source, format!("key `{key}`: {what}"))
    }
}

fn with_source(source: Option<String>, what: String) -> String {
    match source {
        Some(source) => format!("{source}: {what}"),
        None => what,
    }
}
