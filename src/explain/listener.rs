//! The listener: a `NETLINK_NETFILTER` socket subscribed to `NFNLGRP_NFTRACE`, read by a
//! thread of its own for the length of the run, that keeps every trace event (parsed by
//! [`super::trace`]) in arrival order.
//!
//! The socket is nix's (already a dependency, MIT, maintained); the parser is ours, because
//! no permissively licensed crate parses `NFTA_TRACE_*` (see the module doc of
//! [`crate::explain`]). The socket is created on the calling thread, so it belongs to the
//! network namespace that thread is in (the one probed), whatever the reader thread does.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use nix::errno::Errno;
use nix::sys::socket::{
    bind, recv, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag,
    SockProtocol, SockType,
};
use nix::sys::time::TimeVal;

use super::trace::{parse_datagram, TraceEvent, NFNLGRP_NFTRACE};

/// Receive buffer asked for: trace events come in bursts (a few per packet, every packet of
/// the run at once), and a full buffer loses events (ENOBUFS).
const RCVBUF_BYTES: usize = 64 * 1024 * 1024;
/// How often the reader looks at its stop flag while no event arrives.
const POLL_MS: i64 = 20;

/// Why the listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    /// A socket call failed (no nf_tables, no CAP_NET_ADMIN, ...).
    #[error("cannot listen to nftables trace events ({call}): {errno}")]
    Socket {
        /// The call.
        call: &'static str,
        /// Its error.
        errno: Errno,
    },
    /// The reader thread could not be started.
    #[error("cannot start the trace listener thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// What the listener heard.
#[derive(Debug, Default, Clone)]
pub struct Capture {
    /// Every trace event, in arrival order.
    pub events: Vec<TraceEvent>,
    /// How many times the kernel said events were lost (ENOBUFS: the buffer was full).
    pub overruns: u64,
    /// Messages that could not be parsed.
    pub malformed: u64,
    /// A receive error other than ENOBUFS that ended listening, if any.
    pub failed: Option<Errno>,
}

/// A running listener; [`Listener::stop`] returns what it heard.
pub struct Listener {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Capture>>,
}

impl Listener {
    /// Opens the socket (in the current thread's network namespace) and starts reading.
    /// Events of packets sent after this returns are heard.
    pub fn start() -> Result<Listener, ListenerError> {
        let fail = |call| move |errno| ListenerError::Socket { call, errno };
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkNetFilter,
        )
        .map_err(fail("socket"))?;
        // Root may exceed rmem_max (SO_RCVBUFFORCE); otherwise take what is allowed.
        if setsockopt(&fd, sockopt::RcvBufForce, &RCVBUF_BYTES).is_err() {
            setsockopt(&fd, sockopt::RcvBuf, &RCVBUF_BYTES).map_err(fail("SO_RCVBUF"))?;
        }
        setsockopt(
            &fd,
            sockopt::ReceiveTimeout,
            &TimeVal::new(0, POLL_MS * 1000),
        )
        .map_err(fail("SO_RCVTIMEO"))?;
        // Groups below 32 can be joined through the bind mask (bit n-1 is group n).
        bind(
            fd.as_raw_fd(),
            &NetlinkAddr::new(0, 1 << (NFNLGRP_NFTRACE - 1)),
        )
        .map_err(fail("bind NFNLGRP_NFTRACE"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("nftrace".into())
            .spawn(move || read_until_stopped(fd, &flag))
            .map_err(ListenerError::Thread)?;
        Ok(Listener {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops reading once what the kernel has queued is read; returns every event heard.
    pub fn stop(mut self) -> Capture {
        self.stop.store(true, Ordering::SeqCst);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(capture)) => capture,
            // The reader panicked: nothing it heard can be trusted to be complete.
            _ => Capture {
                failed: Some(Errno::EIO),
                ..Capture::default()
            },
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn read_until_stopped(fd: OwnedFd, stop: &AtomicBool) -> Capture {
    let mut capture = Capture::default();
    let mut buf = vec![0u8; 256 * 1024];
    let mut draining = false;
    loop {
        // Once stopped, read what is already queued without waiting, then end: every event
        // of a packet is queued by the kernel before the packet goes on, so events of the
        // run's packets are all queued by the time its connects have finished.
        let flags = if draining {
            MsgFlags::MSG_DONTWAIT
        } else {
            MsgFlags::empty()
        };
        match recv(fd.as_raw_fd(), &mut buf, flags) {
            Ok(0) => {}
            Ok(n) => {
                let (events, errors) = parse_datagram(&buf[..n]);
                capture.events.extend(events);
                capture.malformed += errors.len() as u64;
            }
            Err(Errno::ENOBUFS) => capture.overruns += 1,
            Err(Errno::EAGAIN | Errno::EINTR) => {
                if draining {
                    return capture;
                }
                if stop.load(Ordering::SeqCst) {
                    draining = true;
                }
            }
            Err(errno) => {
                capture.failed = Some(errno);
                return capture;
            }
        }
        if !draining && stop.load(Ordering::SeqCst) {
            draining = true;
        }
    }
}
