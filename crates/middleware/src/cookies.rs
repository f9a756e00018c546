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

use std::collections::HashMap;

use cookie::time::{Duration as CookieDuration, OffsetDateTime};
use cookie::Cookie;
use sessiond_store::Millis;

use crate::config::{CookieConfig, CookieLayout, LimitsConfig, SameSite};
use crate::ids;
use crate::signing::{Signer, Verified};

/// Label of the compact cookie's signature.
const COMPACT_LABEL: &str = "compact";
/// Separator of the compact payload's fields (cookie-safe, never in an id).
const COMPACT_SEP: char = '~';

/// The `name=value` pairs of a `Cookie` header, percent-decoded, malformed pairs skipped.
/// Later duplicates do not replace earlier ones (browsers send the most specific first).
pub fn parse_header(header: &str, limits: &LimitsConfig) -> HashMap<String, String> {
    let mut pairs = HashMap::new();
    if header.len() > limits.max_cookie_header_bytes {
        return pairs;
    }
    let parsed = Cookie::split_parse_encoded(header).take(limits.max_cookies);
    for c in parsed.flatten() {
        pairs
            .entry(c.name().to_string())
            .or_insert_with(|| c.value().to_string());
    }
    pairs
}

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
    /// Every verified cookie by name, for the emission rule.
    verified: HashMap<String, Verified>,
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
}

/// The logical cookies of layout A: (label, which value).
#[derive(Clone, Copy)]
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
        CookieCodec {
            config,
            signer,
            activity_refresh_ms,
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &CookieConfig {
        &self.config
    }

    fn label(&self, slot: Slot) -> &str {
        match slot {
            Slot::Cid => &self.config.cid_name,
            Slot::Sid => &self.config.sid_name,
            Slot::Eid => &self.config.eid_name,
            Slot::Fpid => &self.config.fpid_name,
        }
    }

    /// Layout A: (server copy name, client copy name) of a logical cookie.
    fn names(&self, slot: Slot) -> [String; 2] {
        let c = &self.config;
        let key = self.label(slot);
        [
            format!("{}{}{key}", c.app_prefix, c.server_prefix),
            format!("{}{}{key}", c.app_prefix, c.client_prefix),
        ]
    }

    /// Compact layout: the cookie's name.
    pub fn compact_name(&self) -> String {
        let host = if self.config.host_prefix {
            "__Host-"
        } else {
            ""
        };
        format!(
            "{host}{}{}",
            self.config.app_prefix, self.config.compact_name
        )
    }

    /// Verifies what the client sent in `pairs` (from [`parse_header`]).
    pub fn read(&self, pairs: &HashMap<String, String>, now: Millis) -> Presented {
        match self.config.layout {
            CookieLayout::A => self.read_a(pairs, now),
            CookieLayout::Compact => self.read_compact(pairs, now),
        }
    }

    fn read_a(&self, pairs: &HashMap<String, String>, now: Millis) -> Presented {
        let mut p = Presented::default();
        for slot in [Slot::Cid, Slot::Sid, Slot::Eid, Slot::Fpid] {
            let label = self.label(slot).to_string();
            // The HttpOnly server copy wins; the client copy is signed too, so it may stand in.
            let mut value = None;
            for name in self.names(slot) {
                let Some(raw) = pairs.get(&name) else {
                    continue;
                };
                let Some(v) = self.signer.verify(&label, raw, now) else {
                    continue;
                };
                let valid = match slot {
                    Slot::Fpid => !v.payload.is_empty(),
                    _ => ids::id_time(&v.payload)
                        .is_some_and(|t| t <= now + crate::signing::MAX_SKEW_MS),
                };
                if valid {
                    value.get_or_insert_with(|| v.payload.clone());
                    p.verified.insert(name, v);
                }
            }
            match slot {
                Slot::Cid => p.cid = value,
                Slot::Sid => p.sid = value,
                Slot::Eid => p.eid = value,
                Slot::Fpid => p.fpid = value,
            }
        }
        if p.cid.is_none() {
            // Session and event ids mean nothing without the client they belong to.
            p.sid = None;
            p.eid = None;
        }
        p.last_activity = [&p.eid, &p.sid, &p.cid]
            .into_iter()
            .flatten()
            .find_map(|id| ids::id_time(id));
        p
    }

    fn read_compact(&self, pairs: &HashMap<String, String>, now: Millis) -> Presented {
        let mut p = Presented::default();
        let name = self.compact_name();
        let Some(raw) = pairs.get(&name) else {
            return p;
        };
        let Some(v) = self.signer.verify(COMPACT_LABEL, raw, now) else {
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
        p.verified.insert(name, v);
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
                    let label = self.label(slot).to_string();
                    for (i, name) in self.names(slot).into_iter().enumerate() {
                        let refresh = lifetime_ms(lifetime_s) / 2;
                        if self.is_current(presented, &name, value, refresh, now) {
                            continue;
                        }
                        let signed = self.signer.sign(&label, value, now);
                        out.push(self.render(&name, &signed, lifetime_s, i == 0));
                    }
                }
            }
            CookieLayout::Compact => {
                let name = self.compact_name();
                let payload = format!(
                    "{}{COMPACT_SEP}{}{COMPACT_SEP}{}",
                    issue.cid,
                    issue.sid,
                    issue.fpid.unwrap_or("")
                );
                let lifetime_s = self.config.lifetime_s;
                let refresh = (lifetime_ms(lifetime_s) / 2).min(self.activity_refresh_ms);
                if !self.is_current(presented, &name, &payload, refresh, now) {
                    let signed = self.signer.sign(COMPACT_LABEL, &payload, now);
                    out.push(self.render(&name, &signed, lifetime_s, true));
                }
            }
        }
        out
    }

    /// Whether the browser already holds `value` under `name`, issued less than `refresh_ms` ago.
    fn is_current(
        &self,
        p: &Presented,
        name: &str,
        value: &str,
        refresh_ms: Millis,
        now: Millis,
    ) -> bool {
        p.verified
            .get(name)
            .is_some_and(|v| v.payload == value && now.saturating_sub(v.issued) < refresh_ms)
    }

    fn render(&self, name: &str, value: &str, lifetime_s: u64, http_only: bool) -> String {
        let c = &self.config;
        let max_age = CookieDuration::seconds(i64::try_from(lifetime_s).unwrap_or(i64::MAX / 2));
        let mut cookie = Cookie::build((name.to_string(), value.to_string()))
            .path(c.path.clone())
            .secure(c.secure)
            .http_only(http_only)
            .same_site(match c.same_site {
                SameSite::Strict => cookie::SameSite::Strict,
                SameSite::Lax => cookie::SameSite::Lax,
                SameSite::None => cookie::SameSite::None,
            })
            .max_age(max_age)
            .expires(OffsetDateTime::now_utc().saturating_add(max_age));
        if !c.domain.is_empty() {
            cookie = cookie.domain(c.domain.clone());
        }
        // Ids, issue times and tags are all cookie-safe characters: no encoding needed.
        cookie.build().to_string()
    }
}

fn lifetime_ms(seconds: u64) -> Millis {
    Millis::try_from(seconds.saturating_mul(1000)).unwrap_or(Millis::MAX)
}

#[cfg(test)]
#[path = "cookies_tests.rs"]
mod tests;
