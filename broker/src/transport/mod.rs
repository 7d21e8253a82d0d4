//! The broker's network edge, a thin driver: accept QUIC connections, read a stream's frames,
//! hand each request to the service for its kind, write the answer. No business rules live here.
//! TLS set-up (configured or generated dev certificates) is in `tls.rs`.

pub mod allowance;
mod fetch;
mod produce;
mod requests;
pub mod server;
mod stream;
pub mod tls;

pub use server::{Server, ServerError};
