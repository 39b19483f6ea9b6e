//! A thread of the calling process living in another network namespace,
//! running its own current-thread tokio runtime until it is stopped.
//!
//! Network namespaces are per thread: `setns(CLONE_NEWNET)` moves only the
//! calling thread, and a socket keeps the namespace it was created in. So
//! one thread per namespace can serve the simulated internet (or a test's
//! fault) while the rest of the process stays where it is, with no helper
//! process to spawn, signal or reap: if the process dies, the kernel closes
//! the thread's sockets with it.

use std::fs::File;
use std::future::Future;
use std::io;
use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sched::{setns, CloneFlags};
use tokio::sync::oneshot;

/// How long [`NetnsThread::spawn`] waits for the thread to get ready.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// An I/O error with what was being done.
#[derive(Debug, thiserror::Error)]
#[error("{context}: {error}")]
pub struct ThreadError {
    /// What was being done.
    pub context: String,
    /// The error.
    pub error: io::Error,
}

impl ThreadError {
    /// Wraps `error` with `context`.
    pub fn new(context: impl Into<String>, error: io::Error) -> Self {
        Self {
            context: context.into(),
            error,
        }
    }
}

/// A running namespace thread; stopped and joined by [`NetnsThread::stop`]
/// or on drop.
#[derive(Debug)]
pub struct NetnsThread {
    name: String,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl NetnsThread {
    /// Starts thread `name`, moves it into the network namespace at `netns`
    /// (e.g. `/run/netns/NAME`), builds a current-thread runtime there and
    /// runs `setup` on it. `setup` binds whatever it needs (its sockets are
    /// created inside the namespace) and returns the future that serves them;
    /// that future runs until it ends or the thread is stopped, and dropping
    /// it, then the runtime, closes everything.
    ///
    /// Returns once `setup` has finished: its error, or any error entering
    /// the namespace, is returned here.
    pub fn spawn<S, F, R>(netns: &Path, name: &str, setup: S) -> Result<NetnsThread, ThreadError>
    where
        S: FnOnce() -> F + Send + 'static,
        F: Future<Output = Result<R, ThreadError>>,
        R: Future<Output = ()>,
    {
        let ns = File::open(netns).map_err(|e| {
            ThreadError::new(
                format!("cannot open network namespace {}", netns.display()),
                e,
            )
        })?;
        let netns_shown = netns.display().to_string();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), ThreadError>>();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let handle = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                if let Err(e) = setns(&ns, CloneFlags::CLONE_NEWNET) {
                    let _ = ready_tx.send(Err(ThreadError::new(
                        format!("cannot enter network namespace {netns_shown}"),
                        e.into(),
                    )));
                    return;
                }
                drop(ns);
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = ready_tx.send(Err(ThreadError::new("cannot build a runtime", e)));
                        return;
                    }
                };
                runtime.block_on(async move {
                    match setup().await {
                        Ok(serve) => {
                            let _ = ready_tx.send(Ok(()));
                            // A dropped sender (the owner gone) stops as well.
                            tokio::select! {
                                () = serve => {}
                                _ = stop_rx => {}
                            }
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                });
                // Dropping the runtime cancels every task still spawned on it.
            })
            .map_err(|e| ThreadError::new(format!("cannot start thread {name}"), e))?;
        let mut thread = NetnsThread {
            name: name.to_owned(),
            stop: Some(stop_tx),
            handle: Some(handle),
        };
        match ready_rx.recv_timeout(READY_TIMEOUT) {
            Ok(Ok(())) => Ok(thread),
            Ok(Err(e)) => {
                let _ = thread.stop_inner();
                Err(e)
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // Detached: it stops as soon as its setup returns, seeing the
                // stop sender gone.
                thread.stop.take();
                thread.handle.take();
                Err(ThreadError::new(
                    format!("thread {name}"),
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("not ready after {}s", READY_TIMEOUT.as_secs()),
                    ),
                ))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let _ = thread.stop_inner();
                Err(ThreadError::new(
                    format!("thread {name}"),
                    io::Error::other("it panicked while getting ready"),
                ))
            }
        }
    }

    /// Stops the thread (its serving future is dropped, then its runtime)
    /// and joins it.
    pub fn stop(mut self) -> Result<(), ThreadError> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Result<(), ThreadError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.handle.take() {
            Some(handle) => handle.join().map_err(|_| {
                ThreadError::new(
                    format!("thread {}", self.name),
                    io::Error::other("it panicked"),
                )
            }),
            None => Ok(()),
        }
    }
}

impl Drop for NetnsThread {
    fn drop(&mut self) {
        let _ = self.stop_inner();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_namespace_is_an_error_naming_it() {
        let err = NetnsThread::spawn(Path::new("/run/netns/ec-no-such-ns"), "t", || async {
            Ok(std::future::pending::<()>())
        })
        .unwrap_err();
        assert!(
            err.to_string().contains("/run/netns/ec-no-such-ns"),
            "{err}"
        );
        assert_eq!(err.error.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn setup_errors_are_returned_and_stop_ends_the_serving_future() {
        // Our own namespace: entering it needs no privilege beyond what
        // setns checks (CAP_SYS_ADMIN); without it, the error says so.
        let own = Path::new("/proc/self/ns/net");
        let err = NetnsThread::spawn(own, "t", || async {
            Err::<std::future::Pending<()>, _>(ThreadError::new(
                "binding",
                io::Error::from(io::ErrorKind::AddrInUse),
            ))
        })
        .unwrap_err();
        // Either setup's own error, or (unprivileged) setns's.
        assert!(
            err.context == "binding" || err.context.starts_with("cannot enter"),
            "{err}"
        );

        let (tx, rx) = std::sync::mpsc::channel::<()>();
        match NetnsThread::spawn(own, "t", move || async move {
            Ok(async move {
                // Dropped (not finished) on stop: the sender goes with it.
                let _keep = tx;
                std::future::pending::<()>().await;
            })
        }) {
            Ok(thread) => {
                thread.stop().unwrap();
                assert!(rx.recv().is_err(), "the serving future was dropped");
            }
            Err(e) => assert!(e.context.starts_with("cannot enter"), "{e}"),
        }
    }
}
