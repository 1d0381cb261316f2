//! Free loopback ports for clusters that must not collide with each other
//! (tests run in parallel).

use std::net::UdpSocket;

/// Ports below this are left alone (services of the machine).
const LOWEST: u16 = 10_000;

/// The first of `n` consecutive UDP ports on 127.0.0.1 that were free a
/// moment ago (another process may still take one: callers that start a
/// cluster on them fail loudly if so, they do not misbehave).
///
/// They come from below the kernel's ephemeral range: a socket bound to
/// port 0 (any client's) never gets one, so a node killed and restarted
/// on its port finds it free. (Regression: a node restarted by a test
/// could not listen again, its port taken meanwhile by a client socket.)
pub fn free_udp_base(n: u16) -> Option<u16> {
    let highest = ephemeral_start().unwrap_or(32_768);
    let span = highest.checked_sub(LOWEST)?.checked_sub(n)?;
    if span == 0 {
        return None;
    }
    let mut state = seed();
    for _ in 0..200 {
        state = splitmix(state);
        let base = LOWEST + (state % u64::from(span)) as u16;
        if (0..n).all(|i| UdpSocket::bind(("127.0.0.1", base + i)).is_ok()) {
            return Some(base);
        }
    }
    None
}

/// The first port of the kernel's ephemeral range, if it says.
fn ephemeral_start() -> Option<u16> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    range.split_whitespace().next()?.parse().ok()
}

/// Differs between processes and calls, so parallel tests start their
/// search at different ports.
fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_from_below_the_ephemeral_range_and_are_free() {
        let base = free_udp_base(5).expect("free ports");
        let highest = ephemeral_start().unwrap_or(32_768);
        assert!(base >= LOWEST && base + 5 <= highest, "{base}");
        for i in 0..5 {
            UdpSocket::bind(("127.0.0.1", base + i)).expect("free");
        }
    }
}
