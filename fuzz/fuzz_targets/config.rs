//! Configuration files: any TOML text over the defaults is either a valid `Config` or an
//! error message, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(config) = sessiond::Config::from_toml_str(text) {
            // A valid configuration survives its own redacted rendering.
            let _ = config.to_redacted_toml();
        }
    }
});
