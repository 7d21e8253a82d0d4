//! The wire vocabulary of authorization: resources, operations, ACL rules and users, as admin
//! requests carry them. The broker decides with them; the client and CLI only name them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What an ACL rule protects. `Delay` names the topic a delayed record goes to; `Cluster` has no
/// name of its own (its rules use the pattern `*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResourceKind {
    Topic,
    Group,
    Exchange,
    Plugin,
    Delay,
    Cluster,
}

/// What a principal does to a resource. `Alter` covers attach / detach / bind / config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Operation {
    Produce,
    Consume,
    Create,
    Delete,
    Alter,
    Describe,
    Commit,
    Deploy,
    /// On the cluster: every operation on every resource (users and ACLs included).
    Admin,
}

impl Operation {
    pub const ALL: [Operation; 9] = [
        Operation::Produce,
        Operation::Consume,
        Operation::Create,
        Operation::Delete,
        Operation::Alter,
        Operation::Describe,
        Operation::Commit,
        Operation::Deploy,
        Operation::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Produce => "produce",
            Operation::Consume => "consume",
            Operation::Create => "create",
            Operation::Delete => "delete",
            Operation::Alter => "alter",
            Operation::Describe => "describe",
            Operation::Commit => "commit",
            Operation::Deploy => "deploy",
            Operation::Admin => "admin",
        }
    }
}

impl ResourceKind {
    pub const ALL: [ResourceKind; 6] = [
        ResourceKind::Topic,
        ResourceKind::Group,
        ResourceKind::Exchange,
        ResourceKind::Plugin,
        ResourceKind::Delay,
        ResourceKind::Cluster,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Topic => "topic",
            ResourceKind::Group => "group",
            ResourceKind::Exchange => "exchange",
            ResourceKind::Plugin => "plugin",
            ResourceKind::Delay => "delay",
            ResourceKind::Cluster => "cluster",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not one of the known operations or resource kinds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {got:?}; one of: {known}")]
pub struct UnknownName {
    what: &'static str,
    got: String,
    known: String,
}

fn parse_named<T: Copy>(
    s: &str,
    all: &[T],
    name: impl Fn(T) -> &'static str,
    what: &'static str,
) -> Result<T, UnknownName> {
    let s = s.trim().to_ascii_lowercase();
    all.iter()
        .copied()
        .find(|v| name(*v) == s)
        .ok_or_else(|| UnknownName {
            what,
            got: s,
            known: all.iter().map(|v| name(*v)).collect::<Vec<_>>().join(", "),
        })
}

impl FromStr for Operation {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_named(s, &Operation::ALL, Operation::as_str, "operation")
    }
}

impl FromStr for ResourceKind {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_named(s, &ResourceKind::ALL, ResourceKind::as_str, "resource")
    }
}

/// An ACL rule as written by an operator: `principal` (a name, or `*` for everyone
/// authenticated) may (or, with `deny`, may not) do `operations` on the resources of `resource`
/// whose name is `pattern` — a literal name, `*` for all, or a prefix ending in `*` (`orders.*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclSpec {
    pub principal: String,
    pub resource: ResourceKind,
    pub pattern: String,
    pub operations: Vec<Operation>,
    #[serde(default)]
    pub deny: bool,
}

/// A stored rule: the spec with the id `acl remove` takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclRule {
    pub id: u64,
    #[serde(flatten)]
    pub spec: AclSpec,
}

impl fmt::Display for AclSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ops: Vec<&str> = self.operations.iter().map(|o| o.as_str()).collect();
        let effect = if self.deny { "deny" } else { "allow" };
        write!(
            f,
            "{effect} {} {} on {} {}",
            self.principal,
            ops.join(","),
            self.resource,
            self.pattern
        )
    }
}

/// Limits of one principal; `None` is unlimited. Over a byte rate the broker holds answers back
/// (throttles), it does not refuse them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Quota {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub produce_bytes_per_sec: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fetch_bytes_per_sec: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connections: Option<u32>,
}

/// A quota set at runtime for a principal (`*`: the default for every principal without one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrincipalQuota {
    pub principal: String,
    pub quota: Quota,
}

/// A token user, as `user list` shows it (never the token or its hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    pub name: String,
    /// Creation time, ms since the epoch.
    pub created_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_both_ways_and_unknown_ones_list_the_known() {
        for op in Operation::ALL {
            assert_eq!(op.as_str().parse::<Operation>(), Ok(op));
        }
        for r in ResourceKind::ALL {
            assert_eq!(r.as_str().to_uppercase().parse::<ResourceKind>(), Ok(r));
        }
        let err = "write".parse::<Operation>().unwrap_err().to_string();
        assert!(
            err.contains("\"write\"") && err.contains("produce, consume"),
            "{err}"
        );
    }

    #[test]
    fn rules_encode_as_flat_maps() {
        let rule = AclRule {
            id: 7,
            spec: AclSpec {
                principal: "alice".into(),
                resource: ResourceKind::Topic,
                pattern: "orders.*".into(),
                operations: vec![Operation::Produce, Operation::Describe],
                deny: false,
            },
        };
        let bytes = rmp_serde::to_vec_named(&rule).unwrap();
        assert_eq!(rmp_serde::from_slice::<AclRule>(&bytes).unwrap(), rule);
        assert_eq!(
            rule.spec.to_string(),
            "allow alice produce,describe on topic orders.*"
        );
    }
}
