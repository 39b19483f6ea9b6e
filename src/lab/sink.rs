//! TCP sinks of the simulated internet: on every address and port they are
//! given (or on the wildcard addresses, for AnyIP ranges, or one transparent
//! listener per family that TPROXY feeds every port to), accept connections,
//! send an SMTP-like greeting and close.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// Greeting every sink connection receives before the sink closes it.
pub const BANNER: &[u8] = b"220 sandbox.invalid ESMTP egress-check sandbox\r\n";

/// Upper bound on the time spent on one connection (greeting + drain).
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// Listen backlog asked for; the kernel caps it at `net.core.somaxconn`
/// (4096 by default), which the internet raises to this. A sweep's tens of
/// thousands of simultaneous connects to one transparent or wildcard listener
/// (65,535 per user and family, several users at once) must not overflow the
/// accept queue: a dropped SYN is retried only after a second, longer than a
/// typical probe timeout, and reads as a timeout. The queue is not allocated
/// up front; this is only a bound.
pub(crate) const BACKLOG: i32 = 1 << 20;

/// A TCP listener on `addr` with `SO_REUSEADDR` (a lab's port may still have
/// connections in TIME_WAIT from the previous lab) and, for IPv6, `only_v6`:
/// `Some(true)` so that `[::]` and `0.0.0.0` can both be bound, `Some(false)`
/// for one socket serving both families, `None` to leave the system default
/// (irrelevant for a specific address). Must run inside a tokio runtime.
pub fn bind_tcp(addr: SocketAddr, only_v6: Option<bool>) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if let (SocketAddr::V6(_), Some(only)) = (addr, only_v6) {
        socket.set_only_v6(only)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    TcpListener::from_std(socket.into())
}

/// Binds one listener per (address, port) pair. Fails on the first address
/// that cannot be bound, naming it.
pub(crate) fn bind_all(
    addrs: &[IpAddr],
    ports: impl IntoIterator<Item = u16> + Clone,
) -> io::Result<Vec<TcpListener>> {
    let mut listeners = Vec::new();
    for &ip in addrs {
        for port in ports.clone() {
            listeners.push(bind_named(SocketAddr::new(ip, port), None)?);
        }
    }
    Ok(listeners)
}

/// Binds `0.0.0.0:PORT` and `[::]:PORT` (IPv6 only) for every port: every
/// local address of the namespace answers, including whole AnyIP ranges.
pub(crate) fn bind_wildcard(ports: impl IntoIterator<Item = u16>) -> io::Result<Vec<TcpListener>> {
    let mut listeners = Vec::new();
    for port in ports {
        listeners.push(bind_named(
            SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port),
            None,
        )?);
        listeners.push(bind_named(
            SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port),
            Some(true),
        )?);
    }
    Ok(listeners)
}

/// Binds `0.0.0.0:PORT` and `[::]:PORT` (IPv6 only) with `IP_TRANSPARENT`
/// and `IPV6_TRANSPARENT`: nftables' `tproxy` only hands connections to a
/// listener that has it (else the SYN goes on to the address's closed port).
/// Its accepted sockets keep the address and port the client connected to,
/// so every port of every sink the TPROXY rule names answers.
pub(crate) fn bind_transparent(port: u16) -> io::Result<Vec<TcpListener>> {
    let mut listeners = Vec::new();
    for addr in [
        SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port),
        SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port),
    ] {
        let named =
            |e: io::Error| io::Error::new(e.kind(), format!("transparent sink {addr}: {e}"));
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
            .map_err(named)?;
        socket.set_reuse_address(true).map_err(named)?;
        if addr.is_ipv6() {
            socket.set_only_v6(true).map_err(named)?;
            socket.set_ip_transparent_v6(true).map_err(named)?;
        } else {
            socket.set_ip_transparent_v4(true).map_err(named)?;
        }
        socket.bind(&addr.into()).map_err(named)?;
        socket.listen(BACKLOG).map_err(named)?;
        socket.set_nonblocking(true).map_err(named)?;
        listeners.push(TcpListener::from_std(socket.into()).map_err(named)?);
    }
    Ok(listeners)
}

/// [`bind_tcp`], with the address in the error.
fn bind_named(addr: SocketAddr, only_v6: Option<bool>) -> io::Result<TcpListener> {
    bind_tcp(addr, only_v6).map_err(|e| io::Error::new(e.kind(), format!("sink {addr}: {e}")))
}

/// Serves every listener in `tasks` until the tasks are aborted.
pub(crate) fn spawn_all(listeners: Vec<TcpListener>, tasks: &mut JoinSet<()>) {
    for listener in listeners {
        tasks.spawn(serve(listener));
    }
}

/// Accept loop of one listener.
async fn serve(listener: TcpListener) {
    let mut connections = JoinSet::new();
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                connections.spawn(async move {
                    let _ = tokio::time::timeout(CONNECTION_TIMEOUT, greet(stream)).await;
                });
            }
            Err(_) => {
                // Transient (EMFILE, ECONNABORTED...): back off a little.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        while connections.try_join_next().is_some() {}
    }
}

/// Sends the banner, half-closes, and drains whatever the client sends until
/// it closes too (closing with unread data would reset the connection and
/// could destroy the banner in flight).
async fn greet(mut stream: TcpStream) -> io::Result<()> {
    stream.write_all(BANNER).await?;
    stream.shutdown().await?;
    let mut buf = [0u8; 512];
    while stream.read(&mut buf).await? > 0 {}
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(addr: SocketAddr) -> Vec<u8> {
        let mut client = TcpStream::connect(addr).await.unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut got))
            .await
            .expect("sink closes the connection")
            .unwrap();
        got
    }

    #[tokio::test]
    async fn sink_sends_banner_then_closes() {
        // Port 0 on loopback: an ephemeral port, nothing leaves the machine.
        let listeners = bind_all(&[IpAddr::V4(Ipv4Addr::LOCALHOST)], [0]).unwrap();
        let addr = listeners[0].local_addr().unwrap();
        let mut tasks = JoinSet::new();
        spawn_all(listeners, &mut tasks);
        for _ in 0..2 {
            assert_eq!(read_all(addr).await, BANNER);
        }
        tasks.abort_all();
    }

    #[tokio::test]
    async fn bind_error_names_the_address() {
        let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let port = taken.local_addr().unwrap().port();
        let err = bind_all(&[IpAddr::V4(Ipv4Addr::LOCALHOST)], [port]).unwrap_err();
        assert!(
            err.to_string().contains(&format!("127.0.0.1:{port}")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn wildcard_binds_both_families_on_one_port() {
        // Find a port free in both families, then bind the wildcards on it.
        let probe = bind_tcp((Ipv6Addr::UNSPECIFIED, 0).into(), Some(false)).unwrap();
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        let listeners = bind_wildcard([port]).unwrap();
        assert_eq!(listeners.len(), 2);
        assert_eq!(
            listeners[1].local_addr().unwrap(),
            (Ipv6Addr::UNSPECIFIED, port).into()
        );
        let mut tasks = JoinSet::new();
        spawn_all(listeners, &mut tasks);
        assert_eq!(read_all((Ipv4Addr::LOCALHOST, port).into()).await, BANNER);
        tasks.abort_all();
    }
}
