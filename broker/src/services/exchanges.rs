//! The exchange service: create, bind, list and delete exchanges, and attach or detach their
//! router plugin. Topics an exchange names must exist when they are named. Routing a produce
//! through an exchange is the produce service's (`produce/fanout.rs`); the rules live in
//! `routing/`.

use std::sync::Arc;

use quiver_proto::messages::{AdminRequest, AdminResponse};
use quiver_proto::plugins::AttachOptions;
use quiver_proto::routing::ExchangeInfo;

use crate::error::BrokerError;
use crate::plugins::Pipelines;
use crate::routing::Exchanges;
use crate::storage::TopicStore;

#[derive(Debug)]
pub struct ExchangeService {
    exchanges: Arc<Exchanges>,
    pipelines: Arc<Pipelines>,
    topics: Arc<TopicStore>,
}

impl ExchangeService {
    pub fn new(
        exchanges: Arc<Exchanges>,
        pipelines: Arc<Pipelines>,
        topics: Arc<TopicStore>,
    ) -> ExchangeService {
        ExchangeService {
            exchanges,
            pipelines,
            topics,
        }
    }

    /// Answers one exchange request (blocking: writes the metadata store, may run `init`).
    pub fn handle(&self, req: AdminRequest) -> Result<AdminResponse, BrokerError> {
        let ex = &self.exchanges;
        match req {
            AdminRequest::CreateExchange {
                name,
                kind,
                alternate,
            } => {
                crate::storage::validate_name(&name)?;
                if let Some(t) = &alternate {
                    self.topics.get(t)?;
                }
                let def = ex.create(&name, kind, alternate)?;
                // A router left by an exchange of the same name (an attach racing its delete)
                // must not apply to the new one.
                self.pipelines.detach_router(&name)?;
                tracing::info!(exchange = %name, kind = kind.as_str(), "exchange created");
                Ok(AdminResponse::Exchange(def))
            }
            AdminRequest::BindExchange { exchange, binding } => {
                self.topics.get(&binding.topic)?;
                Ok(AdminResponse::Exchange(
                    self.with_router(ex.bind(&exchange, binding)?),
                ))
            }
            AdminRequest::ListExchanges => Ok(AdminResponse::Exchanges {
                exchanges: ex.list().into_iter().map(|d| self.with_router(d)).collect(),
            }),
            AdminRequest::DeleteExchange { name } => {
                ex.delete(&name)?;
                self.pipelines.detach_router(&name)?;
                Ok(AdminResponse::ExchangeDeleted { name })
            }
            AdminRequest::AttachExchangeRouter { exchange, options } => {
                self.attach_router(&exchange, options)
            }
            AdminRequest::DetachExchangeRouter { exchange } => self.detach_router(&exchange),
            other => Err(BrokerError::Internal(format!(
                "not an exchange request: {other:?}"
            ))),
        }
    }

    fn attach_router(
        &self,
        exchange: &str,
        options: AttachOptions,
    ) -> Result<AdminResponse, BrokerError> {
        let def = self.exchanges.get(exchange)?.def.clone();
        self.pipelines.attach_router(exchange, options)?;
        Ok(AdminResponse::Exchange(self.with_router(def)))
    }

    fn detach_router(&self, exchange: &str) -> Result<AdminResponse, BrokerError> {
        let def = self.exchanges.get(exchange)?.def.clone();
        if !self.pipelines.detach_router(exchange)? {
            return Err(BrokerError::InvalidRequest(format!(
                "exchange {exchange} has no router attached"
            )));
        }
        Ok(AdminResponse::Exchange(def))
    }

    /// An exchange's definition with its router (health included), if one is attached.
    fn with_router(&self, mut def: ExchangeInfo) -> ExchangeInfo {
        def.router = self.pipelines.router_info(&def.name);
        def
    }
}
