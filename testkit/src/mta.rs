//! A mail server in a namespace, as a mail host has one: greets like an MTA on a TCP port on
//! every address of a namespace (one `[::]` socket that also takes IPv4, so loopback and
//! link-local addresses answer too), or on one link-local address, and counts the
//! connections it accepted, so a test can prove that a probe that must not reach the host
//! did not.

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use egress_check::lab::{bind_tcp, NetnsThread, ThreadError};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

/// The greeting.
pub const BANNER: &[u8] = b"220 host.test ESMTP (the host's own MTA)\r\n";

/// A running host MTA; stops when dropped.
pub struct Mta {
    _thread: NetnsThread,
    accepted: Arc<AtomicUsize>,
}

impl Mta {
    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Starts the MTA on `port` on every address of the namespace at `netns`.
pub fn start(netns: &Path, port: u16) -> Result<Mta, ThreadError> {
    spawn(netns, format!("mta-{port}"), Some(false), move || {
        Ok(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port))
    })
}

/// Starts the MTA on `port` of one link-local address of interface `interface` in the
/// namespace at `netns` (a link-local address means nothing without its interface).
pub fn start_link_local(
    netns: &Path,
    interface: &str,
    addr: Ipv6Addr,
    port: u16,
) -> Result<Mta, ThreadError> {
    let interface = interface.to_owned();
    spawn(netns, format!("mta-ll-{port}"), Some(true), move || {
        // Inside the namespace: its own interface indices.
        let index =
            nix::net::if_::if_nametoindex(interface.as_str()).map_err(std::io::Error::from)?;
        Ok(SocketAddr::V6(SocketAddrV6::new(addr, port, 0, index)))
    })
}

/// Runs the MTA in a thread of the namespace, on the address `addr` gives there.
fn spawn(
    netns: &Path,
    name: String,
    only_v6: Option<bool>,
    addr: impl FnOnce() -> std::io::Result<SocketAddr> + Send + 'static,
) -> Result<Mta, ThreadError> {
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    let thread = NetnsThread::spawn(netns, &name, move || async move {
        let addr = addr().map_err(|e| ThreadError::new("host MTA: no address", e))?;
        let listener = bind_tcp(addr, only_v6)
            .map_err(|e| ThreadError::new(format!("host MTA: cannot listen on {addr}"), e))?;
        Ok(serve(listener, counter))
    })?;
    Ok(Mta {
        _thread: thread,
        accepted,
    })
}

async fn serve(listener: TcpListener, accepted: Arc<AtomicUsize>) {
    loop {
        match listener.accept().await {
            Ok((mut stream, _)) => {
                accepted.fetch_add(1, Ordering::SeqCst);
                let _ = stream.write_all(BANNER).await;
            }
            // Transient (EMFILE, ECONNABORTED...): back off a little.
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
