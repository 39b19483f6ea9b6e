//! Thousands of connection attempts in flight from one thread: nonblocking `connect(2)` on
//! reused sockets and one `epoll` instance, the worker's probing loop ([`crate::worker`]).
//!
//! Why not the async runtime: profiled on a 131,070-probe sweep (`perf record`, `strace -c`),
//! the workers spent their time in system calls, nine per probe with tokio's `TcpSocket`
//! (`socket`, `fcntl` for the second descriptor that read the local port, `getsockname`,
//! `connect`, `epoll_ctl` twice, `getsockopt`, `close` twice), and in the kernel most of it
//! went to making and destroying sockets (the socket, its file, inode and dentry, the
//! epoll item).
//!
//! So a socket here is made once and reused for attempt after attempt: when an attempt
//! ends, `connect(AF_UNSPEC)` returns the socket to the closed state (releasing its port;
//! a connection that completed is reset, a handshake in progress abandoned), and the next
//! attempt of the same family connects it again. It stays in the epoll set all along,
//! edge-triggered, keyed by its slot: the kernel re-reads the socket's state when it
//! delivers an event, so an event always describes the socket as it is. A probe costs
//! `connect`, and `getsockopt(SO_ERROR)` for one that failed (an event that says writable
//! without error or hang-up already says connected); for one that connected or timed out,
//! `connect(AF_UNSPEC)` and one more `getsockopt(SO_ERROR)` (the disconnect leaves
//! `ECONNRESET` pending on the socket, which the next attempt must not read as its own);
//! `getsockname` only when the local address is asked for (`--explain`).
//!
//! A completed connection is reset, not closed with a FIN: the handshake is all a probe
//! needs, and an orderly close leaves a TIME_WAIT socket per probe (a sweep of every port
//! would fill the host's TIME_WAIT table, `TCPTimeWaitOverflow`) and keeps its conntrack
//! entry for two minutes instead of ten seconds.
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
    started: Instant,
    timeout: Duration,
    /// Boxed: only `--explain` asks for it, and a sweep's worker holds 16,384 slots (32
    /// bytes each inline, 8 boxed).
    local: Option<Box<SocketAddr>>,
}

/// One socket, reused attempt after attempt.
struct Slot {
    /// `None` once retired ([`Connector::retire`]).
    fd: Option<OwnedFd>,
    v6: bool,
    /// The attempt it is making, if any.
    pending: Option<Pending>,
    /// Counts the attempts made with this socket: a deadline of an earlier attempt must
    /// never end a later one.
    generation: u32,
}

/// Many attempts in flight at once, at most `limit`.
pub struct Connector {
    epoll: OwnedFd,
    limit: usize,
    local_addresses: bool,
    slots: Vec<Slot>,
    /// Idle sockets (closed state, error cleared) by family: IPv4, IPv6.
    idle: [Vec<u32>; 2],
    deadlines: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    in_flight: usize,
    /// Whether requests remain to be issued: only then is a socket worth disconnecting for
    /// reuse. Once all are issued (a sweep of dropped SYNs reaches its first deadline only
    /// then), a finished socket is simply closed, which costs less than a disconnect.
    reuse: bool,
    /// Most sockets open at once so far (for the tests: never above the limit).
    peak_open: usize,
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
            idle: [Vec::new(), Vec::new()],
            deadlines: BinaryHeap::new(),
            in_flight: 0,
            reuse: true,
            peak_open: 0,
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
            self.reuse = requests.peek().is_some();
            let more_to_issue = self.in_flight < self.limit && self.reuse;
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
                let (data, flags) = (event.u64, event.events);
                let slot = u32::try_from(data).unwrap_or(u32::MAX);
                if let Some((id, attempt)) = self.finish(slot, flags) {
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
                let current = self
                    .slots
                    .get(slot as usize)
                    .is_some_and(|s| s.generation == generation && s.pending.is_some());
                if current {
                    let pending = self.end(slot, false);
                    if let Some(pending) = pending {
                        done(pending.id, timed_out(&pending))?;
                    }
                }
            }
        }
    }

    /// An idle socket of the family of `addr`, made (and put in the epoll set) if there is
    /// none.
    fn socket_for(&mut self, addr: &SocketAddr) -> io::Result<u32> {
        let v6 = addr.is_ipv6();
        if let Some(slot) = self.idle[usize::from(v6)].pop() {
            return Ok(slot);
        }
        // Sockets open never exceed the limit, which the descriptor limit sets: an idle
        // socket of the other family goes before a new one comes (else a worker that ran
        // its IPv4 share first would hold a full set of idle IPv4 sockets while opening as
        // many IPv6 ones: EMFILE).
        if self.in_flight + self.idle[0].len() + self.idle[1].len() >= self.limit {
            if let Some(other) = self.idle[usize::from(!v6)].pop() {
                self.retire(other, false);
            }
        }
        let slot = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
        let fd = self.new_socket(v6, slot)?;
        self.slots.push(Slot {
            fd: Some(fd),
            v6,
            pending: None,
            generation: 0,
        });
        let open = self.in_flight + self.idle[0].len() + self.idle[1].len() + 1;
        self.peak_open = self.peak_open.max(open);
        Ok(slot)
    }

    /// A new socket of the family, nonblocking, in the epoll set under `slot`.
    fn new_socket(&self, v6: bool, slot: u32) -> io::Result<OwnedFd> {
        let family = if v6 { libc::AF_INET6 } else { libc::AF_INET };
        // SAFETY: socket(2) takes no pointers.
        let raw = unsafe {
            libc::socket(
                family,
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut event = libc::epoll_event {
            events: (libc::EPOLLOUT | libc::EPOLLERR | libc::EPOLLHUP | libc::EPOLLET) as u32,
            u64: u64::from(slot),
        };
        // SAFETY: `event` is a valid epoll_event; both descriptors are open.
        let rc = unsafe {
            libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, raw, &mut event)
        };
        if rc < 0 {
            // Cannot be watched (ENOMEM, ENOSPC: max_user_watches); dropping `fd` closes it.
            return Err(io::Error::last_os_error());
        }
        Ok(fd)
    }

    /// Issues the connect of `request`; returns its outcome when it is known at once.
    fn start(&mut self, request: Request) -> Option<Attempt> {
        let started = Instant::now();
        let slot = match self.socket_for(&request.addr) {
            Ok(slot) => slot,
            Err(error) => return Some(failed(&error, started)),
        };
        let index = slot as usize;
        let Some(raw) = self.slots[index].fd.as_ref().map(AsRawFd::as_raw_fd) else {
            // Idle slots always have their socket; nothing else is handed out.
            return Some(failed(&io::Error::from_raw_os_error(libc::EBADF), started));
        };
        let sockaddr = socket2::SockAddr::from(request.addr);
        // SAFETY: `sockaddr` points to a valid address of the length given.
        let rc = unsafe { libc::connect(raw, sockaddr.as_ptr().cast(), sockaddr.len()) };
        let error = (rc != 0).then(io::Error::last_os_error);
        let local = if self.local_addresses {
            local_address(raw)
        } else {
            None
        };
        let in_progress = error
            .as_ref()
            .is_some_and(|e| e.raw_os_error() == Some(libc::EINPROGRESS));
        if !in_progress {
            let attempt = match &error {
                // Completed at once (loopback can): the handshake is done; reset it.
                None => Attempt {
                    observed: Observed::Connected,
                    elapsed: started.elapsed(),
                    detail: None,
                    local,
                },
                Some(error) => Attempt {
                    local,
                    ..failed(error, started)
                },
            };
            self.recycle(slot, error.is_none());
            return Some(attempt);
        }
        let s = &mut self.slots[index];
        s.generation = s.generation.wrapping_add(1);
        s.pending = Some(Pending {
            id: request.id,
            started,
            timeout: request.timeout,
            local: local.map(Box::new),
        });
        self.deadlines
            .push(Reverse((started + request.timeout, slot, s.generation)));
        self.in_flight += 1;
        None
    }

    /// Ends the attempt of `slot` (`connected`: its handshake completed) and makes its
    /// socket idle again.
    fn end(&mut self, slot: u32, connected: bool) -> Option<Pending> {
        let pending = self.slots.get_mut(slot as usize)?.pending.take()?;
        self.in_flight -= 1;
        self.recycle(slot, connected);
        Some(pending)
    }

    /// Returns the socket of `slot` to the idle list, disconnected and its pending error
    /// cleared. Every attempt is disconnected, whatever its outcome: after a failed connect
    /// the socket is closed but still "connecting" to the socket layer, and the next
    /// connect would fail with ECONNABORTED. A socket that cannot be disconnected is not
    /// reused: a new one takes its place ([`Connector::replace`]).
    fn recycle(&mut self, slot: u32, connected: bool) {
        let index = slot as usize;
        if !self.reuse {
            self.retire(slot, connected);
            return;
        }
        let Some(raw) = self.slots[index].fd.as_ref().map(AsRawFd::as_raw_fd) else {
            return;
        };
        {
            let unspec = libc::sockaddr {
                sa_family: libc::AF_UNSPEC as libc::sa_family_t,
                sa_data: [0; 14],
            };
            // SAFETY: `unspec` is a valid sockaddr of the length given.
            let rc = unsafe {
                libc::connect(
                    raw,
                    &unspec,
                    std::mem::size_of::<libc::sockaddr>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                self.replace(slot);
                return;
            }
        }
        // The error a disconnect (or the attempt) left pending, read and so cleared.
        if socket_error(raw).is_err() {
            self.replace(slot);
            return;
        }
        let v6 = self.slots[index].v6;
        self.idle[usize::from(v6)].push(slot);
    }

    /// Gives up the socket of `slot` (it could not be disconnected or its state read): a
    /// new one takes its place under the same slot; closing the old one removes it from the
    /// epoll set. If none can be made, the slot is left out of use.
    fn replace(&mut self, slot: u32) {
        let index = slot as usize;
        let v6 = self.slots[index].v6;
        if let Ok(fd) = self.new_socket(v6, slot) {
            self.slots[index].fd = Some(fd);
            self.idle[usize::from(v6)].push(slot);
        }
    }

    /// Closes the socket of `slot` for good: nothing is left to probe with it. A completed
    /// connection is reset first (`SO_LINGER` 0), as a disconnect would. The slot stays,
    /// without a socket.
    fn retire(&mut self, slot: u32, connected: bool) {
        let Some(fd) = self.slots[slot as usize].fd.take() else {
            return;
        };
        if connected {
            let linger = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            // SAFETY: `linger` is valid for reads of its size. Best effort: if it fails, the
            // close is an orderly one.
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
        // Closing it also takes it out of the epoll set.
        drop(fd);
    }

    /// The socket of `slot` reported an event: the outcome of its connect, if it has one.
    fn finish(&mut self, slot: u32, flags: u32) -> Option<(usize, Attempt)> {
        let s = self.slots.get(slot as usize)?;
        let pending = s.pending.as_ref()?;
        let raw = s.fd.as_ref()?.as_raw_fd();
        let elapsed = pending.started.elapsed();
        // The kernel computes an event's flags when it delivers it (ep_item_poll re-polls
        // the socket), from the socket as it is now: tcp_poll sets EPOLLOUT only once the
        // connection is established, EPOLLERR whenever an error is pending and EPOLLHUP
        // once the socket is closed. Writable with neither is therefore connected with no
        // error to read, and `getsockopt(SO_ERROR)` would only return 0: one system call
        // less for every probe that connects.
        let clean = libc::EPOLLOUT as u32;
        let troubled = (libc::EPOLLERR | libc::EPOLLHUP) as u32;
        let result = if flags & (clean | troubled) == clean {
            Ok(0)
        } else {
            socket_error(raw)
        };
        let connected = matches!(result, Ok(0));
        let attempt = match result {
            // Writable without error: connected. Without EPOLLOUT, still connecting (an
            // event that no longer applies): wait on.
            Ok(0) if flags & libc::EPOLLOUT as u32 != 0 => Attempt {
                observed: Observed::Connected,
                elapsed,
                detail: None,
                local: pending.local.as_deref().copied(),
            },
            Ok(0) => return None,
            Ok(code) => Attempt {
                local: pending.local.as_deref().copied(),
                ..failed(&io::Error::from_raw_os_error(code), pending.started)
            },
            Err(error) => Attempt {
                local: pending.local.as_deref().copied(),
                ..failed(&error, pending.started)
            },
        };
        let pending = self.end(slot, connected)?;
        // A deadline left in the heap for this attempt is skipped by its generation.
        Some((pending.id, attempt))
    }

    /// Every pending attempt, finished as an error with `why`.
    fn abandon(&mut self, why: &io::Error) -> Vec<(usize, Attempt)> {
        self.deadlines.clear();
        let mut out = Vec::new();
        for slot in 0..self.slots.len() {
            let slot = u32::try_from(slot).unwrap_or(u32::MAX);
            if let Some(pending) = self.end(slot, false) {
                out.push((
                    pending.id,
                    Attempt {
                        local: pending.local.as_deref().copied(),
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
        local: pending.local.as_deref().copied(),
    }
}

/// `SO_ERROR` of a socket whose connect finished: 0 when it connected.
fn socket_error(fd: RawFd) -> io::Result<i32> {
    let mut code: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `code` and `len` are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            fd,
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
    fn a_reused_socket_never_reports_its_previous_attempt() {
        // One socket in flight at a time, so every attempt reuses the previous one's
        // socket. The disconnect leaves ECONNRESET pending, which would read as "connected"
        // (a reset after the handshake) if the next attempt took it for its own.
        let full =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        full.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        full.listen(0).unwrap();
        let full_addr = full.local_addr().unwrap().as_socket().unwrap();
        let open = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let short = Duration::from_millis(200);
        // Fill the full listener's queue first, so that later SYNs to it go unanswered.
        let fillers: Vec<std::net::TcpStream> = (0..2)
            .filter_map(|_| std::net::TcpStream::connect_timeout(&full_addr, short).ok())
            .collect();
        let order = [
            full_addr,
            closed,
            open.local_addr().unwrap(),
            closed,
            full_addr,
            closed,
        ];
        let requests: Vec<Request> = order
            .iter()
            .enumerate()
            .map(|(id, &addr)| Request {
                id,
                addr,
                timeout: short,
            })
            .collect();
        let out = run(requests, 1, false);
        let observed: Vec<Observed> = (0..order.len()).map(|i| out[&i].observed).collect();
        assert_eq!(
            observed,
            [
                Observed::Timeout,
                Observed::Refused,
                Observed::Connected,
                Observed::Refused,
                Observed::Timeout,
                Observed::Refused
            ],
            "{out:?}"
        );
        drop(fillers);
    }

    #[test]
    fn sockets_open_never_exceed_the_limit_across_families() {
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let v6 = match std::net::TcpListener::bind("[::1]:0") {
            Ok(l) => l,
            Err(_) => return, // No IPv6 loopback here.
        };
        let addrs = [v4.local_addr().unwrap(), v6.local_addr().unwrap()];
        let requests: Vec<Request> = (0..64)
            .map(|id| Request {
                id,
                addr: addrs[id / 32],
                timeout: Duration::from_secs(2),
            })
            .collect();
        let mut connector = Connector::new(4, false).unwrap();
        connector
            .run(
                requests,
                |_, attempt| {
                    assert_eq!(attempt.observed, Observed::Connected);
                    Ok::<(), ()>(())
                },
                || Ok(()),
            )
            .unwrap();
        assert!(
            connector.peak_open <= 4,
            "{} sockets open",
            connector.peak_open
        );
        assert!(
            connector.slots.len() > 4,
            "the test must need both families' sockets"
        );
    }

    #[test]
    fn nothing_to_do_returns_at_once() {
        assert!(run(Vec::new(), 4, false).is_empty());
    }
}
