//! What the process was started with for signals that front ends watch.
//!
//! `nohup` (and service managers asked to) start a program with SIGHUP
//! ignored, so that it keeps running when its terminal closes. A handler
//! installed for SIGHUP replaces that disposition (POSIX `sigaction`), so a
//! front end that stops on SIGHUP must first ask [`hangup_ignored`], and
//! leave SIGHUP ignored when it was.

/// Whether SIGHUP is ignored now (`SIG_IGN`): true under `nohup`. Read it
/// before any SIGHUP handler is installed. Always false off Unix.
pub fn hangup_ignored() -> bool {
    #[cfg(unix)]
    {
        // SAFETY: with a null new action, sigaction only reads the current
        // disposition into `old`, a zeroed plain C struct it fills.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            libc::sigaction(libc::SIGHUP, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_IGN
        }
    }
    #[cfg(not(unix))]
    {
        false
    }
}

/// Run `install`, which installs signal handlers (SIGHUP's among them, as
/// `ctrlc` and the app's tokio handlers do), and leave SIGHUP ignored
/// afterwards when it was before (`nohup`). Returns what `install` returns.
pub fn installing_handlers<R>(install: impl FnOnce() -> R) -> R {
    let nohup = hangup_ignored();
    let installed = install();
    if nohup {
        ignore_hangup();
    }
    installed
}

/// Ignore SIGHUP again (a library that installs handlers for SIGINT,
/// SIGTERM and SIGHUP together replaced the `nohup` disposition). Does
/// nothing off Unix.
pub fn ignore_hangup() {
    #[cfg(unix)]
    // SAFETY: SIG_IGN is a valid disposition for SIGHUP; no handler runs.
    unsafe {
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(unix)]
    fn an_ignored_hangup_is_seen_and_kept() {
        // SAFETY: test-only; reads and sets SIGHUP's disposition.
        let before = unsafe { libc::signal(libc::SIGHUP, libc::SIG_IGN) };
        assert!(super::hangup_ignored());
        unsafe { libc::signal(libc::SIGHUP, libc::SIG_DFL) };
        assert!(!super::hangup_ignored());
        super::ignore_hangup();
        assert!(super::hangup_ignored());
        unsafe { libc::signal(libc::SIGHUP, before) };
    }
}
