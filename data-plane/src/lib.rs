//! Portcullis edge gateway (being written).
pub mod config;
