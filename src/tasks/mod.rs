//! Tasks that do one thing once (as opposed to checks, which are probed until ready).

pub mod chmod;
pub mod chown;
pub mod copy;
pub mod extract;
pub mod fetch;
pub mod git_clone;
pub mod install;
pub mod k8s_copy;
pub mod link;
pub mod mkdir;
pub mod register;
pub mod remove;
pub mod replace;
pub mod sleep;
pub mod staged_install;
pub mod sysctl;
pub mod template;
pub mod write;
