//! The integration tests: the real binary against real listeners, DNS and HTTP(S) servers.
//!
//! One test binary (fast to link); each module covers one command or contract, and
//! `support` holds the servers and the process helpers they share. The tests that need root,
//! the static binary or the whole machine are in the `serial` target (tests/serial).

mod support;

mod amqp;
mod bad_input;
mod command_wait;
mod conventions;
mod dns;
mod docs;
mod exec;
mod exit_codes;
mod extract;
mod fetch;
mod file_wait;
mod git_clone;
mod git_sparse;
mod git_ssh;
mod git_submodules;
mod grpc;
mod http;
mod k8s;
mod k8s_copy;
mod kafka;
mod mysql;
mod nats;
mod postgres;
mod redis;
mod register;
mod replace;
mod run;
mod secrets;
mod sleep;
mod tcp;
mod template;
mod template_compose;
mod template_envsubst;
mod template_filters;
mod volume_content;
mod volume_tree;
mod zookeeper;
