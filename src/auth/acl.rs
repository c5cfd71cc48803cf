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
//!   rule covering all of `a/#`, not merely `a/b`). A deny rule that covers
//!   the request refuses it; one that only overlaps it (`deny private/#`
//!   beside a subscription to `#`) carves its topics out of the grant: the
//!   decision carries its filter ([`Decision::exclusions`]), which the hub
//!   checks at each delivery through that subscription. A shared
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

use super::vocabulary::{
    AuthzRequest, ClaimAcl, ClaimList, DecidedBy, Decision, Effect, Exclusions, FilterTemplate,
    Identity, Operation, Subst,
};

/// The operations a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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

/// One ACL rule.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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

// Written as its rules, in order; read back through the same indexing.
impl serde::Serialize for Acl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.rules.serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for Acl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<Rule>::deserialize(d).map(Acl::new)
    }
}

impl Acl {
    /// An ACL of these rules, in this order.
    pub fn new(rules: Vec<Rule>) -> Self {
        let mut by_literal: Vec<((usize, Box<str>), Bucket)> = Vec::new();
        let mut unindexed = Bucket::default();
        for (i, rule) in rules.iter().enumerate() {
            match rule.filter.index_key() {
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
        let subst = Subst::new(&req.identity.principal, &req.identity.client_id);
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
        // A subscription: a deny rule that overlaps it without covering it
        // carves its topics out of what a later allow grants; one that
        // covers it refuses it whole.
        let mut carved = Vec::new();
        for index in merged(&mut lists) {
            let rule = &self.rules[index];
            if !rule.ops.applies_to(req.op) || !rule.subject.matches(req.identity) {
                continue;
            }
            if subscribe
                && rule.effect == Effect::Deny
                && rule.filter.intersects(&levels, &subst, true)
                && !rule.filter.covers_filter(&levels, &subst, true)
                && let Some(filter) = rule.filter.carve(&subst)
            {
                carved.push(filter);
                continue;
            }
            if rule_matches(&rule.filter, rule.effect, req.op, &levels, &subst) {
                let exclusions = match rule.effect {
                    Effect::Allow => Exclusions::new(carved),
                    Effect::Deny => Exclusions::default(),
                };
                return Decision {
                    effect: rule.effect,
                    decided_by: DecidedBy::Rule {
                        index,
                        name: rule.name.clone(),
                    },
                    exclusions,
                };
            }
        }
        if let Some(acl) = req.identity.grants.acl.as_deref()
            && let Some(decided_by) = claim_grant(acl, req.op, &levels, &subst)
        {
            return Decision {
                effect: Effect::Allow,
                decided_by,
                exclusions: Exclusions::new(carved),
            };
        }
        Decision::new(Effect::Deny, DecidedBy::NoMatch)
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
