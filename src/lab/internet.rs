//! The simulated internet's services, served by a [`NetnsThread`] inside the
//! internet namespace: the DNS server (UDP and TCP port 53 on the internet
//! end of the link, both families) and the TCP sinks. Runtime requests
//! ([`Control`]) arrive over a channel; dropping its sender, or stopping the
//! thread, ends everything. The same services, with no sinks and without
//! the internet's namespace settings, serve the lab's DNS on a loopback
//! resolver's address inside the host namespace.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use hickory_server::Server;
use tokio::net::UdpSocket;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::task::JoinSet;

use super::dns::{DnsLayer, ZoneHandler};
use super::sink;
use super::thread::{NetnsThread, ThreadError};
use super::zone::Zone;

/// Idle timeout of DNS-over-TCP connections.
const DNS_TCP_TIMEOUT: Duration = Duration::from_secs(5);
/// Per-connection response buffer of DNS-over-TCP (hickory's own default use).
const DNS_TCP_BUFFER: usize = 32;

/// A request to the running internet.
pub(crate) enum Control {
    /// Listen on the sink ports on this (already assigned) address.
    AddSink {
        addr: IpAddr,
        done: mpsc::Sender<Result<(), ThreadError>>,
    },
}

/// Listen backlog limit of the internet (`net.core.somaxconn`, per
/// namespace; 4096 by default in a new one). `listen()` silently caps the
/// backlog at it, and a sweep's tens of thousands of simultaneous connects to
/// one listener would overflow a 4096-entry accept queue: the kernel then
/// drops the SYN, which the prober sees as a timeout, a false pass of a deny.
/// Raised to the sinks' own backlog.
const SOMAXCONN: u32 = sink::BACKLOG.unsigned_abs();

/// How the sinks listen (see [`super::SinkMode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// On each sink address, each port.
    Listed,
    /// On the wildcard addresses, each port (AnyIP ranges).
    Wildcard,
    /// One transparent listener per family, fed by TPROXY: every port.
    AnyPort,
}

/// What the internet serves.
pub(crate) struct Services {
    /// Where the DNS server listens (UDP and TCP).
    pub(crate) dns_listen: Vec<SocketAddr>,
    pub(crate) zone: Arc<Zone>,
    pub(crate) layer: Option<Arc<dyn DnsLayer>>,
    /// Sink addresses (used by [`Mode::Listed`]).
    pub(crate) sinks: Vec<IpAddr>,
    pub(crate) mode: Mode,
    /// Sink ports (ignored by [`Mode::AnyPort`]).
    pub(crate) ports: BTreeSet<u16>,
    /// The namespace is the internet's: turn forwarding off and raise
    /// `somaxconn` there. `false` for the DNS server alone in the host
    /// namespace, whose settings are the host's under test.
    pub(crate) internet_namespace: bool,
}

/// Starts the services in the namespace at `netns`; returns once every
/// socket is bound.
pub(crate) fn start(
    netns: &Path,
    services: Services,
) -> Result<(NetnsThread, UnboundedSender<Control>), ThreadError> {
    let (control_tx, control_rx) = unbounded_channel();
    let thread = NetnsThread::spawn(netns, "lab-internet", move || setup(services, control_rx))?;
    Ok((thread, control_tx))
}

/// Binds every socket of `services` (in the namespace of the calling thread, which must
/// run a tokio runtime) and returns the future that serves them until `control`'s sender
/// is dropped. Both backends run this: the [`NetnsThread`] above, and the separate process
/// of [`super::internet_process`], which drops its privileges between binding and serving:
/// so every socket option that needs a capability is set here, before it returns.
pub(crate) async fn setup(
    services: Services,
    control: UnboundedReceiver<Control>,
) -> Result<impl std::future::Future<Output = ()>, ThreadError> {
    if services.internet_namespace {
        disable_forwarding()?;
        // Before any listen(): the kernel caps the backlog when listen() is called.
        raise_somaxconn()?;
    }
    let dns = bind_dns(&services.dns_listen, &services.zone, services.layer.clone())?;
    let mut sinks = JoinSet::new();
    let listeners = match services.mode {
        Mode::Listed => sink::bind_all(&services.sinks, services.ports.iter().copied()),
        Mode::Wildcard => sink::bind_wildcard(services.ports.iter().copied()),
        // IP_TRANSPARENT needs CAP_NET_ADMIN when it is set: here, before any drop.
        Mode::AnyPort => sink::bind_transparent(super::netfilter::ANY_PORT),
    }
    .map_err(|e| ThreadError::new("cannot start the sinks", e))?;
    sink::spawn_all(listeners, &mut sinks);
    Ok(serve(dns, sinks, services, control))
}

/// Serves control requests until the sender is dropped; the DNS server and
/// the sinks run as tasks meanwhile and stop when this future is dropped.
async fn serve(
    _dns: Server<ZoneHandler>,
    mut sinks: JoinSet<()>,
    services: Services,
    mut control: UnboundedReceiver<Control>,
) {
    while let Some(request) = control.recv().await {
        match request {
            Control::AddSink { addr, done } => {
                let result = match services.mode {
                    // The wildcard listeners answer on it already.
                    Mode::Wildcard => Ok(()),
                    Mode::Listed => sink::bind_all(&[addr], services.ports.iter().copied())
                        .map(|listeners| sink::spawn_all(listeners, &mut sinks))
                        .map_err(|e| ThreadError::new("cannot add a sink", e)),
                    // The TPROXY rule names the sinks of the start; no lab
                    // that needs more uses this mode.
                    Mode::AnyPort => Err(ThreadError::new(
                        "cannot add a sink",
                        std::io::Error::new(
                            std::io::ErrorKind::Unsupported,
                            "any-port sinks are fixed when the lab is created",
                        ),
                    )),
                };
                let _ = done.send(result);
            }
        }
    }
}

fn bind_dns(
    listen: &[SocketAddr],
    zone: &Arc<Zone>,
    layer: Option<Arc<dyn DnsLayer>>,
) -> Result<Server<ZoneHandler>, ThreadError> {
    let mut dns = Server::new(ZoneHandler::new(Arc::clone(zone), layer));
    for &addr in listen {
        let udp = std::net::UdpSocket::bind(addr)
            .and_then(|s| {
                s.set_nonblocking(true)?;
                UdpSocket::from_std(s)
            })
            .map_err(|e| ThreadError::new(format!("DNS: cannot bind udp {addr}"), e))?;
        let tcp = sink::bind_tcp(addr, None)
            .map_err(|e| ThreadError::new(format!("DNS: cannot bind tcp {addr}"), e))?;
        dns.register_socket(udp);
        dns.register_listener(tcp, DNS_TCP_TIMEOUT, DNS_TCP_BUFFER);
    }
    Ok(dns)
}

/// Belt and braces: the internet has no route but the link, and must not
/// route between interfaces either. A new namespace may inherit IPv4
/// forwarding from the initial one (`net.core.devconf_inherit_init_net`).
/// `/proc/sys/net` shows the namespace of the thread that opens it, so this
/// runs on the namespace thread.
fn disable_forwarding() -> Result<(), ThreadError> {
    for knob in [
        "/proc/sys/net/ipv4/ip_forward",
        "/proc/sys/net/ipv6/conf/all/forwarding",
    ] {
        let current = std::fs::read_to_string(knob).unwrap_or_default();
        if current.trim() != "0" {
            std::fs::write(knob, "0")
                .map_err(|e| ThreadError::new(format!("cannot write 0 to {knob}"), e))?;
        }
    }
    Ok(())
}

/// Raises `net.core.somaxconn` of the namespace to [`SOMAXCONN`] (see
/// there); like [`disable_forwarding`], on the namespace thread.
fn raise_somaxconn() -> Result<(), ThreadError> {
    const KNOB: &str = "/proc/sys/net/core/somaxconn";
    let current: u32 = std::fs::read_to_string(KNOB)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    if current < SOMAXCONN {
        std::fs::write(KNOB, SOMAXCONN.to_string())
            .map_err(|e| ThreadError::new(format!("cannot write {SOMAXCONN} to {KNOB}"), e))?;
    }
    Ok(())
}
