//! ping without `--count`: every host is a probe for the wait engine, one echo per
//! attempt, ready on the first reply.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::socket::{IcmpSockets, choose_address, milliseconds};
use crate::resolve::Resolver;
use crate::wait::{Attempt, Probe};

/// One host for the wait engine: each attempt looks the host up and sends one echo.
pub(super) struct PingProbe {
    pub(super) host: String,
    pub(super) resolver: Resolver,
    pub(super) sockets: Arc<IcmpSockets>,
    pub(super) reply_timeout: Duration,
}

impl Probe for PingProbe {
    type Output = ();

    fn target(&self) -> &str {
        &self.host
    }

    async fn attempt(&self) -> Attempt {
        let started = Instant::now();
        let chosen = match choose_address(&self.resolver, &self.host).await {
            Ok(chosen) => chosen,
            Err(failure) => return failure.into(),
        };
        // The engine cuts the attempt at --attempt-timeout; the echo gives up a little
        // earlier, so that the reason the user reads names the address.
        let left = self.reply_timeout.saturating_sub(started.elapsed());
        let reply_timeout = left.saturating_sub((left / 10).min(Duration::from_millis(5)));
        match self.sockets.echo(chosen.ip, reply_timeout).await {
            Ok(reply) => Attempt::ready(format!(
                "reply from {}{} in {} ms",
                reply.from,
                chosen.choice_note(),
                milliseconds(reply.rtt)
            )),
            Err(failure) => failure.into(),
        }
    }
}
