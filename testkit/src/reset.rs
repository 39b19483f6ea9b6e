//! A peer that completes the handshake and resets at once: listens on a TCP
//! port on every address of a namespace (both families, one `[::]` socket
//! that also takes IPv4), accepts each connection and closes it with
//! SO_LINGER 0, which makes the kernel send a RST instead of a FIN.

use std::net::{Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use egress_check::lab::{bind_tcp, NetnsThread, ThreadError};
use socket2::SockRef;
use tokio::net::TcpListener;

/// Starts the reset listener on `port` in the namespace at `netns`; it runs
/// until the returned thread is stopped or dropped.
pub fn start(netns: &Path, port: u16) -> Result<NetnsThread, ThreadError> {
    NetnsThread::spawn(netns, &format!("reset-{port}"), move || async move {
        let addr = SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port);
        let listener = bind_tcp(addr, Some(false))
            .map_err(|e| ThreadError::new(format!("reset listener: cannot listen on {addr}"), e))?;
        Ok(accept_and_reset(listener))
    })
}

async fn accept_and_reset(listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                // l_onoff 1, l_linger 0: close() sends a RST instead of a FIN.
                let _ = SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                drop(stream);
            }
            // Transient (EMFILE, ECONNABORTED...): back off a little.
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
