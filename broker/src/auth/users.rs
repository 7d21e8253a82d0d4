//! Token users: each has one random token, shown once at creation and stored only as its SHA-256
//! hash. A token is `qvt_<id>_<secret>`: the id finds the user without a scan, the 256-bit secret
//! is hashed and compared in constant time. A fast hash is right here because the secret is random
//! (nothing to guess from a dictionary); passwords would need argon2.

use std::collections::HashMap;
use std::fmt::Write as _;

use parking_lot::RwLock;
use quiver_proto::auth::UserInfo;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AuthError;
use crate::meta::{MetaStore, Namespace};

const PREFIX: &str = "qvt_";
const ID_BYTES: usize = 8;
const SECRET_BYTES: usize = 32;

/// A user as stored: never the token itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredUser {
    name: String,
    token_id: String,
    #[serde(with = "serde_bytes")]
    token_hash: Vec<u8>,
    created_ms: i64,
}

pub(super) struct Users {
    meta: MetaStore,
    /// token id → user, loaded at open and kept in step with the store.
    by_id: RwLock<HashMap<String, StoredUser>>,
    random: SystemRandom,
}

impl Users {
    pub(super) fn open(meta: MetaStore) -> Result<Users, AuthError> {
        let stored: Vec<(String, StoredUser)> = meta.scan(Namespace::Users, "")?;
        let by_id = stored
            .into_iter()
            .map(|(_, u)| (u.token_id.clone(), u))
            .collect();
        Ok(Users {
            meta,
            by_id: RwLock::new(by_id),
            random: SystemRandom::new(),
        })
    }

    /// Creates `name` and returns its token (the only time it exists outside the client).
    pub(super) fn create(&self, name: &str) -> Result<String, AuthError> {
        let token = self.draw()?;
        self.insert(name, &token.id, token.hash())?;
        Ok(token.text())
    }

    /// A new random token, not yet given to anyone (a cluster node draws it once and
    /// replicates only its id and hash).
    pub(super) fn draw(&self) -> Result<DrawnToken, AuthError> {
        Ok(DrawnToken {
            id: self.random_hex(ID_BYTES)?,
            secret: self.random_hex(SECRET_BYTES)?,
        })
    }

    /// Stores user `name` whose token has id `token_id` and a secret hashing to `token_hash`.
    pub(super) fn insert(
        &self,
        name: &str,
        token_id: &str,
        token_hash: Vec<u8>,
    ) -> Result<(), AuthError> {
        check_name(name)?;
        let mut by_id = self.by_id.write();
        if by_id.values().any(|u| u.name == name) {
            return Err(AuthError::UserExists(name.to_owned()));
        }
        let user = StoredUser {
            name: name.to_owned(),
            token_id: token_id.to_owned(),
            token_hash,
            created_ms: crate::util::now_ms(),
        };
        self.meta.put_durable(Namespace::Users, name, &user)?;
        by_id.insert(token_id.to_owned(), user);
        Ok(())
    }

    pub(super) fn delete(&self, name: &str) -> Result<(), AuthError> {
        let mut by_id = self.by_id.write();
        let Some(id) = by_id
            .iter()
            .find(|(_, u)| u.name == name)
            .map(|(id, _)| id.clone())
        else {
            return Err(AuthError::UnknownUser(name.to_owned()));
        };
        self.meta.remove_durable(Namespace::Users, name)?;
        by_id.remove(&id);
        Ok(())
    }

    pub(super) fn exists(&self, name: &str) -> bool {
        self.by_id.read().values().any(|u| u.name == name)
    }

    pub(super) fn list(&self) -> Vec<UserInfo> {
        let mut users: Vec<UserInfo> = self
            .by_id
            .read()
            .values()
            .map(|u| UserInfo {
                name: u.name.clone(),
                created_ms: u.created_ms,
            })
            .collect();
        users.sort_by(|a, b| a.name.cmp(&b.name));
        users
    }

    /// The user a token belongs to. A malformed token, an unknown id and a wrong secret all
    /// answer `None` after the same hashing work, so the answer does not tell which it was.
    pub(super) fn verify(&self, token: &str) -> Option<String> {
        let (id, secret) = split(token).unwrap_or(("", token));
        let presented = hash(secret);
        let by_id = self.by_id.read();
        let (stored, name) = match by_id.get(id) {
            Some(u) => (u.token_hash.as_slice(), Some(&u.name)),
            None => (&[0u8; 32][..], None),
        };
        let equal: bool = presented.ct_eq(stored).into();
        name.filter(|_| equal).cloned()
    }

    fn random_hex(&self, n: usize) -> Result<String, AuthError> {
        let mut bytes = vec![0u8; n];
        self.random
            .fill(&mut bytes)
            .map_err(|_| AuthError::Random)?;
        Ok(bytes.iter().fold(String::with_capacity(2 * n), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        }))
    }
}

/// A token drawn for a new user: its id and its secret.
#[derive(Clone)]
pub struct DrawnToken {
    pub id: String,
    secret: String,
}

/// Never prints the secret.
impl std::fmt::Debug for DrawnToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DrawnToken")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl DrawnToken {
    /// What the broker stores (and a cluster replicates) instead of the secret.
    pub fn hash(&self) -> Vec<u8> {
        hash(&self.secret)
    }

    /// A token as the user passes it, if it is one.
    pub fn parse(text: &str) -> Option<DrawnToken> {
        let (id, secret) = split(text)?;
        Some(DrawnToken {
            id: id.to_owned(),
            secret: secret.to_owned(),
        })
    }

    /// The token as the user passes it: `qvt_<id>_<secret>`.
    pub fn text(&self) -> String {
        format!("{PREFIX}{}_{}", self.id, self.secret)
    }
}

fn split(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    (id.len() == 2 * ID_BYTES).then_some((id, secret))
}

fn hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// Principal names: what ACL rules and logs show. `*` and `anonymous` mean something else.
pub(crate) fn check_name(name: &str) -> Result<(), AuthError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@');
    let ok = !name.is_empty() && name.len() <= 128 && name.chars().all(allowed);
    if !ok || name == super::ANONYMOUS {
        return Err(AuthError::InvalidName(name.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_once_created_and_never_after_delete() {
        let dir = tempfile::tempdir().unwrap();
        let users = Users::open(MetaStore::open(dir.path()).unwrap()).unwrap();
        let token = users.create("alice").unwrap();
        assert!(
            token.starts_with("qvt_") && token.len() == 4 + 16 + 1 + 64,
            "{token}"
        );
        assert_eq!(users.verify(&token).as_deref(), Some("alice"));
        let mut wrong = token.clone();
        wrong.pop();
        wrong.push('x');
        assert_eq!(users.verify(&wrong), None);
        assert_eq!(users.verify("qvt_nonsense"), None);
        assert_eq!(users.verify(""), None);
        assert!(matches!(
            users.create("alice"),
            Err(AuthError::UserExists(_))
        ));
        assert!(matches!(
            users.create("a b"),
            Err(AuthError::InvalidName(_))
        ));
        assert!(matches!(
            users.create("anonymous"),
            Err(AuthError::InvalidName(_))
        ));
        drop(users);
        let users = Users::open(MetaStore::open(dir.path()).unwrap()).unwrap();
        assert_eq!(
            users.verify(&token).as_deref(),
            Some("alice"),
            "survives a restart"
        );
        let stored = format!("{:?}", users.by_id.read().values().next().unwrap());
        assert!(
            !stored.contains(&token[21..]),
            "the secret itself is never stored"
        );
        users.delete("alice").unwrap();
        assert_eq!(users.verify(&token), None);
        assert!(matches!(
            users.delete("alice"),
            Err(AuthError::UnknownUser(_))
        ));
    }
}
