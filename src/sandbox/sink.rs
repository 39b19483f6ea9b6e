//! TCP sinks of the simulated internet: on every address and port they are
//! given, accept connections, send an SMTP-like greeting and close.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// Greeting every sink connection receives before the sink closes it.
pub(crate) const BANNER: &[u8] = b"220 sandbox.invalid ESMTP egress-check sandbox\r\n";

/// Upper bound on the time spent on one connection (greeting + drain).
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds one listener per (address, port) pair. Fails on the first address
/// that cannot be bound, naming it.
pub(crate) async fn bind_all(addrs: &[IpAddr], ports: &[u16]) -> io::Result<Vec<TcpListener>> {
    let mut listeners = Vec::with_capacity(addrs.len() * ports.len());
    for &ip in addrs {
        for &port in ports {
            let addr = SocketAddr::new(ip, port);
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|e| io::Error::new(e.kind(), format!("sink {addr}: {e}")))?;
            listeners.push(listener);
        }
    }
    Ok(listeners)
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
    use std::net::Ipv4Addr;

    use super::*;

    #[tokio::test]
    async fn sink_sends_banner_then_closes() {
        // Port 0 on loopback: an ephemeral port, nothing leaves the machine.
        let listeners = bind_all(&[IpAddr::V4(Ipv4Addr::LOCALHOST)], &[0])
            .await
            .unwrap();
        let addr = listeners[0].local_addr().unwrap();
        let mut tasks = JoinSet::new();
        spawn_all(listeners, &mut tasks);

        for _ in 0..2 {
            let mut client = TcpStream::connect(addr).await.unwrap();
            let mut got = Vec::new();
            tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut got))
                .await
                .expect("sink closes the connection")
                .unwrap();
            assert_eq!(got, BANNER);
        }
        tasks.abort_all();
    }

    #[tokio::test]
    async fn bind_error_names_the_address() {
        let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let port = taken.local_addr().unwrap().port();
        let err = bind_all(&[IpAddr::V4(Ipv4Addr::LOCALHOST)], &[port])
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains(&format!("127.0.0.1:{port}")),
            "{err}"
        );
    }
}
