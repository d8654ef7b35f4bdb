//! Atmosphere: a peer-to-peer capability mesh that routes OpenAI-compatible
//! requests by meaning.

pub mod answer;
pub mod backend;
pub mod balance;
pub mod budget;
pub mod capability;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod echo;
pub mod embed;
pub mod exec;
pub mod http;
pub mod identity;
pub mod index;
pub mod lean;
pub mod mcp;
pub mod member;
pub mod mesh;
pub mod metrics;
pub mod multipart;
pub mod network;
pub mod node;
pub mod routing;
pub mod wire;
