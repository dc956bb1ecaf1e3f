//! Tasks that do one thing once (as opposed to checks, which are probed until ready).

pub mod chmod;
pub mod chown;
pub mod fetch;
pub mod git_clone;
pub mod mkdir;
pub mod register;
pub mod remove;
pub mod sleep;
pub mod template;
