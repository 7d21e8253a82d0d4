//! ACL rules (Kafka's model): stored in sled, held in memory as one shared snapshot that every
//! check reads, so a change applies to open connections at the next request. Deny wins over
//! allow; `admin` on a resource allows every operation on it, and `admin` on the cluster makes a
//! principal a superuser (still bound by deny rules). Any allowed operation implies `describe`.

use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use quiver_proto::auth::{AclRule, AclSpec, Operation, ResourceKind};

use super::users::check_name;
use super::AuthError;
use crate::meta::{MetaStore, Namespace};

pub(super) struct Acls {
    meta: MetaStore,
    rules: RwLock<Arc<Vec<AclRule>>>,
    /// Serialises writers so two changes cannot lose each other's snapshot.
    write: Mutex<()>,
}

impl Acls {
    pub(super) fn open(meta: MetaStore) -> Result<Acls, AuthError> {
        let rules: Vec<AclRule> = meta
            .scan::<AclSpec>(Namespace::Acls, "")?
            .into_iter()
            .filter_map(|(key, spec)| {
                Some(AclRule {
                    id: key.parse().ok()?,
                    spec,
                })
            })
            .collect();
        Ok(Acls {
            meta,
            rules: RwLock::new(Arc::new(rules)),
            write: Mutex::new(()),
        })
    }

    pub(super) fn add(&self, spec: AclSpec) -> Result<AclRule, AuthError> {
        let spec = validate(spec)?;
        let _w = self.write.lock();
        let id = self.meta.generate_id()?;
        self.meta.put_durable(Namespace::Acls, &key(id), &spec)?;
        let rule = AclRule { id, spec };
        let mut next = self.list().as_ref().clone();
        next.push(rule.clone());
        *self.rules.write() = Arc::new(next);
        Ok(rule)
    }

    pub(super) fn remove(&self, id: u64) -> Result<(), AuthError> {
        let _w = self.write.lock();
        let mut next = self.list().as_ref().clone();
        let before = next.len();
        next.retain(|r| r.id != id);
        if next.len() == before {
            return Err(AuthError::UnknownAcl(id));
        }
        self.meta.remove_durable(Namespace::Acls, &key(id))?;
        *self.rules.write() = Arc::new(next);
        Ok(())
    }

    pub(super) fn list(&self) -> Arc<Vec<AclRule>> {
        self.rules.read().clone()
    }

    /// Whether `principal` may do `op` on the resource `kind`/`name`.
    pub(super) fn allows(
        &self,
        principal: &str,
        kind: ResourceKind,
        name: &str,
        op: Operation,
    ) -> bool {
        decide(&self.rules.read(), principal, kind, name, op)
    }

    /// Whether `principal` is allowed `admin` on the cluster (a superuser).
    pub(super) fn is_superuser(&self, principal: &str) -> bool {
        self.allows(principal, ResourceKind::Cluster, "*", Operation::Admin)
    }
}

/// Zero-padded, so sled's key order is id order.
fn key(id: u64) -> String {
    format!("{id:020}")
}

fn validate(mut spec: AclSpec) -> Result<AclSpec, AuthError> {
    if spec.principal != "*" {
        check_name(&spec.principal)?;
    }
    if spec.operations.is_empty() {
        return Err(AuthError::InvalidRule(
            "a rule needs at least one operation".into(),
        ));
    }
    spec.operations.sort();
    spec.operations.dedup();
    if spec.resource == ResourceKind::Cluster {
        spec.pattern = "*".into();
    }
    let stars = spec.pattern.matches('*').count();
    if spec.pattern.is_empty() || stars > 1 || (stars == 1 && !spec.pattern.ends_with('*')) {
        return Err(AuthError::InvalidRule(format!(
            "pattern {:?}: a literal name, `*`, or a prefix ending in `*` (orders.*)",
            spec.pattern
        )));
    }
    Ok(spec)
}

fn decide(
    rules: &[AclRule],
    principal: &str,
    kind: ResourceKind,
    name: &str,
    op: Operation,
) -> bool {
    let applies = |r: &&AclRule| {
        (r.spec.principal == "*" || r.spec.principal == principal)
            && r.spec.resource == kind
            && pattern_matches(&r.spec.pattern, name)
    };
    let mut allowed = false;
    for rule in rules.iter().filter(applies) {
        let ops = &rule.spec.operations;
        if rule.spec.deny {
            if ops.contains(&op) || ops.contains(&Operation::Admin) {
                return false;
            }
        } else {
            allowed |=
                ops.contains(&op) || ops.contains(&Operation::Admin) || op == Operation::Describe;
        }
    }
    allowed || (kind != ResourceKind::Cluster && superuser(rules, principal))
}

/// Allowed `admin` on the cluster and not denied it.
fn superuser(rules: &[AclRule], principal: &str) -> bool {
    decide(
        rules,
        principal,
        ResourceKind::Cluster,
        "*",
        Operation::Admin,
    )
}

fn pattern_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Operation::*;
    use ResourceKind::*;

    fn rule(
        principal: &str,
        resource: ResourceKind,
        pattern: &str,
        ops: &[Operation],
        deny: bool,
    ) -> AclSpec {
        AclSpec {
            principal: principal.into(),
            resource,
            pattern: pattern.into(),
            operations: ops.to_vec(),
            deny,
        }
    }

    #[test]
    fn prefixes_deny_and_superusers_decide_like_kafka() {
        let dir = tempfile::tempdir().unwrap();
        let acls = Acls::open(MetaStore::open(dir.path()).unwrap()).unwrap();
        acls.add(rule("alice", Topic, "orders.*", &[Produce], false))
            .unwrap();
        let deny = acls
            .add(rule("alice", Topic, "orders.secret", &[Produce], true))
            .unwrap();
        acls.add(rule("*", Group, "shared", &[Consume], false))
            .unwrap();
        acls.add(rule("root", Cluster, "ignored", &[Admin], false))
            .unwrap();
        assert!(acls.allows("alice", Topic, "orders.eu", Produce));
        assert!(
            acls.allows("alice", Topic, "orders.eu", Describe),
            "produce implies describe"
        );
        assert!(!acls.allows("alice", Topic, "orders.eu", Consume));
        assert!(
            !acls.allows("alice", Topic, "orders", Produce),
            "`orders.*` is a prefix with the dot"
        );
        assert!(
            !acls.allows("alice", Topic, "orders.secret", Produce),
            "deny wins"
        );
        assert!(
            acls.allows("bob", Group, "shared", Consume)
                && !acls.allows("bob", Group, "other", Consume)
        );
        assert!(acls.allows("root", Topic, "anything", Delete) && acls.is_superuser("root"));
        assert!(!acls.is_superuser("alice"));
        acls.remove(deny.id).unwrap();
        assert!(acls.allows("alice", Topic, "orders.secret", Produce));
        assert!(matches!(
            acls.remove(deny.id),
            Err(AuthError::UnknownAcl(_))
        ));
        drop(acls);
        let acls = Acls::open(MetaStore::open(dir.path()).unwrap()).unwrap();
        assert_eq!(acls.list().len(), 3, "rules survive a restart");
        assert_eq!(
            acls.list()[2].spec.pattern,
            "*",
            "cluster rules have no name"
        );
    }

    #[test]
    fn bad_rules_are_refused() {
        for bad in [
            rule("alice", Topic, "or*ders", &[Produce], false),
            rule("alice", Topic, "", &[Produce], false),
            rule("alice", Topic, "a**", &[Produce], false),
            rule("a b", Topic, "x", &[Produce], false),
            rule("alice", Topic, "x", &[], false),
        ] {
            assert!(matches!(
                validate(bad),
                Err(AuthError::InvalidRule(_) | AuthError::InvalidName(_))
            ));
        }
    }
}
