//! The session middleware's `Cookie` header in both layouts: splitting, percent-decoding,
//! signature checks and the payload parsing behind them. Junk a client appends after valid
//! cookies never costs it its ids (first occurrence wins).
#![no_main]
use libfuzzer_sys::fuzz_target;
use sessiond_middleware::config::LimitsConfig;
use sessiond_middleware::cookies::{parse_header, CookieCodec, Issue, Presented};
use sessiond_middleware::ids::new_id;
use sessiond_middleware::signing::Signer;
use sessiond_middleware::{CookieLayout, MiddlewareConfig};

const NOW: i64 = 1_700_000_000_000;

fn codec(layout: CookieLayout) -> CookieCodec {
    let mut config = MiddlewareConfig::default().cookies;
    config.layout = layout;
    CookieCodec::new(config, Signer::new(&["fuzz".repeat(8)]), 30 * 60 * 1000)
}

fuzz_target!(|data: &[u8]| {
    let Ok(junk) = std::str::from_utf8(data) else {
        return;
    };
    let limits = LimitsConfig::default();
    let pairs = parse_header(junk, &limits);
    assert!(pairs.len() <= limits.max_cookies);
    for layout in [CookieLayout::A, CookieLayout::Compact] {
        let codec = codec(layout);
        let _ = codec.read(&pairs, NOW);
        for http_only in [false, true] {
            let _ = codec.read_header_copies(junk, &limits, NOW, http_only);
        }
        let cid = new_id(NOW);
        let issue = Issue {
            cid: &cid,
            sid: &cid,
            eid: &cid,
            fpid: Some("fp"),
        };
        let valid: Vec<String> = codec
            .set_cookies(&Presented::default(), &issue, NOW)
            .iter()
            .map(|s| s.split(';').next().unwrap_or_default().to_string())
            .collect();
        let header = format!("{}; {junk}", valid.join("; "));
        let cookies = valid.len() + junk.split(';').count();
        let read = codec.read_header(&header, &limits, NOW + 1000);
        if header.len() <= limits.max_cookie_header_bytes && cookies <= limits.max_cookies {
            assert_eq!(read.cid.as_deref(), Some(cid.as_str()), "{header}");
            assert_eq!(read.fpid.as_deref(), Some("fp"), "{header}");
        }
    }
});
