//! The integration tests that need root, the static binary or the whole machine: network
//! namespaces and ICMP, kill -9 at random moments, 10 000-attempt resource checks, deadline
//! and signal timing, the empty-root and `podman kube play` runs. A second test target so
//! that they never share the machine with the many light tests of `cli`: cargo runs test
//! targets one after the other, and each test here holds [`support::one_at_a_time`].

#[path = "../cli/support/mod.rs"]
mod support;

mod distroless;
mod faults;
mod kube_play;
mod ping;
mod resources;
mod signals;
mod system_resolver;
mod volume_faults;
mod volumes;
