//! Reading the ids a client presents and writing the `Set-Cookie` values it should store.
//!
//! Parsing is lenient per pair (seed A bug 12: one malformed `%` sequence made the whole
//! request fall back): the `cookie` crate decodes each pair on its own and a pair that fails is
//! skipped. Headers above the size limit are ignored whole, and only the first
//! `max_cookies` pairs are looked at, so a hostile header costs a bounded amount of work.
//!
//! Both layouts sign every value ([`crate::signing`]). Emission is minimal (bug 13: A sent
//! 6–8 cookies on every response): a cookie is written only when its value changes or when
//! less than half of its lifetime is left, judged from the issue time signed into it.
//!
//! What the MAC binds, beyond the payload and issue time: the app prefix and the logical
//! name (`<app_prefix>cID`, …), so apps sharing keys cannot swap cookies; and, for layout A's
//! sID and eID, the cID they were issued with, so the sID/eID pair of one browser never
//! verifies next to another browser's cID. A value older than its cookie's lifetime is
//! refused (the browser would have dropped it). Realtime uses [`CookieCodec::read_header`]
//! with `http_only_only`: a page script can read and replay the `_cs_` copies, so only the
//! `HttpOnly` copy proves a browser to a socket.

use std::collections::HashMap;
use std::fmt::Write as _;

use cookie::time::{Duration as CookieDuration, OffsetDateTime};
use cookie::Cookie;
use sessiond_store::Millis;

use crate::config::{CookieConfig, CookieLayout, LimitsConfig, SameSite};
use crate::ids;
use crate::signing::{Signer, Verified};

/// Label of the compact cookie's signature (after the app prefix).
const COMPACT_LABEL: &str = "compact";
/// Separator of the compact payload's fields (cookie-safe, never in an id).
const COMPACT_SEP: char = '~';

/// The `name=value` pairs of a `Cookie` header, percent-decoded, malformed pairs skipped.
/// Later duplicates do not replace earlier ones (browsers send the most specific first).
pub fn parse_header(header: &str, limits: &LimitsConfig) -> HashMap<String, String> {
    let mut pairs = HashMap::new();
    for_each_pair(header, limits, |name, value| {
        pairs
            .entry(name.to_string())
            .or_insert_with(|| value.to_string());
    });
    pairs
}

/// Calls `f` with each well-formed pair among the first `max_cookies` of `header` (none when
/// the header is over `max_cookie_header_bytes`).
fn for_each_pair(header: &str, limits: &LimitsConfig, mut f: impl FnMut(&str, &str)) {
    if header.len() > limits.max_cookie_header_bytes {
        return;
    }
    // Without a `%` there is nothing to decode: the plain parse gives the same pairs without
    // running every name and value through the percent decoder (signed values never hold one).
    let parsed = if header.contains('%') {
        Cookie::split_parse_encoded(header)
    } else {
        Cookie::split_parse(header)
    };
    let parsed = parsed.take(limits.max_cookies);
    for c in parsed.flatten() {
        f(c.name(), c.value());
    }
}

/// Most cookie names a layout reads (layout A: four logical cookies, two copies each).
const MAX_NAMES: usize = 8;

/// The raw values of the cookies a codec knows, by name index (first occurrence wins).
type Found = [Option<String>; MAX_NAMES];

/// The ids a client presented, each verified (absent when missing, unsigned or tampered).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Presented {
    /// Client id.
    pub cid: Option<String>,
    /// Session id.
    pub sid: Option<String>,
    /// Last event id (layout A only).
    pub eid: Option<String>,
    /// Fingerprint id.
    pub fpid: Option<String>,
    /// Last activity the cookies vouch for: the eID's time (layout A) or the compact cookie's
    /// issue time.
    pub last_activity: Option<Millis>,
    /// Every verified cookie by name index ([`CookieCodec`]'s names), for the emission rule.
    verified: [Option<Verified>; MAX_NAMES],
}

/// The values the response should leave in the browser.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issue<'a> {
    /// Client id.
    pub cid: &'a str,
    /// Session id.
    pub sid: &'a str,
    /// This request's event id.
    pub eid: &'a str,
    /// Fingerprint id (None when fingerprints are off).
    pub fpid: Option<&'a str>,
}

/// Cookie names, attributes and signing for one configuration.
#[derive(Clone, Debug)]
pub struct CookieCodec {
    config: CookieConfig,
    signer: Signer,
    /// Compact layout: re-issue after this long so the issue time stays a useful last
    /// activity (a quarter of the session timeout).
    activity_refresh_ms: Millis,
    /// Every cookie name read or written, computed once: layout A's `[server, client]` copy
    /// of each slot at `2 * slot + copy`, or the compact cookie's alone at 0.
    names: Vec<String>,
    /// MAC labels: layout A's per slot (`<app_prefix><key>`), the compact cookie's at 0.
    labels: Vec<String>,
}

/// The logical cookies of layout A: (label, which value).
#[derive(Clone, Copy)]
#[repr(usize)]
enum Slot {
    Cid,
    Sid,
    Eid,
    Fpid,
}

impl CookieCodec {
    /// A codec for `config`, signing with `signer`.
    pub fn new(config: CookieConfig, signer: Signer, session_timeout_ms: u64) -> Self {
        let activity_refresh_ms = Millis::try_from(session_timeout_ms / 4).unwrap_or(Millis::MAX);
        let names = match config.layout {
            CookieLayout::A => [
                &config.cid_name,
                &config.sid_name,
                &config.eid_name,
                &config.fpid_name,
            ]
            .into_iter()
            .flat_map(|key| {
                [&config.server_prefix, &config.client_prefix]
                    .map(|copy| format!("{}{copy}{key}", config.app_prefix))
            })
            .collect(),
            CookieLayout::Compact => {
                let host = if config.host_prefix { "__Host-" } else { "" };
                vec![format!(
                    "{host}{}{}",
                    config.app_prefix, config.compact_name
                )]
            }
        };
        let labels = match config.layout {
            CookieLayout::A => [
                &config.cid_name,
                &config.sid_name,
                &config.eid_name,
                &config.fpid_name,
            ]
            .into_iter()
            .map(|key| format!("{}{key}", config.app_prefix))
            .collect(),
            CookieLayout::Compact => vec![format!("{}{COMPACT_LABEL}", config.app_prefix)],
        };
        CookieCodec {
            config,
            signer,
            activity_refresh_ms,
            names,
            labels,
        }
    }

    /// The name index of a cookie this codec reads, if it is one.
    fn name_index(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// The configuration in use.
    pub fn config(&self) -> &CookieConfig {
        &self.config
    }

    /// The MAC label of a layout-A value: sID and eID are bound to the client they belong to.
    fn label(&self, slot: Slot, cid: &str) -> String {
        let base = self.labels.get(slot as usize).map_or("", String::as_str);
        match slot {
            Slot::Sid | Slot::Eid => format!("{base}\0{cid}"),
            Slot::Cid | Slot::Fpid => base.to_string(),
        }
    }

    /// How long a layout-A value stays valid (its cookie's lifetime).
    fn max_age(&self, slot: Slot) -> Millis {
        lifetime_ms(match slot {
            Slot::Fpid => self.config.fpid_lifetime_s,
            _ => self.config.lifetime_s,
        })
    }

    /// Layout A: the name indexes of a logical cookie's (server copy, client copy).
    fn slot_names(slot: Slot) -> [usize; 2] {
        let first = 2 * slot as usize;
        [first, first + 1]
    }

    /// Compact layout: the cookie's name.
    pub fn compact_name(&self) -> String {
        self.names.first().cloned().unwrap_or_default()
    }

    /// Verifies what the client sent in `pairs` (from [`parse_header`]).
    pub fn read(&self, pairs: &HashMap<String, String>, now: Millis) -> Presented {
        let found: Found =
            std::array::from_fn(|i| self.names.get(i).and_then(|n| pairs.get(n)).cloned());
        self.read_found(&found, now)
    }

    /// Verifies what the client sent in a raw `Cookie` header: [`parse_header`] and
    /// [`read`](Self::read) in one pass that keeps only the cookies this codec knows.
    pub fn read_header(&self, header: &str, limits: &LimitsConfig, now: Millis) -> Presented {
        self.read_header_copies(header, limits, now, false)
    }

    /// [`read_header`](Self::read_header), optionally ignoring layout A's page-readable
    /// client copies (`http_only_only`: what a credential check must do).
    pub fn read_header_copies(
        &self,
        header: &str,
        limits: &LimitsConfig,
        now: Millis,
        http_only_only: bool,
    ) -> Presented {
        let client_copy = |i: usize| self.config.layout == CookieLayout::A && i % 2 == 1;
        let mut found = Found::default();
        for_each_pair(header, limits, |name, value| {
            let Some(i) = self.name_index(name) else {
                return;
            };
            if http_only_only && client_copy(i) {
                return;
            }
            if let Some(slot) = found.get_mut(i) {
                slot.get_or_insert_with(|| value.to_string());
            }
        });
        self.read_found(&found, now)
    }

    fn read_found(&self, found: &Found, now: Millis) -> Presented {
        match self.config.layout {
            CookieLayout::A => self.read_a(found, now),
            CookieLayout::Compact => self.read_compact(found, now),
        }
    }

    fn read_a(&self, found: &Found, now: Millis) -> Presented {
        let mut p = Presented::default();
        for slot in [Slot::Cid, Slot::Sid, Slot::Eid, Slot::Fpid] {
            // Session and event ids mean nothing without the client they belong to.
            let cid = match (slot, &p.cid) {
                (Slot::Sid | Slot::Eid, None) => continue,
                (_, cid) => cid.clone().unwrap_or_default(),
            };
            let label = self.label(slot, &cid);
            let max_age = self.max_age(slot);
            // The HttpOnly server copy wins; the client copy is signed too, so it may stand in.
            let [server, client] = Self::slot_names(slot);
            let checked = self.check(slot, &label, found[server].as_deref(), now, max_age);
            // Both copies are issued as one string: when the client copy is that same string,
            // the server copy's check is its check too (a pure function of the string, the
            // label and `now`), and its MAC is not computed twice. Neither string is a secret
            // (the client sent both), so a plain comparison reveals nothing.
            let client_checked = match (found[server].as_deref(), found[client].as_deref()) {
                (Some(s), Some(c)) if s == c => checked.clone(),
                (_, raw) => self.check(slot, &label, raw, now, max_age),
            };
            let value = checked
                .as_ref()
                .or(client_checked.as_ref())
                .map(|v| v.payload.clone());
            p.verified[server] = checked;
            p.verified[client] = client_checked;
            match slot {
                Slot::Cid => p.cid = value,
                Slot::Sid => p.sid = value,
                Slot::Eid => p.eid = value,
                Slot::Fpid => p.fpid = value,
            }
        }
        p.last_activity = [&p.eid, &p.sid, &p.cid]
            .into_iter()
            .flatten()
            .find_map(|id| ids::id_time(id));
        p
    }

    /// A layout-A value for `slot` if `raw` is present, verified and its payload valid.
    fn check(
        &self,
        slot: Slot,
        label: &str,
        raw: Option<&str>,
        now: Millis,
        max_age: Millis,
    ) -> Option<Verified> {
        let v = self.signer.verify(label, raw?, now, max_age)?;
        let valid = match slot {
            Slot::Fpid => !v.payload.is_empty(),
            _ => ids::id_time(&v.payload).is_some_and(|t| t <= now + crate::signing::MAX_SKEW_MS),
        };
        valid.then_some(v)
    }

    fn read_compact(&self, found: &Found, now: Millis) -> Presented {
        let mut p = Presented::default();
        let Some(raw) = found[0].as_deref() else {
            return p;
        };
        let label = self.labels.first().map_or("", String::as_str);
        let max_age = lifetime_ms(self.config.lifetime_s);
        let Some(v) = self.signer.verify(label, raw, now, max_age) else {
            return p;
        };
        let mut fields = v.payload.split(COMPACT_SEP);
        let (Some(cid), Some(sid), Some(fpid), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return p;
        };
        if !ids::is_id(cid) || !ids::is_id(sid) {
            return p;
        }
        p.cid = Some(cid.to_string());
        p.sid = Some(sid.to_string());
        p.fpid = (!fpid.is_empty()).then(|| fpid.to_string());
        p.last_activity = Some(v.issued);
        p.verified[0] = Some(v);
        p
    }

    /// The `Set-Cookie` values that bring the browser from `presented` to `issue`.
    pub fn set_cookies(
        &self,
        presented: &Presented,
        issue: &Issue<'_>,
        now: Millis,
    ) -> Vec<String> {
        let mut out = Vec::new();
        match self.config.layout {
            CookieLayout::A => {
                let lifetime = self.config.lifetime_s;
                let mut slots = vec![
                    (Slot::Cid, issue.cid, lifetime),
                    (Slot::Sid, issue.sid, lifetime),
                    (Slot::Eid, issue.eid, lifetime),
                ];
                if let Some(fpid) = issue.fpid {
                    slots.push((Slot::Fpid, fpid, self.config.fpid_lifetime_s));
                }
                for (slot, value, lifetime_s) in slots {
                    let label = self.label(slot, issue.cid);
                    let refresh = lifetime_ms(lifetime_s) / 2;
                    // Both copies get the same label, payload and issue time, so one MAC (the
                    // signing key's, deterministic) serves both.
                    let mut signed = None;
                    for (copy, index) in Self::slot_names(slot).into_iter().enumerate() {
                        if is_current(presented, index, value, refresh, now) {
                            continue;
                        }
                        let signed =
                            signed.get_or_insert_with(|| self.signer.sign(&label, value, now));
                        out.push(self.render(index, signed, lifetime_s, copy == 0, now));
                    }
                }
            }
            CookieLayout::Compact => {
                let payload = format!(
                    "{}{COMPACT_SEP}{}{COMPACT_SEP}{}",
                    issue.cid,
                    issue.sid,
                    issue.fpid.unwrap_or("")
                );
                let lifetime_s = self.config.lifetime_s;
                let refresh = (lifetime_ms(lifetime_s) / 2).min(self.activity_refresh_ms);
                if !is_current(presented, 0, &payload, refresh, now) {
                    let label = self.labels.first().map_or("", String::as_str);
                    let signed = self.signer.sign(label, &payload, now);
                    out.push(self.render(0, &signed, lifetime_s, true, now));
                }
            }
        }
        out
    }

    /// The `Set-Cookie` value of the cookie at name index `index`; `Expires` is `now` plus the
    /// lifetime (the caller's clock, not another clock read). Written directly rather than
    /// through `cookie::Cookie`'s builder and `Display` (a quarter of a returning decision's
    /// cookie work went to its generic date formatting); the text is the same byte for byte,
    /// which `set_cookie_text_is_the_cookie_crates` checks against that crate.
    fn render(
        &self,
        index: usize,
        value: &str,
        lifetime_s: u64,
        http_only: bool,
        now: Millis,
    ) -> String {
        let c = &self.config;
        let name = self.names.get(index).map_or("", String::as_str);
        let max_age = CookieDuration::seconds(i64::try_from(lifetime_s).unwrap_or(i64::MAX / 2));
        let issued = OffsetDateTime::from_unix_timestamp_nanos(i128::from(now) * 1_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let expires = issued.saturating_add(max_age);
        let mut out = String::with_capacity(128 + name.len() + value.len() + c.domain.len());
        // Ids, issue times and tags are all cookie-safe characters: no encoding needed.
        out.push_str(name);
        out.push('=');
        out.push_str(value);
        if http_only {
            out.push_str("; HttpOnly");
        }
        out.push_str(match c.same_site {
            SameSite::Strict => "; SameSite=Strict",
            SameSite::Lax => "; SameSite=Lax",
            SameSite::None => "; SameSite=None",
        });
        if c.secure {
            out.push_str("; Secure");
        }
        out.push_str("; Path=");
        out.push_str(&c.path);
        if !c.domain.is_empty() {
            out.push_str("; Domain=");
            out.push_str(c.domain.strip_prefix('.').unwrap_or(&c.domain));
        }
        let _ = write!(out, "; Max-Age={}", max_age.whole_seconds());
        let _ = write!(
            out,
            "; Expires={}, {:02} {} {} {:02}:{:02}:{:02} GMT",
            WEEKDAYS[usize::from(expires.weekday().number_days_from_monday())],
            expires.day(),
            MONTHS[usize::from(u8::from(expires.month()) - 1)],
            expires.year(),
            expires.hour(),
            expires.minute(),
            expires.second(),
        );
        out
    }
}

/// `Expires` names (RFC 9110's IMF-fixdate).
const WEEKDAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Whether the browser already holds `value` under the cookie at name index `index`, issued
/// less than `refresh_ms` ago.
fn is_current(p: &Presented, index: usize, value: &str, refresh_ms: Millis, now: Millis) -> bool {
    p.verified[index]
        .as_ref()
        .is_some_and(|v| v.payload == value && now.saturating_sub(v.issued) < refresh_ms)
}

fn lifetime_ms(seconds: u64) -> Millis {
    Millis::try_from(seconds.saturating_mul(1000)).unwrap_or(Millis::MAX)
}

#[cfg(test)]
#[path = "cookies_tests.rs"]
mod tests;
