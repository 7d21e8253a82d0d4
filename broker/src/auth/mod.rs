//! Authentication and authorization: who a connection is (token users, client certificates) and
//! what it may do (ACL rules checked through one request table). With authentication off every
//! connection is anonymous and nothing is checked; with it on, a connection must prove who it is
//! in its Hello and every request is checked against the ACLs as they are at that moment.
//! docs/security.md explains the model.

mod acl;
mod backoff;
pub mod principal;
pub mod quota;
pub mod table;
mod users;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use quiver_proto::auth::{AclSpec, Operation, ResourceKind};
use quiver_proto::groups::GroupResponse;
use quiver_proto::messages::{AdminRequest, AdminResponse};
use quiver_proto::ErrorCode;
use tokio::sync::broadcast;

pub use principal::{Principal, PrincipalFrom, Proof, ANONYMOUS};
pub use quota::{Direction, Quota, QuotaConfig, Quotas};
pub use table::{Access, Need, Request};
pub use users::DrawnToken;

use crate::meta::{MetaError, MetaStore};

/// The name of the user the first start with authentication creates, and its token file.
pub const ADMIN_USER: &str = "admin";
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// Authentication settings (`[auth]` in the config file).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Every connection must present a token or a client certificate; ACLs are enforced.
    pub enabled: bool,
    /// Lets a listener on a non-loopback address run without authentication.
    pub allow_anonymous: bool,
    /// Where a client certificate's principal name comes from.
    pub principal_from: PrincipalFrom,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The one answer to every failed authentication: it does not say whether the user exists.
    #[error("authentication failed: {0}")]
    Failed(&'static str),
    #[error("not authorized to {op} {resource} {name:?}")]
    NotAuthorized {
        op: Operation,
        resource: ResourceKind,
        name: String,
    },
    #[error("user {0:?} already exists")]
    UserExists(String),
    #[error("no user {0:?}")]
    UnknownUser(String),
    #[error("invalid principal name {0:?}: 1-128 letters, digits, '-', '_', '.' or '@' (not \"anonymous\")")]
    InvalidName(String),
    #[error("invalid ACL rule: {0}")]
    InvalidRule(String),
    #[error("no quota was set for {0:?} at runtime")]
    NoQuota(String),
    #[error("no ACL rule with id {0}")]
    UnknownAcl(u64),
    #[error("{principal} already has its quota of {limit} connections open")]
    ConnectionQuota { principal: String, limit: u32 },
    #[error("the system's random number generator failed")]
    Random,
    #[error("cannot write {}: {source}", path.display())]
    TokenFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Meta(#[from] MetaError),
}

impl AuthError {
    pub fn code(&self) -> ErrorCode {
        match self {
            AuthError::Failed(_) | AuthError::NotAuthorized { .. } => ErrorCode::NotAuthorized,
            AuthError::UserExists(_)
            | AuthError::UnknownUser(_)
            | AuthError::InvalidName(_)
            | AuthError::InvalidRule(_)
            | AuthError::UnknownAcl(_)
            | AuthError::NoQuota(_) => ErrorCode::InvalidRequest,
            AuthError::ConnectionQuota { .. } => ErrorCode::ServerBusy,
            AuthError::Random => ErrorCode::Internal,
            AuthError::TokenFile { .. } => ErrorCode::StorageError,
            AuthError::Meta(e) => e.code(),
        }
    }
}

pub struct Auth {
    config: AuthConfig,
    users: users::Users,
    acls: acl::Acls,
    backoff: backoff::Backoff,
    quotas: Quotas,
    /// Principals whose credentials were revoked: their connections close.
    revoked: broadcast::Sender<Arc<str>>,
    /// Open connections per principal.
    open: Mutex<HashMap<Arc<str>, u64>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Auth {
    pub fn open(
        meta: MetaStore,
        config: AuthConfig,
        quotas: QuotaConfig,
    ) -> Result<Auth, AuthError> {
        Ok(Auth {
            config,
            quotas: Quotas::open(meta.clone(), quotas)?,
            users: users::Users::open(meta.clone())?,
            acls: acl::Acls::open(meta)?,
            backoff: backoff::Backoff::default(),
            revoked: broadcast::channel(64).0,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// Authentication and ACL checks are on.
    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    /// With authentication on and no user yet: creates `admin` as a superuser and writes its
    /// token to `<data_dir>/admin.token` (mode 0600). Returns the file's path when it wrote it.
    /// `shared`: the folder nodes of a local cluster share (their dev CA's); the first node to
    /// start draws the token into `<shared>/admin.token` and every node creates `admin` with it,
    /// so one admin token works on every node.
    pub fn bootstrap(
        &self,
        data_dir: &Path,
        shared: Option<&Path>,
    ) -> Result<Option<PathBuf>, AuthError> {
        if !self.enabled() || !self.users.list().is_empty() {
            return Ok(None);
        }
        let token = match shared {
            Some(dir) => self.shared_admin_token(dir)?,
            None => self.users.draw()?,
        };
        self.users.insert(ADMIN_USER, &token.id, token.hash())?;
        let token = token.text();
        if !self.acls.is_superuser(ADMIN_USER) {
            self.acls.add(AclSpec {
                principal: ADMIN_USER.into(),
                resource: ResourceKind::Cluster,
                pattern: "*".into(),
                operations: vec![Operation::Admin],
                deny: false,
            })?;
        }
        let path = data_dir.join(ADMIN_TOKEN_FILE);
        // A file left from an earlier data directory holds a token that no longer works.
        let _ = std::fs::remove_file(&path);
        write_secret(&path, &token).map_err(|source| AuthError::TokenFile {
            path: path.clone(),
            source,
        })?;
        Ok(Some(path))
    }

    /// The admin token in `<dir>/admin.token`, drawn and written by the first node to get here
    /// (under `<dir>/admin.lock`, against nodes starting at the same moment).
    fn shared_admin_token(&self, dir: &Path) -> Result<users::DrawnToken, AuthError> {
        let path = dir.join(ADMIN_TOKEN_FILE);
        let file_err = |source| AuthError::TokenFile {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(file_err)?;
        let _lock = crate::util::LockFile::take(
            &dir.join("admin.lock"),
            std::time::Duration::from_secs(30),
        )
        .map_err(file_err)?;
        match std::fs::read_to_string(&path) {
            Ok(text) => users::DrawnToken::parse(text.trim()).ok_or_else(|| {
                file_err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "not a Quiver token",
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let token = self.users.draw()?;
                write_secret(&path, &token.text()).map_err(file_err)?;
                Ok(token)
            }
            Err(e) => Err(file_err(e)),
        }
    }

    /// Who the peer at `remote` is. Failures are slowed per address and all read the same.
    pub async fn authenticate(
        &self,
        remote: IpAddr,
        token: Option<&str>,
        certificate: Option<&[u8]>,
    ) -> Result<Principal, AuthError> {
        if !self.enabled() {
            return Ok(Principal::anonymous());
        }
        tokio::time::sleep(self.backoff.delay(remote)).await;
        let found = match (token, certificate) {
            (Some(t), _) => self
                .users
                .verify(t)
                .map(|n| Principal::new(&n, Proof::Token)),
            (None, Some(der)) => principal::from_certificate(der, self.config.principal_from)
                .map(|n| Principal::new(&n, Proof::Certificate)),
            (None, None) => None,
        };
        match found {
            Some(p) => Ok(p),
            None => {
                let wait = self.backoff.failed(remote);
                let how = if token.is_some() {
                    "token"
                } else if certificate.is_some() {
                    "certificate"
                } else {
                    "none"
                };
                tracing::warn!(target: "quiver::audit", %remote, credentials = how, result = "denied", "authentication failed");
                tokio::time::sleep(wait).await;
                Err(AuthError::Failed(
                    if token.is_some() || certificate.is_some() {
                        "invalid credentials"
                    } else {
                        "credentials required (a token in Hello or a client certificate)"
                    },
                ))
            }
        }
    }

    /// Checks `request` for `principal`; a denial is logged once to `quiver::audit`.
    pub fn authorize(
        &self,
        principal: &Principal,
        request: Request<'_>,
        delayed_topic: &dyn Fn(u64) -> Option<String>,
    ) -> Result<(), AuthError> {
        if !self.enabled() {
            return Ok(());
        }
        let Access::All(needs) = table::access(request, delayed_topic) else {
            return Ok(());
        };
        needs
            .iter()
            .try_for_each(|n| self.check(principal, n.resource, &n.name, n.op))
    }

    /// Checks one permission; a denial is logged once to `quiver::audit`.
    pub fn check(
        &self,
        principal: &Principal,
        resource: ResourceKind,
        name: &str,
        op: Operation,
    ) -> Result<(), AuthError> {
        if self.allows(principal, resource, name, op) {
            return Ok(());
        }
        tracing::warn!(target: "quiver::audit", principal = %principal, operation = %op,
            resource = %resource, name, result = "denied", "not authorized");
        Err(AuthError::NotAuthorized {
            op,
            resource,
            name: name.to_owned(),
        })
    }

    /// Whether `principal` may do `op` on a resource (always, with authentication off).
    pub fn allows(
        &self,
        principal: &Principal,
        resource: ResourceKind,
        name: &str,
        op: Operation,
    ) -> bool {
        !self.enabled() || self.acls.allows(principal.name(), resource, name, op)
    }

    /// Keeps in a list answer only what `principal` may describe.
    pub fn filter_admin(&self, principal: &Principal, answer: &mut AdminResponse) {
        if !self.enabled() {
            return;
        }
        let may = |kind, name: &str| {
            self.acls
                .allows(principal.name(), kind, name, Operation::Describe)
        };
        match answer {
            AdminResponse::Topics { topics } | AdminResponse::Metadata { topics, .. } => {
                topics.retain(|t| may(ResourceKind::Topic, &t.name))
            }
            AdminResponse::Plugins { plugins } => {
                plugins.retain(|p| may(ResourceKind::Plugin, &p.name))
            }
            AdminResponse::Exchanges { exchanges } => {
                exchanges.retain(|e| may(ResourceKind::Exchange, &e.name))
            }
            _ => {}
        }
    }

    /// Keeps in a group list only the groups `principal` may describe.
    pub fn filter_groups(&self, principal: &Principal, answer: &mut GroupResponse) {
        if let (true, GroupResponse::Groups { groups }) = (self.enabled(), answer) {
            groups.retain(|g| {
                self.acls.allows(
                    principal.name(),
                    ResourceKind::Group,
                    &g.name,
                    Operation::Describe,
                )
            });
        }
    }

    /// A token for a user about to be created on every node of a cluster.
    pub fn draw_user_token(&self) -> Result<users::DrawnToken, AuthError> {
        self.users.draw()
    }

    /// Creates user `name` with a token drawn earlier (the token itself is not known here).
    pub fn create_user_with(
        &self,
        name: &str,
        token_id: &str,
        token_hash: Vec<u8>,
    ) -> Result<AdminResponse, AuthError> {
        self.users.insert(name, token_id, token_hash)?;
        Ok(AdminResponse::UserCreated {
            name: name.to_owned(),
            token: String::new(),
        })
    }

    /// Answers the user and ACL requests, and `WhoAmI`; `None` for every other request.
    pub fn handle(
        &self,
        principal: &Principal,
        req: &AdminRequest,
    ) -> Option<Result<AdminResponse, AuthError>> {
        use AdminRequest as A;
        Some(match req {
            A::CreateUser { name } => {
                self.users
                    .create(name)
                    .map(|token| AdminResponse::UserCreated {
                        name: name.clone(),
                        token,
                    })
            }
            A::DeleteUser { name } => self.delete_user(name),
            A::ListUsers => Ok(AdminResponse::Users {
                users: self.users.list(),
            }),
            A::AddAcl { rule } => self.acls.add(rule.clone()).map(AdminResponse::AclAdded),
            A::ListAcls => Ok(AdminResponse::Acls {
                rules: self.acls.list().as_ref().clone(),
            }),
            A::RemoveAcl { id } => self
                .acls
                .remove(*id)
                .map(|()| AdminResponse::AclRemoved { id: *id }),
            A::SetQuota { principal, quota } => {
                self.quotas
                    .set(principal, *quota)
                    .map(|()| AdminResponse::Quotas {
                        quotas: self.quotas.list(),
                    })
            }
            A::ListQuotas => Ok(AdminResponse::Quotas {
                quotas: self.quotas.list(),
            }),
            A::RemoveQuota { principal } => {
                self.quotas
                    .remove(principal)
                    .map(|()| AdminResponse::Quotas {
                        quotas: self.quotas.list(),
                    })
            }
            A::WhoAmI => Ok(AdminResponse::Identity {
                principal: principal.name().to_owned(),
                auth: self.enabled(),
            }),
            _ => return None,
        })
    }

    fn delete_user(&self, name: &str) -> Result<AdminResponse, AuthError> {
        self.users.delete(name)?;
        let closed = self.open.lock().get(name).copied().unwrap_or(0);
        let _ = self.revoked.send(name.into());
        Ok(AdminResponse::UserDeleted {
            name: name.to_owned(),
            closed_connections: closed,
        })
    }

    /// Byte-rate and connection quotas.
    pub fn quotas(&self) -> &Quotas {
        &self.quotas
    }

    /// Counts an open connection of `principal` until the guard drops, and tells it when the
    /// principal's credentials are revoked; refused when the principal is at its connection quota.
    pub fn connected(self: &Arc<Self>, principal: &Principal) -> Result<Connected, AuthError> {
        let name: Arc<str> = principal.name().into();
        let mut open = self.open.lock();
        let count = open.entry(name.clone()).or_insert(0);
        if let Some(limit) = self.quotas.connections(&name) {
            if *count >= u64::from(limit) {
                return Err(AuthError::ConnectionQuota {
                    principal: name.to_string(),
                    limit,
                });
            }
        }
        *count += 1;
        drop(open);
        Ok(Connected {
            auth: self.clone(),
            revoked: self.revoked.subscribe(),
            name,
            token_user: principal.proof() == Proof::Token,
        })
    }
}

/// An open, authenticated connection.
pub struct Connected {
    auth: Arc<Auth>,
    revoked: broadcast::Receiver<Arc<str>>,
    name: Arc<str>,
    token_user: bool,
}

impl Connected {
    /// Resolves when this connection's principal is revoked (never while it is not).
    pub async fn revoked(&mut self) {
        loop {
            match self.revoked.recv().await {
                Ok(n) if n == self.name => return,
                Ok(_) => {}
                // Missed some: a token user's revocation is its deletion, so look it up.
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    if self.token_user && !self.auth.users.exists(&self.name) {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
            }
        }
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        let mut open = self.auth.open.lock();
        if let Some(n) = open.get_mut(&self.name) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.name);
            }
        }
    }
}

/// Writes a secret readable by its owner only.
fn write_secret(path: &Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    writeln!(file, "{secret}")?;
    file.sync_all()
}
