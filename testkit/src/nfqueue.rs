//! A deterministic one-way delay: an NFQUEUE listener that holds every
//! packet of its queue for a fixed time, then accepts it, in arrival order.
//!
//! This kernel has no `sch_netem` (so no `tc ... netem delay`) and nftables
//! without the `queue` expression; iptables' `-j NFQUEUE --queue-num N
//! --queue-bypass` target works. Steer packets to the queue after starting
//! the delayer, e.g. in the internet namespace:
//! `iptables -t mangle -A PREROUTING -d ADDR -p tcp --syn -j NFQUEUE
//! --queue-num N --queue-bypass` (with `--queue-bypass` the packets pass at
//! once when nobody is bound, so a missing delayer shows as *no* delay).
//!
//! NFQUEUE netlink sockets belong to the namespace they are created in, so
//! the queue is bound from a [`NetnsThread`] inside the target namespace.
//!
//! Least privilege: the delayer parses nothing but the kernel's own netlink
//! messages, yet it runs in the root test process. It stays a thread (a
//! separate process would need a binary of its own in the test kit, and the
//! tests' labs are built by that root process anyway), but capabilities are
//! per thread in Linux, so once the queue is bound the thread keeps only
//! CAP_NET_ADMIN (`keep_only_net_admin`): the kernel checks it of the
//! sender for every verdict, and for nothing else the thread does. The rest
//! of the test process keeps root.
//! `nfq` offers no descriptor to wait on, so the thread polls the socket
//! (non-blocking) every 2 ms: a packet is released at most that much
//! after its due time, never before.

use std::collections::VecDeque;
use std::io;
use std::path::Path;
use std::time::Duration;

use egress_check::lab::{NetnsThread, ThreadError};
use nfq::{Message, Queue, Verdict};
use tokio::time::Instant;

/// Longest sleep between two looks at the queue.
const POLL: Duration = Duration::from_millis(2);

/// Binds NFQUEUE `queue` in the network namespace at `netns` and delays
/// every packet sent to it by `delay`. Runs until the returned thread is
/// stopped or dropped; then the queue is unbound (and packets still held are
/// dropped by the kernel).
pub fn start(netns: &Path, queue: u16, delay: Duration) -> Result<NetnsThread, ThreadError> {
    NetnsThread::spawn(netns, &format!("nfq-delay-{queue}"), move || async move {
        let bind = |e: io::Error| ThreadError::new(format!("cannot bind NFQUEUE {queue}"), e);
        let mut nfq = Queue::open().map_err(bind)?;
        nfq.bind(queue).map_err(bind)?;
        // Metadata only: the verdict does not need the payload, and held
        // messages then keep small buffers alive.
        nfq.set_copy_range(queue, 0).map_err(bind)?;
        nfq.set_nonblocking(true);
        keep_only_net_admin()
            .map_err(|e| ThreadError::new("cannot drop the delayer's capabilities", e))?;
        Ok(hold_and_release(nfq, delay))
    })
}

/// CAP_NET_ADMIN's number (`linux/capability.h`).
const CAP_NET_ADMIN: u32 = 12;
/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// `struct __user_cap_header_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

/// `struct __user_cap_data_struct`.
#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Leaves the calling thread (only: `capset(2)` with pid 0 changes the
/// caller's credentials, and credentials are per thread) CAP_NET_ADMIN and
/// no other capability, effective and permitted, nothing inheritable or
/// ambient; then checks `/proc/thread-self/status`. Irreversible for the
/// thread: a capability out of the permitted set cannot come back.
fn keep_only_net_admin() -> io::Result<()> {
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let only = 1u32 << CAP_NET_ADMIN;
    let data = [
        CapData {
            effective: only,
            permitted: only,
            inheritable: 0,
        },
        CapData {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        },
    ];
    // SAFETY: capset reads one header and two data structs of the layout
    // `linux/capability.h` defines for version 3; both outlive the call.
    let rc = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: PR_CAP_AMBIENT_CLEAR_ALL takes integers only and touches no memory.
    unsafe {
        nix::libc::prctl(
            nix::libc::PR_CAP_AMBIENT,
            nix::libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    let status = std::fs::read_to_string("/proc/thread-self/status")?;
    let expected = format!("{:016x}", u64::from(only));
    for set in ["CapEff:", "CapPrm:"] {
        let value = status
            .lines()
            .find_map(|l| l.strip_prefix(set))
            .map(str::trim);
        if value != Some(expected.as_str()) {
            return Err(io::Error::other(format!(
                "{set} is {value:?} after capset, expected {expected}"
            )));
        }
    }
    Ok(())
}

/// Receives packets and accepts each `delay` after its arrival.
async fn hold_and_release(mut nfq: Queue, delay: Duration) {
    let mut held: VecDeque<(Instant, Message)> = VecDeque::new();
    loop {
        // Everything that arrived; stop at WouldBlock (or any other error:
        // the next round tries again).
        while let Ok(message) = nfq.recv() {
            held.push_back((Instant::now() + delay, message));
        }
        let now = Instant::now();
        while held.front().is_some_and(|(due, _)| *due <= now) {
            if let Some((_, mut message)) = held.pop_front() {
                message.set_verdict(Verdict::Accept);
                // A failed verdict leaves the packet to the kernel, which
                // drops it when the queue is unbound; nothing to do here.
                let _ = nfq.verdict(message);
            }
        }
        let wait = held.front().map_or(POLL, |(due, _)| {
            due.saturating_duration_since(now).min(POLL)
        });
        tokio::time::sleep(wait).await;
    }
}
