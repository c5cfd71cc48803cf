//! The subscription tree: topic filters by level, `+` and `#` as their own
//! branches, so a topic is matched by walking its levels once instead of
//! testing every filter.

use std::collections::BTreeMap;

use smallvec::SmallVec;

use super::SessionKey;
use crate::codec::{SubscriptionId, SubscriptionOptions, TopicFilter};

/// One subscription of one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sub {
    pub key: SessionKey,
    /// The filter as the client wrote it (`$share/…` included).
    pub filter: TopicFilter,
    pub options: SubscriptionOptions,
    pub id: Option<SubscriptionId>,
    /// What its grant carved out: topics never delivered through it.
    pub exclusions: crate::auth::Exclusions,
}

impl Sub {
    /// The share group, for a shared subscription.
    pub fn group(&self) -> Option<&str> {
        self.filter.shared().map(|s| s.group)
    }
}

#[derive(Debug, Default)]
struct Node {
    children: BTreeMap<Box<str>, Node>,
    plus: Option<Box<Node>>,
    /// Filters ending here.
    exact: Vec<Sub>,
    /// Filters ending with `#` below here (`a/#` lives in the node of `a`).
    hash: Vec<Sub>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.plus.is_none()
            && self.exact.is_empty()
            && self.hash.is_empty()
    }
}

/// Every subscription of every session, by filter level.
#[derive(Debug, Default)]
pub(crate) struct Tree {
    root: Node,
    len: usize,
}

/// Levels of a topic or filter, without allocating for the usual depths.
pub(crate) type Levels<'a> = SmallVec<[&'a str; 12]>;

pub(crate) fn levels(s: &str) -> Levels<'_> {
    s.split('/').collect()
}

impl Tree {
    /// Subscriptions held, all sessions together.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Adds or replaces (same session, same filter) a subscription
    /// [MQTT-3.8.4-3]; returns whether one was replaced.
    pub fn insert(&mut self, sub: Sub) -> bool {
        let filter = sub.filter.match_filter().to_owned();
        let (node, hash) = Self::node_mut(&mut self.root, &filter);
        let list = if hash {
            &mut node.hash
        } else {
            &mut node.exact
        };
        if let Some(existing) = list
            .iter_mut()
            .find(|s| s.key == sub.key && s.filter == sub.filter)
        {
            *existing = sub;
            return true;
        }
        list.push(sub);
        self.len += 1;
        false
    }

    fn node_mut<'n>(mut node: &'n mut Node, filter: &str) -> (&'n mut Node, bool) {
        for level in filter.split('/') {
            match level {
                "#" => return (node, true),
                "+" => node = node.plus.get_or_insert_with(Box::default),
                text => node = node.children.entry(text.into()).or_default(),
            }
        }
        (node, false)
    }

    /// A session's subscription with this filter, if it has one.
    pub fn find(&self, key: SessionKey, filter: &TopicFilter) -> Option<&Sub> {
        let mut node = &self.root;
        let mut hash = false;
        for level in filter.match_filter().split('/') {
            match level {
                "#" => {
                    hash = true;
                    break;
                }
                "+" => node = node.plus.as_deref()?,
                text => node = node.children.get(text)?,
            }
        }
        let list = if hash { &node.hash } else { &node.exact };
        list.iter().find(|s| s.key == key && s.filter == *filter)
    }

    /// Removes a session's subscription; returns whether it existed.
    pub fn remove(&mut self, key: SessionKey, filter: &TopicFilter) -> bool {
        let lv = levels(filter.match_filter());
        let removed = Self::remove_at(&mut self.root, &lv, key, filter);
        if removed {
            self.len -= 1;
        }
        removed
    }

    fn remove_at(node: &mut Node, lv: &[&str], key: SessionKey, filter: &TopicFilter) -> bool {
        let take = |list: &mut Vec<Sub>| {
            let before = list.len();
            list.retain(|s| !(s.key == key && s.filter == *filter));
            list.len() != before
        };
        match lv.split_first() {
            None => take(&mut node.exact),
            Some((&"#", _)) => take(&mut node.hash),
            Some((&"+", rest)) => {
                let Some(child) = node.plus.as_deref_mut() else {
                    return false;
                };
                let removed = Self::remove_at(child, rest, key, filter);
                if child.is_empty() {
                    node.plus = None;
                }
                removed
            }
            Some((text, rest)) => {
                let Some(child) = node.children.get_mut(*text) else {
                    return false;
                };
                let removed = Self::remove_at(child, rest, key, filter);
                if child.is_empty() {
                    node.children.remove(*text);
                }
                removed
            }
        }
    }

    /// Keeps the subscriptions `keep` returns true for, in one walk of the
    /// tree (which `keep` may change in place, but not its key or filter):
    /// judging every subscription costs one visit each, where finding each
    /// by its filter would scan a popular filter's list once per
    /// subscriber.
    pub fn retain(&mut self, mut keep: impl FnMut(&mut Sub) -> bool) {
        let before = self.len;
        let mut removed = 0;
        Self::retain_at(&mut self.root, &mut keep, &mut removed);
        self.len = before - removed;
    }

    fn retain_at(node: &mut Node, keep: &mut impl FnMut(&mut Sub) -> bool, removed: &mut usize) {
        for list in [&mut node.exact, &mut node.hash] {
            let before = list.len();
            list.retain_mut(|s| keep(s));
            *removed += before - list.len();
        }
        if let Some(plus) = node.plus.as_deref_mut() {
            Self::retain_at(plus, keep, removed);
            if plus.is_empty() {
                node.plus = None;
            }
        }
        node.children.retain(|_, child| {
            Self::retain_at(child, keep, removed);
            !child.is_empty()
        });
    }

    /// Calls `f` with every subscription, in tree order.
    pub fn for_each(&self, mut f: impl FnMut(&Sub)) {
        fn walk(node: &Node, f: &mut impl FnMut(&Sub)) {
            node.exact.iter().chain(&node.hash).for_each(&mut *f);
            if let Some(plus) = node.plus.as_deref() {
                walk(plus, f);
            }
            node.children.values().for_each(|child| walk(child, f));
        }
        walk(&self.root, &mut f);
    }

    /// Every subscription whose filter matches `topic` (a valid topic
    /// name), in tree order: deterministic for a given set of insertions.
    #[cfg(test)]
    pub fn matches<'t>(&'t self, topic: &str, out: &mut Vec<&'t Sub>) {
        self.for_each_match(topic, |sub| out.push(sub));
    }

    /// Calls `f` with every subscription matching `topic`: routing collects
    /// what it needs without a list of them per message.
    pub fn for_each_match<'t>(&'t self, topic: &str, mut f: impl FnMut(&'t Sub)) {
        let lv = levels(topic);
        // [MQTT-4.7.2-1] A filter starting with a wildcard does not match a
        // topic starting with `$`.
        let dollar = topic.starts_with('$');
        Self::collect(&self.root, &lv, !dollar, &mut f);
    }

    fn collect<'t>(node: &'t Node, lv: &[&str], wildcards: bool, f: &mut impl FnMut(&'t Sub)) {
        if wildcards {
            node.hash.iter().for_each(&mut *f);
        }
        let Some((first, rest)) = lv.split_first() else {
            node.exact.iter().for_each(&mut *f);
            return;
        };
        if let Some(child) = node.children.get(*first) {
            Self::collect(child, rest, true, f);
        }
        if wildcards && let Some(plus) = node.plus.as_deref() {
            Self::collect(plus, rest, true, f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{QoS, TopicName};
    use crate::slots::SlotKey;

    fn sub(key: u64, filter: &'static str) -> Sub {
        Sub {
            key: SessionKey::from_id(key),
            filter: TopicFilter::from_static(filter),
            options: SubscriptionOptions {
                qos: QoS::AtMostOnce,
                ..SubscriptionOptions::default()
            },
            id: None,
            exclusions: Default::default(),
        }
    }

    fn matched(tree: &Tree, topic: &str) -> Vec<String> {
        let mut out = Vec::new();
        tree.matches(topic, &mut out);
        let mut names: Vec<String> = out
            .iter()
            // Keys are never 0: the test's filter `i` has key `i + 1`.
            .map(|s| format!("{}:{}", s.key.0.get() - 1, s.filter))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn the_tree_agrees_with_the_filter_rule() {
        let filters = [
            "#",
            "+",
            "a",
            "a/#",
            "a/+",
            "a/b",
            "a/+/c",
            "+/b/#",
            "$SYS/#",
            "$SYS/+",
            "+/+",
            "a/b/c/#",
            "/#",
            "+/",
            "$share/g/a/#",
        ];
        let topics = [
            "a", "a/b", "a/b/c", "a/x/c", "$SYS/x", "$SYS", "/", "b", "a/", "x/b/y", "a/b/c/d",
        ];
        let mut tree = Tree::default();
        for (i, f) in filters.iter().enumerate() {
            tree.insert(sub(i as u64 + 1, f));
        }
        assert_eq!(tree.len(), filters.len());
        for topic in topics {
            let name = TopicName::try_from(topic).unwrap();
            let mut expected: Vec<String> = filters
                .iter()
                .enumerate()
                .filter(|(_, f)| TopicFilter::from_static(f).matches(&name))
                .map(|(i, f)| format!("{i}:{f}"))
                .collect();
            expected.sort();
            assert_eq!(matched(&tree, topic), expected, "topic {topic}");
        }
    }

    #[test]
    fn same_session_same_filter_replaces_and_removal_prunes() {
        let mut tree = Tree::default();
        assert!(!tree.insert(sub(1, "a/+/c")));
        assert!(tree.insert(sub(1, "a/+/c")));
        assert!(!tree.insert(sub(2, "a/+/c")));
        assert_eq!(tree.len(), 2);
        assert!(tree.remove(SessionKey::from_id(1), &TopicFilter::from_static("a/+/c")));
        assert!(!tree.remove(SessionKey::from_id(1), &TopicFilter::from_static("a/+/c")));
        assert_eq!(
            matched(&tree, "a/b/c"),
            vec!["1:a/+/c".to_string()],
            "key 2"
        );
        assert!(tree.remove(SessionKey::from_id(2), &TopicFilter::from_static("a/+/c")));
        assert!(tree.root.is_empty());
    }
}
