//! The docs run: every shell block of README.md and docs/*.md marked runnable (an
//! `<!-- runnable -->` line right before its ```` ```sh ```` fence) is run with bash, in
//! order, against a fresh server (the real binary on SQLite in a temporary directory, on a
//! free port), as a reader following the page in one terminal would.
//!
//! The blocks read the base URL from `$SESSIOND` (defaulting to the documented address for
//! humans). `curl` fails on an HTTP error here (`--fail-with-body`), and bash stops at the
//! first failing command, so a tour that 404s because a variable is unset fails the test.
//! The tested `sessiond` is first on `PATH`, for blocks that use its client commands.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/binary.rs"]
mod binary;

use std::path::{Path, PathBuf};
use std::process::Command;

const MARK: &str = "<!-- runnable -->";

/// What every run gets before the page's blocks.
const PRELUDE: &str = "set -euo pipefail\n\
    curl() { command curl --fail-with-body --max-time 10 \"$@\"; }\n";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The runnable blocks of one Markdown text, in order.
fn runnable_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut lines = markdown.lines().peekable();
    let mut marked = false;
    while let Some(line) = lines.next() {
        let trimmed = line.trim();
        if trimmed == MARK {
            marked = true;
            continue;
        }
        if let Some(lang) = trimmed.strip_prefix("```") {
            let indent = line.len() - line.trim_start().len();
            let mut body = String::new();
            for inner in lines.by_ref() {
                if inner.trim() == "```" {
                    break;
                }
                body.push_str(inner.get(indent..).unwrap_or(inner.trim_start()));
                body.push('\n');
            }
            if marked {
                assert!(
                    matches!(lang, "sh" | "bash"),
                    "a runnable block must be sh or bash, not `{lang}`"
                );
                blocks.push(body);
            }
        }
        if !trimmed.is_empty() {
            marked = false;
        }
    }
    blocks
}

fn pages() -> Vec<PathBuf> {
    let mut pages = vec![root().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

/// `PATH` with the tested `sessiond` first, for blocks that run the CLI.
fn path_with_sessiond() -> std::ffi::OsString {
    let bin = Path::new(env!("CARGO_BIN_EXE_sessiond"));
    let mut dirs = vec![bin.parent().unwrap().to_path_buf()];
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(dirs).unwrap()
}

fn run_page(page: &Path, blocks: &[String]) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = binary::Binary::spawn(&data, &[]);
    let script = format!("{PRELUDE}{}", blocks.join("\n"));
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env("SESSIOND", &server.base)
        .env("PATH", path_with_sessiond())
        .current_dir(dir.path())
        .output()
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{}: the runnable blocks failed ({})\n--- script\n{script}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        page.display(),
        out.status
    );
    server.stop();
}

#[test]
fn the_marker_finds_only_marked_blocks() {
    let page = "```sh\nnot this\n```\n<!-- runnable -->\n```sh\necho one\n```\n\n\
                text\n\n<!-- runnable -->\n  ```bash\n  echo two\n  ```\n";
    assert_eq!(runnable_blocks(page), ["echo one\n", "echo two\n"]);
}

#[test]
fn runnable_blocks_of_readme_and_docs_run_against_a_fresh_server() {
    let mut ran = Vec::new();
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        let blocks = runnable_blocks(&text);
        if blocks.is_empty() {
            continue;
        }
        for block in &blocks {
            assert!(
                !block.contains("127.0.0.1:7700") || block.contains("${SESSIOND:-"),
                "{}: a runnable block names the server only through $SESSIOND:\n{block}",
                page.display()
            );
        }
        run_page(&page, &blocks);
        ran.push(page.file_name().unwrap().to_string_lossy().into_owned());
    }
    for expected in ["README.md", "middleware.md", "operations.md", "realtime.md"] {
        assert!(ran.iter().any(|p| p == expected), "{expected} ran: {ran:?}");
    }
}
