//! Free loopback ports for clusters that must not collide with each other
//! (tests run in parallel).

use std::net::UdpSocket;

/// The first of `n` consecutive UDP ports on 127.0.0.1 that were free a
/// moment ago (another process may still take one: callers that start a
/// cluster on them fail loudly if so, they do not misbehave).
pub fn free_udp_base(n: u16) -> Option<u16> {
    for _ in 0..100 {
        let Ok(socket) = UdpSocket::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(addr) = socket.local_addr() else {
            continue;
        };
        let base = addr.port();
        drop(socket);
        if base < 60000 && (0..n).all(|i| UdpSocket::bind(("127.0.0.1", base + i)).is_ok()) {
            return Some(base);
        }
    }
    None
}
