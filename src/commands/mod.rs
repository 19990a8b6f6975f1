//! The binary's subcommands, one file per group (the library knows nothing of them): each takes
//! the arguments clap parsed in `main.rs`, calls the library, and prints a short human summary.

pub(crate) mod inspect;
pub(crate) mod reproduce;
pub(crate) mod train;
