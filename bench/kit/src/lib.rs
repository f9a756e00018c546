//! The parts every sessiond load generator (`bench/streams-load`, `bench/realtime-load`)
//! needs, written once so their figures mean the same thing.
//!
//! The bench scripts compare sessiond with other servers by numbers these tools print, so two
//! tools must not disagree on what a p99 is or how a server's CPU time is read. Each tool
//! keeps only its own protocol code; this crate holds:
//!
//! - [`latency`]: an HDR histogram in microseconds (merge per-task histograms, then read
//!   quantiles), and the clock the send/receive timestamps share;
//! - [`process`]: what `/proc` says about the server under test (RSS, CPU seconds), which lets
//!   a run on a shared machine state how much CPU each side really got;
//! - [`report`]: the one `RESULT key=value …` line a tool prints for its bench script, and the
//!   exit convention for errors.
//!
//! Argument parsing is clap's derive in each tool (their options differ; the parser is shared).

pub mod latency;
pub mod process;
pub mod report;
