//! The built-in authorizer: ordered allow/deny rules over MQTT topic filters,
//! with `%u` (principal) and `%c` (client id) substitution, plus the grants a
//! token carries in its own `acl` claim.
//!
//! # Evaluation order
//!
//! 1. The rules, in order; the first rule whose operation, subject and
//!    filter all match decides.
//! 2. If no rule matched, the token's `acl` claim: an operation is allowed
//!    when one of the claim's filters for it (or for `all`) matches. Claims
//!    only ever allow, so an operator's deny rule always wins over a token.
//! 3. Otherwise: deny.
//!
//! # Matching
//!
//! - A will is its own operation: it matches rules for `will` and rules for
//!   `publish`, so wills to `status/%u` can be allowed while ordinary
//!   publishes there are denied (with a `will` allow rule before a `publish`
//!   deny rule), or the other way round.
//! - Publish and will requests match a topic name against the rule's filter
//!   with MQTT's own matching, including the rule that a leading wildcard does
//!   not match a `$` topic [MQTT-4.7.2-1].
//! - Subscribe requests are allowed by containment: an allow rule's filter
//!   must match every topic the requested filter can match (`a/#` needs a
//!   rule covering all of `a/#`, not merely `a/b`). A deny rule applies as
//!   soon as it overlaps the request (`deny private/#` refuses a subscription
//!   to `#`): messages routed to a subscription are not re-authorized one by
//!   one, so a subscription is granted whole or not at all. A shared
//!   subscription `$share/{group}/{filter}` is judged on its inner filter.
//! - Substitution never widens a grant: a principal or client id that is
//!   empty or holds `+`, `#` or `/` cannot be substituted. An allow rule
//!   that needs it does not match; a deny rule that needs it matches every
//!   topic under its literal prefix (`deny private/%u/#` denies all of
//!   `private/` to a principal named `a/b`).
//! - Rules are indexed by their first literal level (position and text) and
//!   by principal; a decision looks only at the rules that can match, in
//!   their order.

use std::fmt;
use std::sync::Arc;

use smallvec::SmallVec;

use super::identity::Identity;
use crate::codec::{MqttString, QoS, TopicFilter};

/// What a client asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// Publish to a topic name.
    Publish,
    /// Subscribe with a topic filter.
    Subscribe,
    /// Have its will published to a topic name.
    Will,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Publish => "publish",
            Self::Subscribe => "subscribe",
            Self::Will => "will",
        })
    }
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Effect {
    /// The operation may proceed.
    Allow,
    /// It may not.
    Deny,
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        })
    }
}

/// The operations a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ops(u8);

impl Ops {
    /// Publish only.
    pub const PUBLISH: Self = Self(1);
    /// Subscribe only.
    pub const SUBSCRIBE: Self = Self(2);
    /// Will only.
    pub const WILL: Self = Self(4);
    /// Every operation.
    pub const ALL: Self = Self(7);

    /// Whether every operation of `other` is in this set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The union of two sets.
    #[must_use]
    pub const fn with(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// Whether a rule for these operations applies to `op`; a will request
    /// also matches publish rules.
    pub const fn applies_to(self, op: Operation) -> bool {
        match op {
            Operation::Publish => self.0 & Self::PUBLISH.0 != 0,
            Operation::Subscribe => self.0 & Self::SUBSCRIBE.0 != 0,
            Operation::Will => self.0 & (Self::WILL.0 | Self::PUBLISH.0) != 0,
        }
    }
}

/// Who a rule applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// Exactly this principal.
    Principal(String),
    /// Identities carrying this role.
    Role(String),
    /// Client ids matching this pattern (`*` matches any run of characters).
    ClientId(String),
    /// Any identity established with credentials.
    Authenticated,
    /// Identities of clients that presented no credentials.
    Anonymous,
    /// Everyone.
    Anyone,
}

impl Subject {
    fn matches(&self, id: &Identity) -> bool {
        match self {
            Self::Principal(p) => !id.is_anonymous() && *id.principal == **p,
            Self::Role(r) => id.has_role(r),
            Self::ClientId(pattern) => glob_match(pattern, &id.client_id),
            Self::Authenticated => !id.is_anonymous(),
            Self::Anonymous => id.is_anonymous(),
            Self::Anyone => true,
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Principal(p) => write!(f, "principal {p}"),
            Self::Role(r) => write!(f, "role {r}"),
            Self::ClientId(c) => write!(f, "client id {c}"),
            Self::Authenticated => f.write_str("authenticated"),
            Self::Anonymous => f.write_str("anonymous"),
            Self::Anyone => f.write_str("anyone"),
        }
    }
}

/// `*`-glob matching without allocation.
fn glob_match(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let mut parts: SmallVec<[&str; 4]> = parts.collect();
    let Some(last) = parts.pop() else {
        // No `*` at all: exact match.
        return rest.is_empty();
    };
    for part in parts {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

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
    fn misses_dollar_topic(&self, levels: &[&str]) -> bool {
        levels.first().is_some_and(|l| l.starts_with('$'))
            && matches!(self.levels.first(), Some(Level::Hash | Level::Plus))
    }

    /// Whether the template matches the topic split into `levels`. With
    /// `widen`, a level that cannot be substituted safely matches the rest of
    /// any topic (how deny rules stay conservative).
    fn matches_topic(&self, topic: &[&str], subst: &Subst<'_>, widen: bool) -> bool {
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
    fn covers_filter(&self, filter: &[&str], subst: &Subst<'_>, widen: bool) -> bool {
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
    fn intersects(&self, filter: &[&str], subst: &Subst<'_>, widen: bool) -> bool {
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
struct Subst<'a> {
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

    fn new(id: &'a Identity) -> Self {
        Self {
            principal: &id.principal,
            client_id: &id.client_id,
        }
    }
}

/// One ACL rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// A name for audit records; the index is used when absent.
    pub name: Option<Arc<str>>,
    /// Allow or deny.
    pub effect: Effect,
    /// The operations it applies to.
    pub ops: Ops,
    /// Who it applies to.
    pub subject: Subject,
    /// The topics it covers.
    pub filter: FilterTemplate,
}

impl Rule {
    /// A rule without a name.
    pub fn new(effect: Effect, ops: Ops, subject: Subject, filter: FilterTemplate) -> Self {
        Self {
            name: None,
            effect,
            ops,
            subject,
            filter,
        }
    }

    /// Names the rule for audit records.
    #[must_use]
    pub fn named(mut self, name: &str) -> Self {
        self.name = Some(name.into());
        self
    }
}

/// Topic filters a token grants through its own `acl` claim.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClaimAcl {
    /// Filters the token may publish (and send wills) to.
    pub publish: Vec<FilterTemplate>,
    /// Filters the token may subscribe within.
    pub subscribe: Vec<FilterTemplate>,
    /// Filters for every operation.
    pub all: Vec<FilterTemplate>,
}

impl ClaimAcl {
    /// Whether the claim grants nothing.
    pub fn is_empty(&self) -> bool {
        self.publish.is_empty() && self.subscribe.is_empty() && self.all.is_empty()
    }
}

/// Which list of a token's `acl` claim granted an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ClaimList {
    /// The `publish` list.
    Publish,
    /// The `subscribe` list.
    Subscribe,
    /// The `all` list.
    All,
}

/// What decided an authorization.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DecidedBy {
    /// The rule at this index (0-based) of the rule list.
    Rule {
        /// Its position.
        index: usize,
        /// Its name, if it has one.
        name: Option<Arc<str>>,
    },
    /// A filter of the token's `acl` claim.
    Claim {
        /// The list it is in.
        list: ClaimList,
        /// Its position in that list.
        index: usize,
    },
    /// No rule and no claim matched.
    NoMatch,
    /// The will policy after credential expiry (`strict` or `grace`): the
    /// will was triggered after its identity's credential had expired.
    WillAfterExpiry,
}

impl fmt::Display for DecidedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rule {
                index,
                name: Some(n),
            } => write!(f, "rule {index} ({n})"),
            Self::Rule { index, name: None } => write!(f, "rule {index}"),
            Self::Claim { list, index } => write!(f, "token acl claim {list:?}[{index}]"),
            Self::NoMatch => f.write_str("no rule"),
            Self::WillAfterExpiry => f.write_str("will policy: credential expired"),
        }
    }
}

/// An authorization answer and what decided it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Decision {
    /// Allow or deny.
    pub effect: Effect,
    /// The rule or claim that decided, or none.
    pub decided_by: DecidedBy,
}

impl Decision {
    /// Whether the operation may proceed.
    pub fn is_allowed(&self) -> bool {
        self.effect == Effect::Allow
    }

    /// A sentence a human understands.
    pub fn reason(&self) -> String {
        match (&self.effect, &self.decided_by) {
            (_, DecidedBy::NoMatch) => "no rule or token claim allows it".into(),
            (e, by) => format!("{e} by {by}"),
        }
    }
}

/// An authorization request: who wants to do what where.
#[derive(Debug, Clone, Copy)]
pub struct AuthzRequest<'a> {
    /// The identity asking (for a will: the stored snapshot).
    pub identity: &'a Identity,
    /// The operation.
    pub op: Operation,
    /// A topic name (publish, will) or a topic filter (subscribe).
    pub topic: &'a str,
    /// Requested QoS.
    pub qos: QoS,
    /// Retain flag (publish, will).
    pub retain: bool,
}

/// Rule indices of one slice of the index, split by principal so a request
/// skips rules written for other principals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Bucket {
    by_principal: Vec<(Box<str>, Vec<usize>)>,
    rest: Vec<usize>,
}

impl Bucket {
    fn push(&mut self, index: usize, rule: &Rule) {
        match &rule.subject {
            Subject::Principal(p) => {
                match self.by_principal.binary_search_by(|(k, _)| (**k).cmp(p)) {
                    Ok(at) => self.by_principal[at].1.push(index),
                    Err(at) => self
                        .by_principal
                        .insert(at, (p.as_str().into(), vec![index])),
                }
            }
            _ => self.rest.push(index),
        }
    }

    fn lists<'a>(&'a self, principal: &str, out: &mut SmallVec<[&'a [usize]; 8]>) {
        if let Ok(at) = self
            .by_principal
            .binary_search_by(|(k, _)| (**k).cmp(principal))
        {
            out.push(&self.by_principal[at].1);
        }
        out.push(&self.rest);
    }
}

/// An owned authorization request, as the core emits it and audit records
/// keep it: the identity snapshot, what, where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthzQuery {
    /// Who asks (for a will: the identity stored with it).
    pub identity: Arc<Identity>,
    /// The operation.
    pub op: Operation,
    /// Topic name (publish, will) or filter (subscribe), shared with the packet.
    pub topic: MqttString,
    /// QoS.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// For a will: what triggered it.
    pub will_trigger: Option<super::audit::WillTrigger>,
}

impl AuthzQuery {
    /// The borrowed form [`Acl::authorize`] answers.
    pub fn as_request(&self) -> AuthzRequest<'_> {
        AuthzRequest {
            identity: &self.identity,
            op: self.op,
            topic: &self.topic,
            qos: self.qos,
            retain: self.retain,
        }
    }
}

/// The ordered rule list, indexed so that a decision looks only at rules
/// that can match: by the first literal level of each rule's filter (its
/// position and text) and, within that, by principal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acl {
    rules: Vec<Rule>,
    /// Rules by (position, text) of the first literal level that comes before
    /// any `#` or placeholder; sorted for binary search.
    by_literal: Vec<((usize, Box<str>), Bucket)>,
    /// The distinct positions in `by_literal`, ascending.
    positions: Vec<usize>,
    /// Rules with no such level (`#`, `+/+`, `%u/#`…): always looked at.
    unindexed: Bucket,
}

/// The index key of a rule: its first literal level before any `#` or
/// placeholder. A deny rule whose placeholder cannot be filled safely matches
/// everything past its literal prefix, so nothing after a placeholder may
/// narrow where it is looked for.
fn index_key(filter: &FilterTemplate) -> Option<(usize, &str)> {
    for (position, level) in filter.levels.iter().enumerate() {
        match level {
            Level::Plus => {}
            Level::Exact(text) => return Some((position, text)),
            Level::Hash | Level::Template(_) => return None,
        }
    }
    None
}

impl Acl {
    /// An ACL of these rules, in this order.
    pub fn new(rules: Vec<Rule>) -> Self {
        let mut by_literal: Vec<((usize, Box<str>), Bucket)> = Vec::new();
        let mut unindexed = Bucket::default();
        for (i, rule) in rules.iter().enumerate() {
            match index_key(&rule.filter) {
                Some((position, text)) => {
                    let at = match by_literal
                        .binary_search_by(|((p, t), _)| (*p, &**t).cmp(&(position, text)))
                    {
                        Ok(at) => at,
                        Err(at) => {
                            by_literal.insert(at, ((position, text.into()), Bucket::default()));
                            at
                        }
                    };
                    by_literal[at].1.push(i, rule);
                }
                None => unindexed.push(i, rule),
            }
        }
        let mut positions: Vec<usize> = by_literal.iter().map(|((p, _), _)| *p).collect();
        positions.dedup();
        Self {
            rules,
            by_literal,
            positions,
            unindexed,
        }
    }

    /// The rules.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Decides a request; see the module docs for the order.
    pub fn authorize(&self, req: &AuthzRequest<'_>) -> Decision {
        let subst = Subst::new(req.identity);
        // A shared subscription is judged on its inner filter.
        let topic = match req.op {
            Operation::Subscribe => req
                .topic
                .strip_prefix("$share/")
                .and_then(|rest| rest.split_once('/'))
                .map_or(req.topic, |(_, inner)| inner),
            _ => req.topic,
        };
        let mut levels = SmallVec::new();
        split_levels(topic, &mut levels);
        let principal: &str = &req.identity.principal;
        let mut lists: SmallVec<[&[usize]; 8]> = SmallVec::new();
        let subscribe = req.op == Operation::Subscribe;
        // Where a subscription's `#` starts, every deeper literal overlaps it.
        let hash_at = if subscribe {
            levels.iter().position(|l| *l == "#")
        } else {
            None
        };
        for &position in &self.positions {
            let wildcard = hash_at.is_some_and(|h| h <= position)
                || (subscribe && levels.get(position) == Some(&"+"));
            if wildcard {
                let start = self.by_literal.partition_point(|((p, _), _)| *p < position);
                let end = self
                    .by_literal
                    .partition_point(|((p, _), _)| *p <= position);
                for (_, bucket) in &self.by_literal[start..end] {
                    bucket.lists(principal, &mut lists);
                }
            } else if let Some(text) = levels.get(position)
                && let Ok(at) = self
                    .by_literal
                    .binary_search_by(|((p, t), _)| (*p, &**t).cmp(&(position, *text)))
            {
                self.by_literal[at].1.lists(principal, &mut lists);
            }
        }
        self.unindexed.lists(principal, &mut lists);
        for index in merged(&mut lists) {
            let rule = &self.rules[index];
            if !rule.ops.applies_to(req.op) || !rule.subject.matches(req.identity) {
                continue;
            }
            if rule_matches(&rule.filter, rule.effect, req.op, &levels, &subst) {
                return Decision {
                    effect: rule.effect,
                    decided_by: DecidedBy::Rule {
                        index,
                        name: rule.name.clone(),
                    },
                };
            }
        }
        if let Some(acl) = req.identity.grants.acl.as_deref()
            && let Some(decided_by) = claim_grant(acl, req.op, &levels, &subst)
        {
            return Decision {
                effect: Effect::Allow,
                decided_by,
            };
        }
        Decision {
            effect: Effect::Deny,
            decided_by: DecidedBy::NoMatch,
        }
    }
}

/// The union of ascending, disjoint index lists, ascending: rule order is kept.
// Borrowed: the list set is built on the caller's stack, and moving it in
// copied it.
fn merged<'a, 'b>(
    lists: &'b mut SmallVec<[&'a [usize]; 8]>,
) -> impl Iterator<Item = usize> + use<'a, 'b> {
    std::iter::from_fn(move || {
        let (k, &next) = lists
            .iter()
            .enumerate()
            .filter_map(|(k, l)| l.first().map(|v| (k, v)))
            .min_by_key(|&(_, v)| *v)?;
        lists[k] = &lists[k][1..];
        Some(next)
    })
}

/// A topic's levels, split at each `/` (an ASCII byte, so every cut is on a
/// character boundary).
// Into the caller's vector: returned, it was copied out whole. A plain
// scan: topics are short, and a search set up per level costs more.
fn split_levels<'a>(topic: &'a str, levels: &mut SmallVec<[&'a str; 16]>) {
    let mut start = 0;
    for (i, &b) in topic.as_bytes().iter().enumerate() {
        if b == b'/' {
            levels.push(topic.get(start..i).unwrap_or_default());
            start = i + 1;
        }
    }
    levels.push(topic.get(start..).unwrap_or_default());
}

/// Whether a rule (or claim filter) with this effect applies to the request.
/// Deny rules are conservative: they apply to a subscription that merely
/// overlaps them, and across a placeholder they cannot fill safely.
fn rule_matches(
    filter: &FilterTemplate,
    effect: Effect,
    op: Operation,
    levels: &[&str],
    subst: &Subst<'_>,
) -> bool {
    match (op, effect) {
        (Operation::Subscribe, Effect::Allow) => filter.covers_filter(levels, subst, false),
        (Operation::Subscribe, Effect::Deny) => filter.intersects(levels, subst, true),
        (_, Effect::Allow) => filter.matches_topic(levels, subst, false),
        (_, Effect::Deny) => filter.matches_topic(levels, subst, true),
    }
}

fn claim_grant(
    acl: &ClaimAcl,
    op: Operation,
    levels: &[&str],
    subst: &Subst<'_>,
) -> Option<DecidedBy> {
    let own = match op {
        Operation::Publish | Operation::Will => (ClaimList::Publish, &acl.publish),
        Operation::Subscribe => (ClaimList::Subscribe, &acl.subscribe),
    };
    for (list, filters) in [own, (ClaimList::All, &acl.all)] {
        for (index, f) in filters.iter().enumerate() {
            if rule_matches(f, Effect::Allow, op, levels, subst) {
                return Some(DecidedBy::Claim { list, index });
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob() {
        assert!(glob_match("sensor-*", "sensor-1"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "aXbYc"));
        assert!(!glob_match("a*b*c", "aXbY"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
        assert!(glob_match("*-gw", "x-gw"));
        assert!(!glob_match("ab*ba", "aba"));
    }

    #[test]
    fn templates_parse_and_reject_bad_shapes() {
        assert!(FilterTemplate::new("clients/%u/#").is_ok());
        assert!(FilterTemplate::new("dev-%c/+/x").is_ok());
        assert!(FilterTemplate::new("a/#/b").is_err());
        assert!(FilterTemplate::new("$share/g/a").is_err());
        assert!(FilterTemplate::new("a/%u#").is_err());
    }
}
