//! The broker's network edge: the QUIC server, its request handlers, and TLS.

mod admin;
mod groups;
pub mod server;
pub mod tls;

pub use server::{Server, ServerError};
