//! The broker's services, one module per concern. Each receives the stores it uses (not the whole
//! broker), takes requests in the protocol's types and answers in them, so the transport only
//! reads frames, picks the service for the frame's kind and writes the answer.
//!
//! Arrows point down: `transport` → `broker` (composition) → `services` → `error` → the stores
//! (`storage`, `meta`, `plugins`, `groups`, `routing`, `delay`). A service may use another
//! service only downwards in this list: admin → produce (idempotence state of deleted topics);
//! produce, queues → dead letters → catalog.

pub mod admin;
pub mod catalog;
pub mod dead_letter;
pub mod exchanges;
pub mod fetch;
pub mod groups;
pub mod mirrors;
pub mod plugins;
pub mod produce;
pub mod queues;
