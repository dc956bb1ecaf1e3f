//! SIGTERM and SIGINT end whatever runs, promptly, also when initbox is PID 1 — where the
//! kernel delivers no signal that has no handler, so kubelet's SIGTERM would otherwise be
//! ignored until SIGKILL. As PID 1 initbox also reaps orphaned children, as init must.

use std::sync::atomic::{AtomicU8, Ordering};

use tokio::signal::unix::{SignalKind, signal};

use crate::exit::Signal;

/// Handlers for SIGINT and SIGTERM, installed when this is created: create it before any
/// work starts so that no signal is lost.
pub struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn install() -> std::io::Result<Self> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// The first of SIGINT or SIGTERM to arrive (also remembered for [`received`]).
    pub async fn recv(&mut self) -> Signal {
        let signal = tokio::select! {
            _ = self.interrupt.recv() => Signal::Interrupt,
            _ = self.terminate.recv() => Signal::Terminate,
        };
        let code = match signal {
            Signal::Interrupt => 1,
            Signal::Terminate => 2,
        };
        RECEIVED.store(code, Ordering::SeqCst);
        signal
    }
}

static RECEIVED: AtomicU8 = AtomicU8::new(0);

/// The signal that is ending initbox, if any: work dropped by it can say why.
pub fn received() -> Option<Signal> {
    match RECEIVED.load(Ordering::SeqCst) {
        1 => Some(Signal::Interrupt),
        2 => Some(Signal::Terminate),
        _ => None,
    }
}

/// As PID 1, collect the exit status of every child that ends, so none stays a zombie.
///
/// initbox itself starts no children today; orphans re-parented to PID 1 (a process the
/// previous PID 1 left behind before it exec'd initbox) would otherwise pile up.
pub fn reap_orphans_when_init() -> std::io::Result<()> {
    if std::process::id() != 1 {
        return Ok(());
    }
    let mut child_exited = signal(SignalKind::child())?;
    tokio::spawn(async move {
        loop {
            reap_all();
            if child_exited.recv().await.is_none() {
                return;
            }
        }
    });
    Ok(())
}

#[allow(unsafe_code)]
fn reap_all() {
    loop {
        let mut status = 0;
        // SAFETY: waitpid with WNOHANG only reads our own children's state.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return;
        }
    }
}
