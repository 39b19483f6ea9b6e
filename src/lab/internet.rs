//! The simulated internet's services, served by a [`NetnsThread`] inside the
//! internet namespace: the DNS server (UDP and TCP port 53 on the internet
//! end of the link, both families) and the TCP sinks. Runtime requests
//! ([`Control`]) arrive over a channel; dropping its sender, or stopping the
//! thread, ends everything.

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

/// What the internet serves.
pub(crate) struct Services {
    /// Addresses the DNS server listens on (port 53, UDP and TCP).
    pub(crate) dns_listen: Vec<IpAddr>,
    pub(crate) zone: Arc<Zone>,
    pub(crate) layer: Option<Arc<dyn DnsLayer>>,
    /// Sink addresses (ignored when `wildcard`).
    pub(crate) sinks: Vec<IpAddr>,
    /// Listen on the wildcard addresses instead of each sink (AnyIP).
    pub(crate) wildcard: bool,
    pub(crate) ports: BTreeSet<u16>,
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
    disable_forwarding()?;
    let dns = bind_dns(&services)?;
    let mut sinks = JoinSet::new();
    let listeners = if services.wildcard {
        sink::bind_wildcard(services.ports.iter().copied())
    } else {
        sink::bind_all(&services.sinks, services.ports.iter().copied())
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
                let result = if services.wildcard {
                    Ok(()) // the wildcard listeners answer on it already
                } else {
                    sink::bind_all(&[addr], services.ports.iter().copied())
                        .map(|listeners| sink::spawn_all(listeners, &mut sinks))
                        .map_err(|e| ThreadError::new("cannot add a sink", e))
                };
                let _ = done.send(result);
            }
        }
    }
}

fn bind_dns(services: &Services) -> Result<Server<ZoneHandler>, ThreadError> {
    let mut dns = Server::new(ZoneHandler::new(
        Arc::clone(&services.zone),
        services.layer.clone(),
    ));
    for &ip in &services.dns_listen {
        let addr = SocketAddr::new(ip, 53);
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
