//! The media type of a stream's Content-Type, as every comparison of the protocol sees it
//! (JSON mode, appends of the same type, forks, SSE text or base64). Kept by hand rather than
//! parsed with the `mime` crate: `mime` 0.3 refuses media types HTTP allows (whitespace
//! before `;`, RFC 9110 §5.6.6) and free-form values the protocol stores as given, and where it
//! does parse, its answer is this one (docs/architecture.md, "Parsers we keep").
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sessiond_streams::state::media_type;

#[test]
fn the_media_type_is_the_lowercased_part_before_parameters() {
    for (content_type, media) in [
        ("application/json", "application/json"),
        ("Application/JSON; charset=utf-8", "application/json"),
        ("text/plain;charset=utf-8", "text/plain"),
        // Whitespace around `;` is valid HTTP (`mime` 0.3 refuses both of these).
        ("text/plain ; charset=utf-8", "text/plain"),
        ("  text/html  ;q=1", "text/html"),
        // Not a media type at all: compared as given, never refused.
        ("opaque", "opaque"),
        ("", ""),
    ] {
        assert_eq!(media_type(content_type), media, "{content_type:?}");
    }
}
