//! Who a connection acts as: a token user, the name in its client certificate (subject CN or the
//! first SAN, as configured), or anonymous when authentication is off.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use x509_parser::extensions::GeneralName;

/// The principal name of every connection while authentication is off.
pub const ANONYMOUS: &str = "anonymous";

/// Where a client certificate's principal name comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PrincipalFrom {
    /// The subject's common name.
    #[default]
    Cn,
    /// The first DNS name, e-mail address or URI among the subject alternative names.
    San,
}

impl std::str::FromStr for PrincipalFrom {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cn" => Ok(PrincipalFrom::Cn),
            "san" => Ok(PrincipalFrom::San),
            other => Err(format!("{other:?}: cn or san")),
        }
    }
}

/// How a connection proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    Token,
    Certificate,
    /// Authentication is off.
    None,
}

/// A connection's identity, shared by its streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    name: Arc<str>,
    proof: Proof,
}

impl Principal {
    pub fn new(name: &str, proof: Proof) -> Principal {
        Principal {
            name: name.into(),
            proof,
        }
    }

    pub fn anonymous() -> Principal {
        Principal::new(ANONYMOUS, Proof::None)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn proof(&self) -> Proof {
        self.proof
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// The principal name a verified client certificate (DER) carries, if it carries one.
pub fn from_certificate(der: &[u8], from: PrincipalFrom) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let name = match from {
        PrincipalFrom::Cn => cert
            .subject()
            .iter_common_name()
            .next()?
            .as_str()
            .ok()?
            .to_owned(),
        PrincipalFrom::San => {
            let san = cert.subject_alternative_name().ok()??;
            san.value.general_names.iter().find_map(|n| match n {
                GeneralName::DNSName(s) | GeneralName::RFC822Name(s) | GeneralName::URI(s) => {
                    Some((*s).to_owned())
                }
                _ => None,
            })?
        }
    };
    super::users::check_name(&name).ok().map(|_| name)
}
