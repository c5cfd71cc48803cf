//! Topic filter templates: MQTT topic filters with `%u` (principal) and
//! `%c` (client id) placeholders, as ACL rules and a token's `acl` claim
//! write them. Validated once, matched without building strings.

use std::fmt;

use crate::codec::TopicFilter;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(Box<str>),
    Principal,
    ClientId,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Hash,
    Plus,
    Exact(Box<str>),
    Template(Box<[Part]>),
}

/// A topic filter with `%u` / `%c` placeholders, validated once when the
/// rule is built and matched without building strings.
#[derive(Clone, PartialEq, Eq)]
pub struct FilterTemplate {
    source: Box<str>,
    levels: Box<[Level]>,
}

// Written as its text; read back through the same validation.
impl serde::Serialize for FilterTemplate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for FilterTemplate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::new(&text).map_err(serde::de::Error::custom)
    }
}

/// Why a filter template is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid ACL filter {filter:?}: {problem}")]
pub struct InvalidTemplate {
    /// The template as written.
    pub filter: String,
    /// What is wrong with it.
    pub problem: String,
}

impl FilterTemplate {
    /// Parses and validates a template such as `clients/%u/#`.
    ///
    /// # Errors
    /// [`InvalidTemplate`] when the filter, with placeholders filled in, is
    /// not a valid MQTT topic filter, or is a shared subscription.
    pub fn new(source: &str) -> Result<Self, InvalidTemplate> {
        let invalid = |problem: String| InvalidTemplate {
            filter: source.to_string(),
            problem,
        };
        // Placeholders stand for one safe level fragment; check the shape
        // with a neutral value in their place.
        let probe = source.replace("%u", "u").replace("%c", "c");
        let filter = TopicFilter::new(probe).map_err(|e| invalid(e.to_string()))?;
        if filter.shared().is_some() {
            return Err(invalid("a rule cannot be a shared subscription".into()));
        }
        let levels = source
            .split('/')
            .map(|level| match level {
                "#" => Level::Hash,
                "+" => Level::Plus,
                l if !l.contains('%') => Level::Exact(l.into()),
                l => {
                    let parts = parse_template(l);
                    if parts.iter().all(|p| matches!(p, Part::Lit(_))) {
                        Level::Exact(l.into())
                    } else {
                        Level::Template(parts.into())
                    }
                }
            })
            .collect();
        Ok(Self {
            source: source.into(),
            levels,
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// [MQTT-4.7.2-1]: a leading wildcard does not match a `$` topic.
    pub(in crate::auth) fn misses_dollar_topic(&self, levels: &[&str]) -> bool {
        levels.first().is_some_and(|l| l.starts_with('$'))
            && matches!(self.levels.first(), Some(Level::Hash | Level::Plus))
    }

    /// Whether the template matches the topic split into `levels`. With
    /// `widen`, a level that cannot be substituted safely matches the rest of
    /// any topic (how deny rules stay conservative).
    pub(in crate::auth) fn matches_topic(
        &self,
        topic: &[&str],
        subst: &Subst<'_>,
        widen: bool,
    ) -> bool {
        if self.misses_dollar_topic(topic) {
            return false;
        }
        let mut t = topic.iter();
        for level in self.levels.iter() {
            match (level, t.next()) {
                (Level::Hash, _) => return true,
                (Level::Template(parts), _) if !subst.safe_for(parts) => return widen,
                (Level::Plus, Some(_)) => {}
                (Level::Exact(e), Some(l)) if **e == **l => {}
                (Level::Template(parts), Some(l)) if template_eq(parts, l, subst) => {}
                _ => return false,
            }
        }
        t.next().is_none()
    }

    /// Whether every topic matched by the filter split into `levels` is
    /// matched by this template; `widen` as for [`Self::matches_topic`].
    pub(in crate::auth) fn covers_filter(
        &self,
        filter: &[&str],
        subst: &Subst<'_>,
        widen: bool,
    ) -> bool {
        if self.misses_dollar_topic(filter) {
            return false;
        }
        let mut f = filter.iter();
        for level in self.levels.iter() {
            match (level, f.next()) {
                (Level::Hash, _) => return true,
                (Level::Template(parts), _) if !subst.safe_for(parts) => return widen,
                // A `#` in the request also matches deeper levels this rule
                // does not reach.
                (_, Some(&"#")) => return false,
                (Level::Plus, Some(_)) => {}
                (_, Some(&"+")) => return false,
                (Level::Exact(e), Some(l)) if **e == **l => {}
                (Level::Template(parts), Some(l)) if template_eq(parts, l, subst) => {}
                _ => return false,
            }
        }
        f.next().is_none()
    }
}

impl FilterTemplate {
    /// Whether some topic is matched both by this template and by the filter
    /// split into `levels`; `widen` as for [`Self::matches_topic`].
    pub(in crate::auth) fn intersects(
        &self,
        filter: &[&str],
        subst: &Subst<'_>,
        widen: bool,
    ) -> bool {
        let rule_wild = matches!(self.levels.first(), Some(Level::Hash | Level::Plus));
        let req_wild = matches!(filter.first(), Some(&"#" | &"+"));
        let rule_dollar =
            matches!(self.levels.first(), Some(Level::Exact(e)) if e.starts_with('$'));
        let req_dollar = filter.first().is_some_and(|l| l.starts_with('$'));
        // [MQTT-4.7.2-1]: a leading wildcard never meets a `$` topic.
        if (rule_wild && req_dollar) || (req_wild && rule_dollar) {
            return false;
        }
        let mut f = filter.iter();
        let mut r = self.levels.iter();
        loop {
            match (r.next(), f.next()) {
                (Some(Level::Hash), _) | (_, Some(&"#")) => return true,
                (Some(Level::Template(parts)), _) if !subst.safe_for(parts) => return widen,
                (None, None) => return true,
                (Some(_), None) | (None, Some(_)) => return false,
                (Some(Level::Plus), Some(_)) | (Some(_), Some(&"+")) => {}
                (Some(Level::Exact(e)), Some(l)) if **e == **l => {}
                (Some(Level::Template(parts)), Some(l)) if template_eq(parts, l, subst) => {}
                _ => return false,
            }
        }
    }
}

impl FilterTemplate {
    /// The topic filter this template stands for, its placeholders filled:
    /// what a deny rule carves out of a subscription it overlaps. A level
    /// that cannot be filled safely carves out everything below the levels
    /// before it (as a deny rule stays conservative).
    pub(in crate::auth) fn carve(&self, subst: &Subst<'_>) -> Option<TopicFilter> {
        let mut out: Vec<String> = Vec::with_capacity(self.levels.len());
        for level in self.levels.iter() {
            match level {
                Level::Hash => out.push("#".into()),
                Level::Plus => out.push("+".into()),
                Level::Exact(e) => out.push(e.to_string()),
                Level::Template(parts) if subst.safe_for(parts) => out.push(
                    parts
                        .iter()
                        .map(|p| match p {
                            Part::Lit(s) => s,
                            Part::Principal => subst.principal,
                            Part::ClientId => subst.client_id,
                        })
                        .collect(),
                ),
                Level::Template(_) => {
                    out.push("#".into());
                    break;
                }
            }
        }
        TopicFilter::new(out.join("/")).ok()
    }
}

impl fmt::Debug for FilterTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.source, f)
    }
}

impl fmt::Display for FilterTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

fn parse_template(level: &str) -> Vec<Part> {
    let mut parts = Vec::new();
    let mut lit = String::new();
    let mut chars = level.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('%', Some('u')) => {
                chars.next();
                flush(&mut lit, &mut parts);
                parts.push(Part::Principal);
            }
            ('%', Some('c')) => {
                chars.next();
                flush(&mut lit, &mut parts);
                parts.push(Part::ClientId);
            }
            _ => lit.push(c),
        }
    }
    flush(&mut lit, &mut parts);
    parts
}

fn flush(lit: &mut String, parts: &mut Vec<Part>) {
    if !lit.is_empty() {
        parts.push(Part::Lit(std::mem::take(lit).into()));
    }
}

/// Whether the template level, with substitutions, equals `level`.
fn template_eq(parts: &[Part], level: &str, subst: &Subst<'_>) -> bool {
    let mut rest = level;
    for part in parts {
        let piece = match part {
            Part::Lit(s) => s,
            Part::Principal => subst.principal,
            Part::ClientId => subst.client_id,
        };
        match rest.strip_prefix(piece) {
            Some(r) => rest = r,
            None => return false,
        }
    }
    rest.is_empty()
}

/// Substitution values for one request, checked once.
pub(in crate::auth) struct Subst<'a> {
    principal: &'a str,
    client_id: &'a str,
}

impl<'a> Subst<'a> {
    /// Whether every placeholder of a template level can be filled safely.
    /// Asked only of template rules, so most decisions never scan the names.
    fn safe_for(&self, parts: &[Part]) -> bool {
        let safe = |s: &str| !s.is_empty() && !s.contains(['+', '#', '/']);
        parts.iter().all(|p| match p {
            Part::Lit(_) => true,
            Part::Principal => safe(self.principal),
            Part::ClientId => safe(self.client_id),
        })
    }

    /// The values of a request by `principal` on `client_id`.
    pub(in crate::auth) fn new(principal: &'a str, client_id: &'a str) -> Self {
        Self {
            principal,
            client_id,
        }
    }
}

/// The index key of a rule: its first literal level before any `#` or
/// placeholder. A deny rule whose placeholder cannot be filled safely matches
/// everything past its literal prefix, so nothing after a placeholder may
/// narrow where it is looked for.
impl FilterTemplate {
    /// The index key of a rule with this filter: its first literal level
    /// before any `#` or placeholder (see [`crate::auth::Acl`]).
    pub(in crate::auth) fn index_key(&self) -> Option<(usize, &str)> {
        for (position, level) in self.levels.iter().enumerate() {
            match level {
                Level::Plus => {}
                Level::Exact(text) => return Some((position, text)),
                Level::Hash | Level::Template(_) => return None,
            }
        }
        None
    }
}
