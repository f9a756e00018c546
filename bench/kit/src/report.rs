//! How a load tool answers its bench script: one `RESULT key=value …` line on stdout (the
//! scripts `grep '^RESULT'` and read fields by name), errors on stderr with exit status 1,
//! usage errors with status 2 (clap's own convention).

use std::fmt::Display;

/// Formats the RESULT line (values must not contain spaces: they are replaced by `_`).
pub fn result_line(pairs: &[(&str, String)]) -> String {
    let fields: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", v.replace(' ', "_")))
        .collect();
    format!("RESULT {}", fields.join(" "))
}

/// Prints the RESULT line.
pub fn print_result(pairs: &[(&str, String)]) {
    println!("{}", result_line(pairs));
}

/// Ends the process with a message when `result` is an error (status 1).
pub fn exit_on_error<T, E: Display>(tool: &str, result: Result<T, E>) -> T {
    match result {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{tool}: {e}");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_no_spaces_in_values() {
        let line = result_line(&[("rate", "12.5".into()), ("first_error", "no answer".into())]);
        assert_eq!(line, "RESULT rate=12.5 first_error=no_answer");
    }
}
