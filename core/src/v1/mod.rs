//! Version 1 of Vigil's formats.

pub mod config;
