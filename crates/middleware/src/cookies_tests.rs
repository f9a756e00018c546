use super::*;
use crate::config::MiddlewareConfig;
use crate::ids::new_id;

const NOW: Millis = 1_700_000_000_000;

fn codec(layout: CookieLayout) -> CookieCodec {
    let mut config = MiddlewareConfig::default().cookies;
    config.layout = layout;
    CookieCodec::new(config, Signer::new(&["k".repeat(32)]), 30 * 60 * 1000)
}

/// The `name=value` part of every Set-Cookie value, as a Cookie header would send them back.
fn as_header(set: &[String]) -> String {
    set.iter()
        .map(|s| s.split(';').next().unwrap_or_default().to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

#[test]
fn malformed_pairs_are_skipped_one_by_one() {
    let limits = LimitsConfig::default();
    // `%ff` decodes to invalid UTF-8 (skipped); `%zz` is no escape at all (kept verbatim).
    let pairs = parse_header("a=%ff; b=ok%20x; =nameless; c=3; d=%zz", &limits);
    assert_eq!(pairs.get("d").map(String::as_str), Some("%zz"));
    assert_eq!(pairs.get("b").map(String::as_str), Some("ok x"));
    assert_eq!(pairs.get("c").map(String::as_str), Some("3"));
    assert!(!pairs.contains_key("a"));
    let small = LimitsConfig {
        max_cookie_header_bytes: 8,
        ..LimitsConfig::default()
    };
    assert!(parse_header("a=1; b=2; c=3", &small).is_empty());
    let few = LimitsConfig {
        max_cookies: 1,
        ..LimitsConfig::default()
    };
    assert_eq!(parse_header("a=1; b=2", &few).len(), 1);
}

#[test]
fn layout_a_round_trip_and_minimal_emission() {
    let codec = codec(CookieLayout::A);
    let cid = new_id(NOW);
    let issue = Issue {
        cid: &cid,
        sid: &cid,
        eid: &cid,
        fpid: Some("fingerprint"),
    };
    let first = codec.set_cookies(&Presented::default(), &issue, NOW);
    assert_eq!(first.len(), 8, "{first:?}");
    assert!(first[0].starts_with("_ss_cID=") && first[0].contains("HttpOnly"));
    assert!(first[1].starts_with("_cs_cID=") && !first[1].contains("HttpOnly"));
    assert!(first[0].contains("Secure") && first[0].contains("SameSite=Strict"));

    let pairs = parse_header(&as_header(&first), &LimitsConfig::default());
    let back = codec.read(&pairs, NOW + 1000);
    assert_eq!(back.cid.as_deref(), Some(cid.as_str()));
    assert_eq!(back.fpid.as_deref(), Some("fingerprint"));
    assert_eq!(back.last_activity, Some(NOW));

    // Next request: only the event id changed, so only its two cookies are written.
    let eid = new_id(NOW + 1000);
    let next = Issue { eid: &eid, ..issue };
    let second = codec.set_cookies(&back, &next, NOW + 1000);
    assert_eq!(second.len(), 2, "{second:?}");
    assert!(second.iter().all(|c| c.contains("eID=")));

    // Past half the lifetime everything is refreshed again.
    let late = NOW + 200 * 24 * 3600 * 1000;
    assert_eq!(codec.set_cookies(&back, &next, late).len(), 8);
}

#[test]
fn tampered_or_unsigned_cookies_are_absent() {
    let codec = codec(CookieLayout::A);
    let cid = new_id(NOW);
    let issue = Issue {
        cid: &cid,
        sid: &cid,
        eid: &cid,
        fpid: None,
    };
    let header = as_header(&codec.set_cookies(&Presented::default(), &issue, NOW));
    let tampered = header.replace(&cid[..5], "AAAAA");
    let p = codec.read(&parse_header(&tampered, &LimitsConfig::default()), NOW);
    assert_eq!(p.cid, None);
    let raw = format!("_ss_cID={cid}; _ss_sID={cid}");
    assert_eq!(
        codec.read(&parse_header(&raw, &LimitsConfig::default()), NOW),
        Presented::default()
    );
}

#[test]
fn compact_layout_is_one_cookie_refreshed_by_activity() {
    let codec = codec(CookieLayout::Compact);
    let cid = new_id(NOW);
    let issue = Issue {
        cid: &cid,
        sid: &cid,
        eid: &cid,
        fpid: None,
    };
    let set = codec.set_cookies(&Presented::default(), &issue, NOW);
    assert_eq!(set.len(), 1);
    assert!(set[0].starts_with("sessiond=") && set[0].contains("HttpOnly"));
    let p = codec.read(
        &parse_header(&as_header(&set), &LimitsConfig::default()),
        NOW + 10,
    );
    assert_eq!(p.cid.as_deref(), Some(cid.as_str()));
    assert_eq!(p.sid.as_deref(), Some(cid.as_str()));
    assert_eq!(p.last_activity, Some(NOW));
    let eid = new_id(NOW + 10);
    assert!(codec
        .set_cookies(
            &p,
            &Issue {
                eid: &eid,
                ..issue.clone()
            },
            NOW + 10
        )
        .is_empty());
    // After a quarter of the session timeout the activity stamp is renewed.
    let later = NOW + 8 * 60 * 1000;
    assert_eq!(codec.set_cookies(&p, &issue, later).len(), 1);
}

/// A layout-A browser's Cookie header after its first visit at `at`.
fn first_visit(codec: &CookieCodec, at: Millis) -> (String, String) {
    let cid = new_id(at);
    let issue = Issue {
        cid: &cid,
        sid: &cid,
        eid: &cid,
        fpid: Some("fp"),
    };
    let header = as_header(&codec.set_cookies(&Presented::default(), &issue, at));
    (cid, header)
}

#[test]
fn session_and_event_ids_are_bound_to_their_client() {
    let codec = codec(CookieLayout::A);
    let limits = LimitsConfig::default();
    let (cid_a, a) = first_visit(&codec, NOW);
    let (_, b) = first_visit(&codec, NOW);
    // A's cID next to B's sID and eID: the client stays, B's session ids are void.
    let a_cid: Vec<&str> = a.split("; ").filter(|p| p.contains("cID=")).collect();
    let b_rest: Vec<&str> = b.split("; ").filter(|p| !p.contains("cID=")).collect();
    let mixed = [a_cid, b_rest].concat().join("; ");
    let p = codec.read_header(&mixed, &limits, NOW);
    assert_eq!(p.cid.as_deref(), Some(cid_a.as_str()));
    assert_eq!(p.sid, None);
    assert_eq!(p.eid, None);
    assert_eq!(codec.read_header(&a, &limits, NOW).sid, Some(cid_a));
}

#[test]
fn values_are_bound_to_the_app_prefix() {
    let plain = codec(CookieLayout::A);
    let mut config = MiddlewareConfig::default().cookies;
    config.app_prefix = "shop".into();
    let prefixed = CookieCodec::new(config, Signer::new(&["k".repeat(32)]), 30 * 60 * 1000);
    let (_, header) = first_visit(&plain, NOW);
    // The same values under the other app's names prove nothing there.
    let renamed = header
        .split("; ")
        .map(|p| format!("shop{p}"))
        .collect::<Vec<_>>()
        .join("; ");
    let p = prefixed.read_header(&renamed, &LimitsConfig::default(), NOW);
    assert_eq!(p.cid, None);
    assert_eq!(p.fpid, None);
}

#[test]
fn values_older_than_the_cookie_lifetime_are_refused() {
    let limits = LimitsConfig::default();
    for layout in [CookieLayout::A, CookieLayout::Compact] {
        let codec = codec(layout);
        let lifetime = lifetime_ms(codec.config().lifetime_s);
        let (cid, header) = first_visit(&codec, NOW);
        let within = codec.read_header(&header, &limits, NOW + lifetime);
        assert_eq!(within.cid.as_deref(), Some(cid.as_str()), "{layout:?}");
        let past = codec.read_header(&header, &limits, NOW + lifetime + 1);
        assert_eq!(past.cid, None, "{layout:?}");
    }
}

#[test]
fn credential_checks_read_only_the_http_only_copy() {
    let codec = codec(CookieLayout::A);
    let limits = LimitsConfig::default();
    let (cid, header) = first_visit(&codec, NOW);
    let page_readable: String = header
        .split("; ")
        .filter(|p| p.starts_with("_cs_"))
        .collect::<Vec<_>>()
        .join("; ");
    assert_eq!(
        codec
            .read_header(&page_readable, &limits, NOW)
            .cid
            .as_deref(),
        Some(cid.as_str()),
        "a decision still falls back to the client copy"
    );
    assert_eq!(
        codec
            .read_header_copies(&page_readable, &limits, NOW, true)
            .cid,
        None
    );
    assert_eq!(
        codec.read_header_copies(&header, &limits, NOW, true).cid,
        Some(cid)
    );
}

/// Set-Cookie values of both layouts issued before the signing code moved to
/// `sessiond_http::signing` (pinned from the old code): names, layout and signatures of the
/// cookies browsers hold must not change with an upgrade, and they must read back.
#[test]
fn pinned_set_cookies_of_both_layouts() {
    use base64::Engine as _;
    const ATTRIBUTES: &str =
        "SameSite=Strict; Secure; Path=/; Max-Age=31536000; Expires=Wed, 13 Nov 2024 22:13:20 GMT";
    const ID: &str = "AYvP5WgABwcHBwcHBwcHBwcHBwcHBw";
    let mut raw = NOW.to_be_bytes()[2..].to_vec();
    raw.extend([7u8; 16]);
    let cid = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&raw);
    assert_eq!(cid, ID);
    let issue = Issue {
        cid: &cid,
        sid: &cid,
        eid: &cid,
        fpid: Some("fingerprint"),
    };
    let mut layout_a = Vec::new();
    for (name, value) in [
        ("cID", "AYvP5WgABwcHBwcHBwcHBwcHBwcHBw.1700000000000.-50BtZoxsLEV_EWGml5pTo6vcbtdq7EC20udsDwZ4tQ"),
        ("sID", "AYvP5WgABwcHBwcHBwcHBwcHBwcHBw.1700000000000.Rnb2jmf9ZI_Nmfj6tVn-QItSO47I6qxyHMPU83vXixE"),
        ("eID", "AYvP5WgABwcHBwcHBwcHBwcHBwcHBw.1700000000000.MxriXECNjkHTI6rU8ojtxldUjv4oBrc80yGHlZMJ0Yw"),
        ("fpID", "fingerprint.1700000000000.n2rQ5MKc009lQB0-uIdxqBx8blMtzuvOTZejD5o46rs"),
    ] {
        layout_a.push(format!("_ss_{name}={value}; HttpOnly; {ATTRIBUTES}"));
        layout_a.push(format!("_cs_{name}={value}; {ATTRIBUTES}"));
    }
    let compact = vec![format!(
        "sessiond={ID}~{ID}~fingerprint.1700000000000.1AoWIHSA4JOxcdKTK-HL1TecohZNbKxVnqGkvKf7Y58; \
         HttpOnly; {ATTRIBUTES}"
    )];
    for (layout, expected) in [
        (CookieLayout::A, layout_a),
        (CookieLayout::Compact, compact),
    ] {
        let codec = codec(layout);
        let set = codec.set_cookies(&Presented::default(), &issue, NOW);
        assert_eq!(set, expected, "{layout:?}");
        let pairs = parse_header(&as_header(&set), &LimitsConfig::default());
        let back = codec.read(&pairs, NOW + 1000);
        assert_eq!(back.cid.as_deref(), Some(cid.as_str()), "{layout:?}");
        assert_eq!(back.fpid.as_deref(), Some("fingerprint"), "{layout:?}");
    }
}

/// What a request after [`first_visit`] issues: the same client, session and fpID, event `eid`.
fn next_request<'a>(cid: &'a str, eid: &'a str) -> Issue<'a> {
    Issue {
        cid,
        sid: cid,
        eid,
        fpid: Some("fp"),
    }
}

/// `header` with the value of cookie `name` replaced by `f` of it.
fn edit_cookie(header: &str, name: &str, f: impl Fn(&str) -> String) -> String {
    header
        .split("; ")
        .map(|pair| match pair.split_once('=') {
            Some((n, v)) if n == name => format!("{n}={}", f(v)),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// `value` with the first character of its MAC changed.
fn forge(value: &str) -> String {
    let (rest, tag) = value.rsplit_once('.').unwrap_or_default();
    let first = if tag.starts_with('A') { 'B' } else { 'A' };
    format!("{rest}.{first}{}", &tag[1..])
}

/// Both copies of a value are one string, checked once when they arrive equal; a copy that
/// differs from its twin is checked on its own, so forging either copy (or both alike) still
/// voids exactly what it voided before.
#[test]
fn each_copy_is_checked_unless_it_equals_its_twin() {
    let codec = codec(CookieLayout::A);
    let limits = LimitsConfig::default();
    let (cid, header) = first_visit(&codec, NOW);
    let value = |h: &str, name: &str| {
        h.split("; ")
            .find_map(|p| p.strip_prefix(&format!("{name}=")).map(str::to_string))
    };
    for slot in ["cID", "sID", "eID", "fpID"] {
        assert_eq!(
            value(&header, &format!("_ss_{slot}")),
            value(&header, &format!("_cs_{slot}"))
        );
    }
    let eid = new_id(NOW + 1000);
    let next = next_request(&cid, &eid);
    let current = codec.read_header(&header, &limits, NOW + 1000);
    let renewed = codec.set_cookies(&current, &next, NOW + 1000);
    assert_eq!(renewed.len(), 2, "{renewed:?}");
    let renewed = as_header(&renewed);
    assert_eq!(value(&renewed, "_ss_eID"), value(&renewed, "_cs_eID"));
    // Earlier pairs win: the renewed eID copies, then the rest of the first visit's.
    let back = codec.read_header(&format!("{renewed}; {header}"), &limits, NOW + 1000);
    assert_eq!(back.eid.as_deref(), Some(eid.as_str()));
    assert!(back.verified[4].is_some() && back.verified[5].is_some());

    for (forged, valid) in [("_cs_cID", "_ss_cID"), ("_ss_cID", "_cs_cID")] {
        let h = edit_cookie(&header, forged, forge);
        let p = codec.read_header(&h, &limits, NOW + 1000);
        assert_eq!(p.cid.as_deref(), Some(cid.as_str()), "{forged} forged");
        // Only the forged copy is written again (with the eID's pair).
        let set = codec.set_cookies(&p, &next, NOW + 1000);
        assert_eq!(set.len(), 3, "{set:?}");
        assert!(set.iter().any(|c| c.starts_with(&format!("{forged}="))));
        assert!(!set.iter().any(|c| c.starts_with(&format!("{valid}="))));
    }
    let both = edit_cookie(&edit_cookie(&header, "_ss_cID", forge), "_cs_cID", forge);
    let p = codec.read_header(&both, &limits, NOW);
    assert_eq!((p.cid, p.sid, p.eid), (None, None, None));
    assert_eq!(
        p.fpid.as_deref(),
        Some("fp"),
        "the fpID is bound to no client"
    );
    let both = edit_cookie(&edit_cookie(&header, "_ss_eID", forge), "_cs_eID", forge);
    let p = codec.read_header(&both, &limits, NOW);
    assert_eq!((p.sid.as_deref(), p.eid), (Some(cid.as_str()), None));
}

/// A value signed under an old key still reads after a rotation (both copies checked under
/// every key), and what the rotated codec writes is signed with the new first key only.
#[test]
fn rotation_reads_old_copies_and_signs_with_the_new_key() {
    let limits = LimitsConfig::default();
    let config = MiddlewareConfig::default().cookies;
    let with = |keys: &[&str]| CookieCodec::new(config.clone(), Signer::new(keys), 30 * 60 * 1000);
    let (old, new) = ("o".repeat(32), "n".repeat(32));
    let (cid, header) = first_visit(&with(&[&old]), NOW);
    let rotated = with(&[&new, &old]);
    let p = rotated.read_header(&header, &limits, NOW + 1000);
    assert_eq!(p.cid.as_deref(), Some(cid.as_str()));
    assert_eq!(p.eid.as_deref(), Some(cid.as_str()));
    let eid = new_id(NOW + 1000);
    let next = next_request(&cid, &eid);
    let renewed = rotated.set_cookies(&p, &next, NOW + 1000);
    assert_eq!(renewed.len(), 2, "{renewed:?}");
    let label = rotated.label(Slot::Eid, &cid);
    let max_age = rotated.max_age(Slot::Eid);
    for cookie in &renewed {
        let value = cookie
            .split(';')
            .next()
            .and_then(|p| p.split_once('='))
            .map(|(_, v)| v)
            .unwrap_or_default();
        let under = |key: &str| Signer::new(&[key]).verify(&label, value, NOW + 1000, max_age);
        assert_eq!(under(&new).map(|v| v.payload), Some(eid.clone()));
        assert_eq!(under(&old), None);
    }
}

/// What the `cookie` crate writes for the same attributes (the text `render` must keep).
fn crate_text(
    config: &CookieConfig,
    name: &str,
    value: &str,
    lifetime_s: u64,
    http_only: bool,
    now: Millis,
) -> String {
    let max_age = CookieDuration::seconds(i64::try_from(lifetime_s).unwrap_or(i64::MAX / 2));
    let issued = OffsetDateTime::from_unix_timestamp_nanos(i128::from(now) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let mut cookie = Cookie::build((name, value))
        .path(config.path.as_str())
        .secure(config.secure)
        .http_only(http_only)
        .same_site(match config.same_site {
            SameSite::Strict => cookie::SameSite::Strict,
            SameSite::Lax => cookie::SameSite::Lax,
            SameSite::None => cookie::SameSite::None,
        })
        .max_age(max_age)
        .expires(issued.saturating_add(max_age));
    if !config.domain.is_empty() {
        cookie = cookie.domain(config.domain.as_str());
    }
    cookie.build().to_string()
}

#[test]
fn set_cookie_text_is_the_cookie_crates() {
    let base = MiddlewareConfig::default().cookies;
    let mut configs = vec![base.clone()];
    for (same_site, secure, domain, path) in [
        (SameSite::Lax, false, ".example.com", "/app"),
        (SameSite::None, true, "example.com", ""),
        (SameSite::None, false, "", "/"),
    ] {
        configs.push(CookieConfig {
            same_site,
            secure,
            domain: domain.into(),
            path: path.into(),
            ..base.clone()
        });
    }
    // Every weekday and month, a leap day, the epoch and a lifetime past year 9999.
    let mut times: Vec<Millis> = (0..400)
        .map(|d| NOW + d * 86_400_000 + d * 3_601_000)
        .collect();
    times.extend([0, 951_782_400_000, 4_107_542_399_000]);
    for config in &configs {
        let codec = CookieCodec::new(config.clone(), Signer::new(&["k".repeat(32)]), 1_800_000);
        for &now in &times {
            for (lifetime_s, http_only) in [(31_536_000, true), (0, false), (u64::MAX, true)] {
                assert_eq!(
                    codec.render(3, "v.1.t", lifetime_s, http_only, now),
                    crate_text(config, &codec.names[3], "v.1.t", lifetime_s, http_only, now),
                    "{config:?} {now} {lifetime_s}"
                );
            }
        }
    }
}
