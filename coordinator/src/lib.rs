//! Paxlock coordinator: the node that serves locks and elections.
//!
//! Layout (see DESIGN.md): `transport` carries bytes between nodes and
//! clients over QUIC with mutual TLS; `config` reads node configuration;
//! `cli` is the `paxlock` command line.

#![forbid(unsafe_code)]

pub mod bounded;
pub mod cli;
pub mod config;
pub mod entropy;
pub mod locks;
pub mod metrics;
pub mod node;
pub mod paxos;
pub mod service;
pub mod sim;
pub mod storage;
pub mod transport;
