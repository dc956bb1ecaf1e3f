//! The one HTTP client setup, used by wait-for-http, register, fetch and git over HTTP(S):
//! rustls with the Mozilla roots compiled in (so TLS works in a scratch image with no CA
//! bundle), the system store where one exists (SSL_CERT_FILE and SSL_CERT_DIR included),
//! `--cacert` files on top, `--insecure` only when asked for, name resolution through the
//! shared hickory resolver, proxies from the environment, and a User-Agent naming initbox.
//!
//! Split at its seams: `tls` (roots, verifiers, TLS errors in words), `failure` (what a
//! failed request or an unexpected answer means for a wait), `args` (the shared request
//! flags and their parsers) and `client` (the builder, requests and bodies). Everything is
//! re-exported here, so callers name `http_client::X` whatever file X lives in.

mod args;
mod client;
mod failure;
mod tls;

pub use args::*;
pub use client::*;
pub use failure::*;
pub use tls::*;
