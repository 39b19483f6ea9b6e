//! Thousands of connection attempts in flight from one thread: nonblocking `connect(2)` and
//! one `epoll` instance, the worker's probing loop ([`crate::worker`]).
//!
//! Why not the async runtime: profiled on a 131,070-probe sweep (`perf record`, `strace -c`),
//! the workers spent their time in system calls, nine per probe with tokio's `TcpSocket`
//! (`socket`, `fcntl` for the second descriptor that read the local port, `getsockname`,
//! `connect`, `epoll_ctl` twice, `getsockopt`, `close` twice), plus the runtime's timer
//! wheel and per-socket registration. Here a probe costs `socket` (nonblocking and
//! close-on-exec in one call), `connect`, one `epoll_ctl`, `getsockopt(SO_ERROR)` when it
//! finishes and `close` (which also removes it from the epoll set); `getsockname` only when
//! the local address is asked for (`--explain`), and `setsockopt(SO_LINGER)` for a
//! connection that completed.
//!
//! A completed connection is closed with a reset (`SO_LINGER` 0), not a FIN: the handshake
//! is all a probe needs, and an orderly close leaves a TIME_WAIT socket per probe (a sweep
//! of every port would fill the host's TIME_WAIT table, `TCPTimeWaitOverflow`) and keeps its
//! conntrack entry for two minutes instead of ten seconds.
//!
//! Outcomes are those of [`crate::probe`]: the same classification of `errno`, the same
//! timeout detail, the elapsed time from just before `connect` to the outcome.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::libc;

use crate::probe::{self, Attempt, Observed};

/// Events taken from the kernel per `epoll_wait`.
const EVENTS: usize = 4096;
/// New connects issued before the answers so far are taken.
const ISSUE_BATCH: usize = 256;

/// One attempt to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Chosen by the caller; handed back with the outcome.
    pub id: usize,
    /// Where to connect.
    pub addr: SocketAddr,
    /// How long to wait for an answer.
    pub timeout: Duration,
}

/// A connect in flight.
struct Pending {
    id: usize,
    fd: OwnedFd,
    started: Instant,
    timeout: Duration,
    local: Option<SocketAddr>,
    /// Distinguishes this use of the slot from earlier ones: an event or a deadline of a
    /// finished attempt must never be taken for the next one in the same slot.
    generation: u32,
}

/// Many attempts in flight at once, at most `limit`.
pub struct Connector {
    epoll: OwnedFd,
    limit: usize,
    local_addresses: bool,
    slots: Vec<Option<Pending>>,
    free: Vec<u32>,
    generations: Vec<u32>,
    deadlines: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    in_flight: usize,
}

impl Connector {
    /// An empty connector with its epoll instance (made now: in the worker, before the
    /// seccomp fence, which does not allow creating one). `limit` is at least 1.
    pub fn new(limit: usize, local_addresses: bool) -> io::Result<Connector> {
        // SAFETY: epoll_create1 takes no pointers; a non-negative result is a new descriptor
        // that nothing else owns.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: as above, `fd` is ours alone.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Connector {
            epoll,
            limit: limit.max(1),
            local_addresses,
            slots: Vec::new(),
            free: Vec::new(),
            generations: Vec::new(),
            deadlines: BinaryHeap::new(),
            in_flight: 0,
        })
    }

    /// Makes every attempt of `requests`, keeping at most the limit in flight, and hands
    /// each outcome to `done` with its id, exactly once; `flush` is called whenever no
    /// outcome is ready right now (before the loop sleeps), so that outcomes that arrive
    /// together are passed on together. Errors of `done`/`flush` stop the loop.
    pub fn run<E>(
        &mut self,
        requests: impl IntoIterator<Item = Request>,
        mut done: impl FnMut(usize, Attempt) -> Result<(), E>,
        mut flush: impl FnMut() -> Result<(), E>,
    ) -> Result<(), E> {
        let mut requests = requests.into_iter().peekable();
        let mut events: Vec<libc::epoll_event> =
            vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS];
        loop {
            // A bounded batch of new connects, then the answers so far: issuing a whole
            // worker's share at once would let the first answers wait behind thousands of
            // connects (on a busy machine, past their deadline), and their time would be
            // measured late.
            let mut issued = 0;
            while self.in_flight < self.limit && issued < ISSUE_BATCH {
                let Some(request) = requests.next() else {
                    break;
                };
                issued += 1;
                if let Some(attempt) = self.start(request) {
                    done(request.id, attempt)?;
                }
            }
            let more_to_issue = self.in_flight < self.limit && requests.peek().is_some();
            if self.in_flight == 0 && requests.peek().is_none() {
                return flush();
            }
            let wait_ms = if more_to_issue {
                0
            } else {
                flush()?;
                self.deadlines.peek().map_or(-1, |Reverse((at, _, _))| {
                    let left = at.saturating_duration_since(Instant::now());
                    // Rounded up: waking before the deadline would only sleep again.
                    i32::try_from(left.as_micros().div_ceil(1000)).unwrap_or(i32::MAX)
                })
            };
            let capacity = i32::try_from(events.len()).unwrap_or(i32::MAX);
            // SAFETY: `events` has room for `capacity` entries, which the kernel fills.
            let ready = unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    events.as_mut_ptr(),
                    capacity,
                    wait_ms,
                )
            };
            if ready < 0 {
                let error = io::Error::last_os_error();
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // epoll_wait on a valid instance fails only on EINTR; anything else would
                // mean the instance is gone: finish every pending attempt as an error
                // rather than loop.
                for (id, attempt) in self.abandon(&error) {
                    done(id, attempt)?;
                }
                continue;
            }
            let ready = usize::try_from(ready).unwrap_or(0);
            for event in &events[..ready] {
                // Copied out: the struct is packed on x86_64.
                let data = event.u64;
                let (slot, generation) = ((data >> 32) as u32, data as u32);
                if let Some((id, attempt)) = self.finish(slot, generation) {
                    done(id, attempt)?;
                }
            }
            if ready == events.len() {
                // More answers may be waiting: take them all before any deadline is
                // declared passed, or an answer that arrived in time would be a timeout.
                continue;
            }
            let now = Instant::now();
            while let Some(&Reverse((at, slot, generation))) = self.deadlines.peek() {
                if at > now {
                    break;
                }
                self.deadlines.pop();
                if let Some(pending) = self.take(slot, generation) {
                    done(pending.id, timed_out(&pending))?;
                }
            }
        }
    }

    /// Issues the connect of `request`; returns its outcome when it is known at once.
    fn start(&mut self, request: Request) -> Option<Attempt> {
        let started = Instant::now();
        let family = match request.addr {
            SocketAddr::V4(_) => libc::AF_INET,
            SocketAddr::V6(_) => libc::AF_INET6,
        };
        // SAFETY: socket(2) takes no pointers.
        let raw = unsafe {
            libc::socket(
                family,
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if raw < 0 {
            return Some(failed(&io::Error::last_os_error(), started));
        }
        // SAFETY: a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let sockaddr = socket2::SockAddr::from(request.addr);
        // SAFETY: `sockaddr` points to a valid address of the length given.
        let rc = unsafe { libc::connect(raw, sockaddr.as_ptr().cast(), sockaddr.len()) };
        let local = if self.local_addresses {
            local_address(raw)
        } else {
            None
        };
        if rc == 0 {
            // Completed at once (loopback can): the handshake is done.
            close_with_reset(&fd);
            return Some(Attempt {
                observed: Observed::Connected,
                elapsed: started.elapsed(),
                detail: None,
                local,
            });
        }
        let error = io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EINPROGRESS) {
            let mut attempt = failed(&error, started);
            attempt.local = local;
            return Some(attempt);
        }
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.slots.push(None);
                self.generations.push(0);
                u32::try_from(self.slots.len() - 1).unwrap_or(u32::MAX)
            }
        };
        let index = slot as usize;
        self.generations[index] = self.generations[index].wrapping_add(1);
        let generation = self.generations[index];
        let mut event = libc::epoll_event {
            events: (libc::EPOLLOUT | libc::EPOLLERR | libc::EPOLLHUP) as u32,
            u64: (u64::from(slot) << 32) | u64::from(generation),
        };
        // SAFETY: `event` is a valid epoll_event; both descriptors are open.
        let rc = unsafe {
            libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, raw, &mut event)
        };
        if rc < 0 {
            // Cannot be watched (ENOMEM, ENOSPC: max_user_watches): nothing was proven.
            self.free.push(slot);
            let mut attempt = failed(&io::Error::last_os_error(), started);
            attempt.local = local;
            return Some(attempt);
        }
        self.slots[index] = Some(Pending {
            id: request.id,
            fd,
            started,
            timeout: request.timeout,
            local,
            generation,
        });
        self.deadlines
            .push(Reverse((started + request.timeout, slot, generation)));
        self.in_flight += 1;
        None
    }

    /// Removes the pending attempt in `slot` if it is still the one of `generation`.
    fn take(&mut self, slot: u32, generation: u32) -> Option<Pending> {
        let entry = self.slots.get_mut(slot as usize)?;
        if entry.as_ref()?.generation != generation {
            return None;
        }
        let pending = entry.take()?;
        self.free.push(slot);
        self.in_flight -= 1;
        Some(pending)
    }

    /// The socket of `slot` became writable or failed: the outcome of its connect.
    fn finish(&mut self, slot: u32, generation: u32) -> Option<(usize, Attempt)> {
        let pending = self.take(slot, generation)?;
        let elapsed = pending.started.elapsed();
        let attempt = match socket_error(&pending.fd) {
            Ok(0) => {
                close_with_reset(&pending.fd);
                Attempt {
                    observed: Observed::Connected,
                    elapsed,
                    detail: None,
                    local: pending.local,
                }
            }
            Ok(code) => Attempt {
                local: pending.local,
                ..failed(&io::Error::from_raw_os_error(code), pending.started)
            },
            Err(error) => Attempt {
                local: pending.local,
                ..failed(&error, pending.started)
            },
        };
        // A deadline left in the heap for this slot is skipped by its generation.
        Some((pending.id, attempt))
    }

    /// Every pending attempt, finished as an error with `why`.
    fn abandon(&mut self, why: &io::Error) -> Vec<(usize, Attempt)> {
        self.deadlines.clear();
        let mut out = Vec::new();
        for slot in 0..self.slots.len() {
            if let Some(pending) = self.slots[slot].take() {
                self.free.push(u32::try_from(slot).unwrap_or(u32::MAX));
                self.in_flight -= 1;
                out.push((
                    pending.id,
                    Attempt {
                        local: pending.local,
                        ..failed(why, pending.started)
                    },
                ));
            }
        }
        out
    }
}

/// The outcome of a connect that failed with `error`.
fn failed(error: &io::Error, started: Instant) -> Attempt {
    let mut detail = probe::describe(error);
    if error.raw_os_error() == Some(libc::ECONNRESET) {
        detail.push_str(" (the handshake completed, then the peer reset it)");
    }
    Attempt {
        observed: probe::classify(error),
        elapsed: started.elapsed(),
        detail: Some(detail),
        local: None,
    }
}

/// The outcome of a connect that got no answer in time.
fn timed_out(pending: &Pending) -> Attempt {
    Attempt {
        observed: Observed::Timeout,
        elapsed: pending.started.elapsed(),
        detail: Some(probe::timeout_detail(pending.timeout)),
        local: pending.local,
    }
}

/// `SO_ERROR` of a socket whose connect finished: 0 when it connected.
fn socket_error(fd: &OwnedFd) -> io::Result<i32> {
    let mut code: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `code` and `len` are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut code as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(code)
}

/// Makes the coming `close` send a reset instead of a FIN (see the module documentation).
/// Best effort: if it fails, the close is an orderly one.
fn close_with_reset(fd: &OwnedFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `linger` is valid for reads of its size.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
}

/// The bound local address of a socket; `None` before a port is bound.
fn local_address(fd: RawFd) -> Option<SocketAddr> {
    use nix::sys::socket::{getsockname, SockaddrStorage};
    let addr: SockaddrStorage = getsockname(fd).ok()?;
    let (ip, port) = match (addr.as_sockaddr_in(), addr.as_sockaddr_in6()) {
        (Some(v4), _) => (std::net::IpAddr::V4(v4.ip()), v4.port()),
        (None, Some(v6)) => (std::net::IpAddr::V6(v6.ip()), v6.port()),
        _ => return None,
    };
    (port != 0).then(|| SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn run(requests: Vec<Request>, limit: usize, local: bool) -> HashMap<usize, Attempt> {
        let mut out = HashMap::new();
        Connector::new(limit, local)
            .unwrap()
            .run(
                requests,
                |id, attempt| {
                    assert!(out.insert(id, attempt).is_none(), "id {id} twice");
                    Ok::<(), ()>(())
                },
                || Ok(()),
            )
            .unwrap();
        out
    }

    #[test]
    fn loopback_outcomes_each_once_within_the_limit() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let open = listener.local_addr().unwrap();
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let second = Duration::from_secs(2);
        let requests: Vec<Request> = (0..40)
            .map(|id| Request {
                id,
                addr: if id % 2 == 0 { open } else { closed },
                timeout: second,
            })
            .collect();
        // Limit 3: waves; every id exactly once.
        let out = run(requests, 3, true);
        assert_eq!(out.len(), 40);
        for (id, attempt) in &out {
            let want = if id % 2 == 0 {
                Observed::Connected
            } else {
                Observed::Refused
            };
            assert_eq!(attempt.observed, want, "{id}: {attempt:?}");
        }
        let local = out[&0].local.expect("local address asked for");
        assert!(local.ip().is_loopback() && local.port() != 0, "{local}");
        assert!(out[&1].detail.as_deref().unwrap().contains("ECONNREFUSED"));
        // Not asked for: not read.
        let out = run(
            vec![Request {
                id: 7,
                addr: open,
                timeout: second,
            }],
            1,
            false,
        );
        assert_eq!(out[&7].local, None);
        drop(listener);
    }

    #[test]
    fn an_unanswered_connect_times_out_with_the_detail() {
        // A listener with a full accept queue (backlog 0, never accepting) drops further
        // SYNs: those connects get no answer.
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket
            .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        socket.listen(0).unwrap();
        let addr = socket.local_addr().unwrap().as_socket().unwrap();
        let requests: Vec<Request> = (0..6)
            .map(|id| Request {
                id,
                addr,
                timeout: Duration::from_millis(300),
            })
            .collect();
        let out = run(requests, 16, false);
        assert_eq!(out.len(), 6);
        let timeouts: Vec<&Attempt> = out
            .values()
            .filter(|a| a.observed == Observed::Timeout)
            .collect();
        assert!(!timeouts.is_empty(), "{out:?}");
        for t in timeouts {
            assert_eq!(t.detail.as_deref(), Some("no answer within 300ms"));
            assert!(t.elapsed >= Duration::from_millis(300), "{t:?}");
        }
    }

    #[test]
    fn nothing_to_do_returns_at_once() {
        assert!(run(Vec::new(), 4, false).is_empty());
    }
}
