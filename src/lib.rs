//! Atmosphere: a peer-to-peer capability mesh that routes OpenAI-compatible
//! requests by meaning.

pub mod capability;
pub mod config;
pub mod embed;
pub mod identity;
pub mod index;
pub mod routing;
pub mod backend;
pub mod catalog;
pub mod metrics;
pub mod http;
pub mod cli;
pub mod node;
pub mod echo;
