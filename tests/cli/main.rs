//! The integration tests: the real binary against real listeners, DNS and HTTP(S) servers.
//!
//! One test binary (fast to link); each module covers one command or contract, and
//! `support` holds the servers and the process helpers they share.

mod support;

mod bad_input;
mod conventions;
mod distroless;
mod dns;
mod docs;
mod exec;
mod exit_codes;
mod faults;
mod fetch;
mod git_clone;
mod http;
mod kube_play;
mod ping;
mod register;
mod resources;
mod run;
mod secrets;
mod signals;
mod sleep;
mod system_resolver;
mod tcp;
mod template;
