//! What the process was started with for signals that front ends watch.
//!
//! `nohup` (and service managers asked to) start a program with SIGHUP
//! ignored, so that it keeps running when its terminal closes; a shell
//! script's `cmd &` (job control off) starts it with SIGINT ignored, so
//! that a Ctrl-C meant for the script's foreground leaves it running. A
//! handler installed for such a signal replaces that disposition (POSIX
//! `sigaction`), so a front end must ask [`ignored`] first, or install its
//! handlers through [`installing_handlers`], which puts `SIG_IGN` back.

/// The signals front ends stop on: SIGHUP, SIGINT, SIGTERM (libc numbers).
#[cfg(unix)]
pub const WATCHED: [i32; 3] = [libc::SIGHUP, libc::SIGINT, libc::SIGTERM];

/// Whether `signal` (a libc signal number) is ignored now (`SIG_IGN`):
/// true for SIGHUP under `nohup`. Read it before a handler is installed.
/// False for a number sigaction refuses.
#[cfg(unix)]
pub fn ignored(signal: i32) -> bool {
    // SAFETY: with a null new action, sigaction only reads the current
    // disposition into `old`, a zeroed plain C struct it fills.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signal, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_IGN
    }
}

/// Run `install`, which installs signal handlers (for SIGHUP, SIGINT and
/// SIGTERM together, as `ctrlc` and the app's tokio handlers do), and
/// leave each of [`WATCHED`] that was ignored before ignored afterwards
/// (`nohup`, a script's `&`). Returns what `install` returns.
pub fn installing_handlers<R>(install: impl FnOnce() -> R) -> R {
    #[cfg(unix)]
    {
        let was_ignored: Vec<i32> = WATCHED.into_iter().filter(|&s| ignored(s)).collect();
        let installed = install();
        for signal in was_ignored {
            // SAFETY: SIG_IGN is a valid disposition for these signals; no
            // handler runs.
            unsafe {
                libc::signal(signal, libc::SIG_IGN);
            }
        }
        installed
    }
    #[cfg(not(unix))]
    {
        install()
    }
}

#[cfg(test)]
mod tests {
    /// An ignored SIGHUP or SIGINT stays ignored through a library that
    /// installs handlers for all three; SIGTERM, not ignored, gets the handler.
    #[test]
    #[cfg(unix)]
    fn ignored_signals_are_seen_and_kept() {
        // SAFETY: test-only; reads and sets dispositions (the test harness
        // installs no handler for these).
        let before: Vec<_> = super::WATCHED.iter().map(|&s| unsafe { libc::signal(s, libc::SIG_DFL) }).collect();
        unsafe {
            libc::signal(libc::SIGHUP, libc::SIG_IGN);
            libc::signal(libc::SIGINT, libc::SIG_IGN);
        }
        assert!(super::ignored(libc::SIGHUP) && super::ignored(libc::SIGINT) && !super::ignored(libc::SIGTERM));
        extern "C" fn handler(_: i32) {}
        let handler = handler as extern "C" fn(i32) as libc::sighandler_t;
        super::installing_handlers(|| {
            for s in super::WATCHED {
                unsafe { libc::signal(s, handler) };
            }
        });
        assert!(super::ignored(libc::SIGHUP) && super::ignored(libc::SIGINT), "an ignored signal was turned back on");
        let term = unsafe { libc::signal(libc::SIGTERM, libc::SIG_DFL) };
        assert_eq!(term, handler, "SIGTERM's handler stays");
        for (&s, &was) in super::WATCHED.iter().zip(&before) {
            unsafe { libc::signal(s, was) };
        }
    }
}
