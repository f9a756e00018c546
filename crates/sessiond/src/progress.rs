//! The progress of a long CLI copy (`sessiond backup`, `sessiond restore`) on stderr.
//!
//! An operator watching a terminal gets one bar redrawn in place; a log or a script (stderr
//! not a terminal) gets plain lines, one per 100 items and one at the end, so nothing there
//! fills with carriage returns. Own code rather than `indicatif`: one bar without spinners,
//! styles or multi-bars is a few dozen lines, where indicatif would bring its terminal and
//! Unicode-width crates into the supply chain (and `deny.toml`) for it.

use std::io::{IsTerminal as _, Write as _};
use std::time::{Duration, Instant};

/// Cells of the bar.
const WIDTH: usize = 30;
/// Redraws of the bar at most this often (the last one always).
const REDRAW: Duration = Duration::from_millis(100);
/// Without a terminal: a line every this many items.
const LINE_EVERY: u64 = 100;

/// Progress through `total` items (segment files) of one step.
pub struct Progress {
    label: &'static str,
    total: u64,
    done: u64,
    bytes: u64,
    tty: bool,
    drawn: Option<Instant>,
}

impl Progress {
    /// A bar when stderr is a terminal, plain lines otherwise.
    pub fn new(label: &'static str, total: u64) -> Self {
        Self::with_terminal(label, total, std::io::stderr().is_terminal())
    }

    fn with_terminal(label: &'static str, total: u64, tty: bool) -> Self {
        Progress {
            label,
            total,
            done: 0,
            bytes: 0,
            tty,
            drawn: None,
        }
    }

    /// One item done, `bytes` long.
    pub fn step(&mut self, bytes: u64) {
        self.done += 1;
        self.bytes += bytes;
        if let Some(text) = self.update(Instant::now()) {
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(text.as_bytes());
            let _ = err.flush();
        }
    }

    /// What to write for the current state at `now`, if anything.
    fn update(&mut self, now: Instant) -> Option<String> {
        let last = self.done == self.total;
        if self.tty {
            let due = self.drawn.is_none_or(|t| now.duration_since(t) >= REDRAW);
            if !(due || last) {
                return None;
            }
            self.drawn = Some(now);
            let end = if last { "\n" } else { "" };
            Some(format!("\r{}{end}", self.render()))
        } else if self.done.is_multiple_of(LINE_EVERY) || last {
            Some(format!("{}\n", self.render()))
        } else {
            None
        }
    }

    /// `backup: segments [#########.....] 42/100, 3.1 MiB`.
    fn render(&self) -> String {
        let filled = if self.total == 0 {
            WIDTH
        } else {
            (self.done.min(self.total) as usize * WIDTH) / self.total as usize
        };
        format!(
            "{} [{}{}] {}/{}, {}",
            self.label,
            "#".repeat(filled),
            ".".repeat(WIDTH - filled),
            self.done,
            self.total,
            human_bytes(self.bytes)
        )
    }
}

/// Bytes in B, KiB, MiB or GiB with one decimal.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{bytes} B"),
        _ => format!("{value:.1} {}", UNITS[unit]),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_fills_with_the_items_done() {
        let mut p = Progress::with_terminal("backup: segments", 4, true);
        let start = Instant::now();
        p.done = 1;
        p.bytes = 1536;
        assert_eq!(
            p.update(start).unwrap(),
            format!(
                "\rbackup: segments [{}{}] 1/4, 1.5 KiB",
                "#".repeat(7),
                ".".repeat(23)
            )
        );
        // Redrawn at most every REDRAW, but the last state always, with its newline.
        p.done = 2;
        assert_eq!(p.update(start + Duration::from_millis(10)), None);
        assert!(p.update(start + REDRAW).is_some());
        p.done = 4;
        p.bytes = 3 * 1024 * 1024;
        let last = p.update(start + REDRAW).unwrap();
        assert!(last.ends_with("] 4/4, 3.0 MiB\n"), "{last:?}");
        assert!(last.contains(&"#".repeat(WIDTH)), "{last:?}");
    }

    #[test]
    fn without_a_terminal_it_prints_plain_lines() {
        let mut p = Progress::with_terminal("restore: segments", 250, false);
        let mut lines = Vec::new();
        for _ in 0..250 {
            p.done += 1;
            p.bytes += 10;
            lines.extend(p.update(Instant::now()));
        }
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines.iter().all(|l| !l.contains('\r') && l.ends_with('\n')));
        assert!(lines[0].contains("100/250"), "{lines:?}");
        assert!(lines[2].contains("250/250, 2.4 KiB"), "{lines:?}");
    }

    #[test]
    fn sizes_read_like_a_person_would_write_them() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.0 KiB");
        assert_eq!(human_bytes(5 * 1024 * 1024 * 1024), "5.0 GiB");
    }
}
