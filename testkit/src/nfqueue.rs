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
        Ok(hold_and_release(nfq, delay))
    })
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
