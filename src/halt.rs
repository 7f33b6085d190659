//! A stop with a reason: the first reason given wins and is what the summary reports.
//!
//! The run has one, and each Graph tenant's [`crate::budget::Budget`] has a child of it, so a
//! tenant that must stop (its token rejected, its breaker tripped) stops only its own rows,
//! while a stop of the run (Ctrl-C, a results file that cannot be written) stops them all.

use std::sync::Mutex;

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

#[derive(Debug, Default)]
pub struct Halt {
    token: CancellationToken,
    reason: Mutex<Option<(Option<&'static str>, String)>>,
}

impl Halt {
    /// A halt that also stops when `parent` is cancelled.
    pub fn child_of(parent: &CancellationToken) -> Self {
        Self {
            token: parent.child_token(),
            reason: Mutex::new(None),
        }
    }

    /// Stop, giving why. Only the first reason is kept (and logged).
    pub fn abort(&self, reason: String) {
        self.stop(None, reason);
    }

    /// Stop with an error code as well: rows a stopped tenant never sent are reported
    /// `failed` with it (`AuthenticationFailed`, `CircuitBreakerOpen`, `GraphUnreachable`).
    pub fn abort_as(&self, code: &'static str, reason: String) {
        self.stop(Some(code), reason);
    }

    fn stop(&self, code: Option<&'static str>, reason: String) {
        let mut r = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        if r.is_none() {
            // Reasons carry the service's messages: logged printable, never raw.
            tracing::error!("{}", crate::output::printable(&reason));
            *r = Some((code, reason));
        }
        self.token.cancel();
    }

    /// Why it stopped, if it was aborted (a plain cancellation has no reason).
    pub fn reason(&self) -> Option<String> {
        self.reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|(_, r)| r.clone())
    }

    /// The error code it was aborted with, if any.
    pub fn code(&self) -> Option<&'static str> {
        self.reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .and_then(|(c, _)| *c)
    }

    pub fn is_stopped(&self) -> bool {
        self.token.is_cancelled()
    }

    pub fn stopped(&self) -> WaitForCancellationFuture<'_> {
        self.token.cancelled()
    }

    pub fn token(&self) -> &CancellationToken {
        &self.token
    }
}

/// Writes past the file-size limit (`ulimit -f`) fail with EFBIG instead of the default
/// SIGXFSZ killing the process mid-row without a summary: the run then stops as it does for a
/// full disk (exit 2, a summary, `--resume` continues). A tokio handler replaces the default
/// action for the life of the process; call it inside the runtime.
pub fn survive_file_size_limit() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Err(e) = signal(SignalKind::from_raw(libc::SIGXFSZ)) {
            tracing::debug!("cannot catch SIGXFSZ: {e}");
        }
    }
}

/// The first Ctrl-C, SIGTERM or SIGHUP (a closed terminal, a scheduler stopping the job; on
/// Windows Ctrl-C or Ctrl-Break): the one way the binary and the emulator learn they should
/// stop.
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
            _ = hup.recv() => {}
        }
    }
    #[cfg(windows)]
    {
        // Ctrl-Break as well: what a console's owner (or a task scheduler's stop) may send.
        let Ok(mut brk) = tokio::signal::windows::ctrl_break() else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = brk.recv() => {}
        }
    }
    #[cfg(not(any(unix, windows)))]
    let _ = tokio::signal::ctrl_c().await;
}
