//! ping with `--count N`, as `ping -c N`: N echoes per host at a steady pace, a line per
//! reply and a summary on stdout, success when every host answered at least once.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use super::socket::{IcmpSockets, PAYLOAD, Reply, choose_address, milliseconds};
use crate::duration::Elapsed;
use crate::exit::{Error, Result};
use crate::report;
use crate::resolve::Resolver;
use crate::wait::{Failure, WaitOptions};

/// What `--count` mode saw of one host.
#[derive(Debug)]
struct HostStats {
    host: String,
    ip: IpAddr,
    transmitted: u32,
    rtts: Vec<Duration>,
    last_failure: Option<String>,
    /// The deadline ended this host's echoes before all of them were done.
    timed_out: bool,
}

impl HostStats {
    /// The summary ping prints at the end, without the blank line before it.
    fn summary(&self) -> String {
        let received = self.rtts.len() as u32;
        let lost = self.transmitted.saturating_sub(received);
        let loss = (lost * 100).checked_div(self.transmitted).unwrap_or(100);
        let mut text = format!(
            "--- {} ping statistics ---\n{} packets transmitted, {received} received, {loss}% packet loss",
            self.host, self.transmitted
        );
        if let (Some(min), Some(max)) = (self.rtts.iter().min(), self.rtts.iter().max()) {
            let avg = self.rtts.iter().sum::<Duration>() / received;
            text.push_str(&format!(
                "\nrtt min/avg/max = {}/{}/{} ms",
                milliseconds(*min),
                milliseconds(avg),
                milliseconds(*max)
            ));
        }
        text
    }

    /// `db (10.0.0.5): 5 packets transmitted, 0 received (last: no reply …)`.
    fn no_reply(&self) -> String {
        let address = if self.host == self.ip.to_string() {
            String::new()
        } else {
            format!(" ({})", self.ip)
        };
        let last = match &self.last_failure {
            Some(reason) => format!(" (last error: {reason})"),
            None => String::new(),
        };
        format!(
            "{}{address}: {} packets transmitted, 0 received{last}",
            self.host, self.transmitted
        )
    }
}

/// The pace of `--count` mode, the same for every host.
#[derive(Debug, Clone, Copy)]
struct CountPlan {
    count: u32,
    interval: Duration,
    reply_timeout: Duration,
    deadline: Option<Instant>,
}

pub(super) async fn ping_counted(
    hosts: Vec<String>,
    count: u32,
    options: WaitOptions,
    reply_timeout: Duration,
    resolver: Resolver,
    sockets: Arc<IcmpSockets>,
) -> Result<()> {
    let plan = CountPlan {
        count,
        interval: options.interval,
        reply_timeout,
        deadline: options.timeout.map(|limit| Instant::now() + limit),
    };
    let mut tasks = JoinSet::new();
    for (index, host) in hosts.iter().cloned().enumerate() {
        let (resolver, sockets) = (resolver.clone(), sockets.clone());
        tasks.spawn(crate::step::keep(async move {
            (index, ping_host(host, plan, resolver, sockets).await)
        }));
    }
    let mut stats: Vec<Option<HostStats>> = hosts.iter().map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        let (index, result) = joined.map_err(|e| Error::Failed(format!("internal error: {e}")))?;
        // The first host that fails for good ends the run; dropping `tasks` stops the rest.
        stats[index] = Some(result?);
    }
    let stats: Vec<HostStats> = stats.into_iter().flatten().collect();
    for host in &stats {
        println!("\n{}", host.summary());
    }

    let silent: Vec<String> = stats
        .iter()
        .filter(|s| s.rtts.is_empty())
        .map(HostStats::no_reply)
        .collect();
    if silent.is_empty() {
        return Ok(());
    }
    // A host that answered before the deadline cut its echoes short counts as answered,
    // as with busybox `ping -c N -w T`; one that had not answered by then timed out.
    let cut_short = stats.iter().any(|s| s.rtts.is_empty() && s.timed_out);
    match options.timeout {
        Some(limit) if cut_short => Err(Error::TimedOut(format!(
            "timed out after {} with no reply from {}",
            Elapsed(limit),
            silent.join("; ")
        ))),
        _ => Err(Error::Failed(format!(
            "no reply from {}",
            silent.join("; ")
        ))),
    }
}

/// `ping -c N HOST`: N echoes, `interval` apart whatever the replies do, each waiting up to
/// the reply timeout (and never past the deadline); a line on stdout per reply.
async fn ping_host(
    host: String,
    plan: CountPlan,
    resolver: Resolver,
    sockets: Arc<IcmpSockets>,
) -> Result<HostStats> {
    let lookup = choose_address(&resolver, &host);
    let looked_up = match plan.deadline {
        Some(deadline) => tokio::time::timeout_at(deadline, lookup)
            .await
            .map_err(|_| Error::TimedOut(format!("timed out looking up {host}")))?,
        None => lookup.await,
    };
    let chosen = looked_up.map_err(|failure| failure.into_error().for_target(&host))?;
    if chosen.all.len() > 1 {
        report::Event::new(
            report::Level::Info,
            "ping.address",
            format!("pinging {host} at {}{}", chosen.ip, chosen.choice_note()),
        )
        .field("host", host.clone())
        .field("address", chosen.ip.to_string())
        .emit();
    }
    // A socket that cannot be opened ends the run before anything is printed.
    sockets
        .socket_for(chosen.ip)
        .await
        .map_err(|e| e.for_target(&host))?;
    println!("PING {host} ({}): {} data bytes", chosen.ip, PAYLOAD.len());

    let mut stats = HostStats {
        host,
        ip: chosen.ip,
        transmitted: 0,
        rtts: Vec::new(),
        last_failure: None,
        timed_out: false,
    };
    let mut echoes = JoinSet::new();
    let mut next_send = Instant::now();
    let mut out_of_time = false;
    // Far enough to never fire when there is no --timeout.
    let deadline = plan
        .deadline
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(86400 * 365 * 30));
    loop {
        let may_send = stats.transmitted < plan.count && !out_of_time;
        if !may_send && echoes.is_empty() {
            break;
        }
        tokio::select! {
            // The deadline first: when it and the next echo's turn fall in the same tick,
            // the run has timed out (not "ended after its last echo").
            biased;
            // The deadline ends the run at once, not at the next echo's turn: echoes still
            // waiting for a reply are abandoned with the set.
            _ = tokio::time::sleep_until(deadline) => {
                stats.timed_out = true;
                break;
            }
            _ = tokio::time::sleep_until(next_send), if may_send => {
                let now = Instant::now();
                let reply_timeout = match plan.deadline {
                    Some(deadline) if now >= deadline => {
                        out_of_time = true;
                        stats.timed_out = true;
                        continue;
                    }
                    Some(deadline) => plan.reply_timeout.min(deadline - now),
                    None => plan.reply_timeout,
                };
                stats.transmitted += 1;
                let sequence = stats.transmitted;
                let (sockets, ip) = (sockets.clone(), chosen.ip);
                echoes.spawn(async move {
                    let result = sockets.echo(ip, reply_timeout).await;
                    if let Ok(reply) = &result {
                        println!("{}", reply_line(reply, sequence));
                    }
                    result
                });
                next_send += plan.interval;
            }
            Some(joined) = echoes.join_next() => {
                match joined.map_err(|e| Error::Failed(format!("internal error: {e}")))? {
                    Ok(reply) => stats.rtts.push(reply.rtt),
                    Err(Failure::Retry(reason)) => stats.last_failure = Some(reason),
                    Err(Failure::Fatal(error)) => return Err(error.for_target(&stats.host)),
                }
            }
        }
    }
    Ok(stats)
}

/// `64 bytes from 127.0.0.1: icmp_seq=1 ttl=64 time=0.045 ms`, as ping prints it.
fn reply_line(reply: &Reply, sequence: u32) -> String {
    let ttl = match reply.ttl {
        Some(ttl) => format!(" ttl={ttl}"),
        None => String::new(),
    };
    format!(
        "{} bytes from {}: icmp_seq={sequence}{ttl} time={} ms",
        reply.bytes,
        reply.from,
        milliseconds(reply.rtt)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(transmitted: u32, rtts_us: &[u64]) -> HostStats {
        HostStats {
            host: "db".into(),
            ip: "10.0.0.5".parse().unwrap(),
            transmitted,
            rtts: rtts_us
                .iter()
                .map(|us| Duration::from_micros(*us))
                .collect(),
            last_failure: Some("no reply from 10.0.0.5 within 2s".into()),
            timed_out: false,
        }
    }

    #[test]
    fn summary_reads_like_ping() {
        assert_eq!(
            stats(4, &[45, 61, 50]).summary(),
            "--- db ping statistics ---\n\
             4 packets transmitted, 3 received, 25% packet loss\n\
             rtt min/avg/max = 0.045/0.052/0.061 ms"
        );
        assert_eq!(
            stats(3, &[]).summary(),
            "--- db ping statistics ---\n3 packets transmitted, 0 received, 100% packet loss"
        );
        assert_eq!(
            stats(3, &[]).no_reply(),
            "db (10.0.0.5): 3 packets transmitted, 0 received \
             (last error: no reply from 10.0.0.5 within 2s)"
        );
    }

    #[test]
    fn reply_lines_show_the_ttl_only_when_known() {
        let mut reply = Reply {
            from: "127.0.0.1".parse().unwrap(),
            bytes: 64,
            ttl: Some(64),
            rtt: Duration::from_micros(45),
        };
        assert_eq!(
            reply_line(&reply, 1),
            "64 bytes from 127.0.0.1: icmp_seq=1 ttl=64 time=0.045 ms"
        );
        reply.ttl = None;
        assert_eq!(
            reply_line(&reply, 2),
            "64 bytes from 127.0.0.1: icmp_seq=2 time=0.045 ms"
        );
    }
}
