//! Packet sizes: the client and the broker look for the largest QUIC packet their path carries,
//! beyond Ethernet's 1,500 bytes where it allows (loopback, jumbo frames), since per-packet work
//! (encryption set-up, header protection, acknowledgements, one system call per packet without
//! GSO) is most of QUIC's cost for large records.

/// The largest UDP payload an endpoint receives and tries to send (quinn probes up to it, RFC 8899,
/// and keeps what the path carries: 1,452 bytes on plain Ethernet, this much on loopback or jumbo
/// frames). Measured on loopback (BENCHMARKS.md, "Packet size"): 2,048 to 6,144 bytes all beat
/// 1,452, 4,096 by 1.7x for 1 KB records; from 8,192 up throughput fell below 1,452's (quinn sends
/// up to 64 KiB of packets in one GSO call, and 8 x 8,192 bytes is past IPv4's 65,507-byte UDP
/// limit: the kernel refuses the whole burst), so this stays well under that edge.
pub const MAX_UDP_PAYLOAD: u16 = 4_096;

/// Path MTU discovery up to [`MAX_UDP_PAYLOAD`] (quinn's default stops at 1,452).
pub fn mtu_discovery() -> quinn::MtuDiscoveryConfig {
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(MAX_UDP_PAYLOAD);
    mtu
}

/// What a QUIC socket asks the kernel for as its receive and send buffers: enough for a burst at
/// full speed (the kernel's default, ~208 KiB, overflows on loopback at a few hundred MB/s and each
/// dropped packet halves the congestion window). The kernel caps it at `net.core.rmem_max` /
/// `wmem_max`; it is a limit, not an allocation.
pub const SOCKET_BUFFER: usize = 8 << 20;

/// A UDP socket bound to `addr` for a QUIC endpoint, with [`SOCKET_BUFFER`]-sized buffers (as far
/// as the kernel allows; smaller ones are not an error).
pub fn bind_udp(addr: std::net::SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr)?;
    let sock = socket2::SockRef::from(&socket);
    let _ = sock.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = sock.set_send_buffer_size(SOCKET_BUFFER);
    Ok(socket)
}

/// A QUIC endpoint on `addr` (a server when `server` is given) that accepts packets up to
/// [`MAX_UDP_PAYLOAD`] (the transport parameter the peer's discovery is capped by), on a socket
/// from [`bind_udp`]. `config` and `runtime` are the caller's (they pick quinn's crypto provider
/// and runtime), usually `EndpointConfig::default()` and `TokioRuntime`.
pub fn endpoint(
    addr: std::net::SocketAddr,
    mut config: quinn::EndpointConfig,
    server: Option<quinn::ServerConfig>,
    runtime: std::sync::Arc<dyn quinn::Runtime>,
) -> std::io::Result<quinn::Endpoint> {
    let socket = bind_udp(addr)?;
    config
        .max_udp_payload_size(MAX_UDP_PAYLOAD)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    quinn::Endpoint::new(config, server, socket, runtime)
}
