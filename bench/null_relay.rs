//! The null relay: the least work any user-space TURN relay can do, as a reference for
//! benchmarks (`bench/run.sh`). Not a TURN server.
//!
//! **Insecure by design. Never expose it to a network.** It authenticates nobody, checks
//! nothing (no MESSAGE-INTEGRITY, no permissions, no quotas, no peer address policy,
//! no expiry), relays to any address a client names, including this host's own
//! services, and keeps allocations until they are refreshed with LIFETIME 0 or the
//! process ends. Run it on loopback only, for as long as a benchmark lasts.
//!
//! What it answers (any STUN request, signed or not, always with success):
//!
//! - Allocate: binds a UDP relay socket on the listening IP (port chosen by the OS) and
//!   answers XOR-RELAYED-ADDRESS, LIFETIME 600 and XOR-MAPPED-ADDRESS. A second
//!   Allocate from the same client (a retransmission) gets the same relay address.
//! - CreatePermission: success (permissions are not kept: every peer is allowed).
//! - ChannelBind: success, and records channel number ⇄ peer for the allocation.
//! - Refresh: success with the requested LIFETIME (600 when absent); LIFETIME 0 closes
//!   the relay socket and forgets the allocation.
//! - Binding: success with XOR-MAPPED-ADDRESS.
//!
//! Responses carry no MESSAGE-INTEGRITY, REALM or NONCE (a client that signs its first
//! request simply gets its success at once). Any other method gets no answer.
//!
//! Data path, one receive and one send per packet in each direction:
//!
//! - client → peer: ChannelData is read from the listening socket and its payload (after
//!   the 4-byte header) is sent from the allocation's relay socket to the bound peer. A
//!   Send indication is sent to its XOR-PEER-ADDRESS the same way.
//! - peer → client: a datagram is read into a buffer 4 bytes past its start, the
//!   ChannelData header is written into that headroom, and the whole is sent from the
//!   listening socket to the client: no copy. Data from a peer without a channel goes
//!   out as a Data indication (copied; benchmarks use channels).
//!
//! Threads (chosen for minimum overhead with plain std + libc, no async runtime):
//!
//! - the control thread blocks in `recvfrom` on the listening socket: it answers STUN
//!   and forwards client → peer. It owns the client → allocation table, so it takes no
//!   lock per packet.
//! - the relay thread waits in one level-triggered `epoll_wait` for every relay socket
//!   and forwards peer → client, one `recvfrom` per ready socket per wake-up (no extra
//!   `recvfrom` ending in EAGAIN). Its table (epoll token → client, peer → channel)
//!   sits behind a mutex that only the control thread's Allocate, ChannelBind and
//!   Refresh also take: uncontended on the data path. One thread per relay socket
//!   would cost a stack (and a scheduler entry) per allocation, which would show in
//!   memory-per-allocation figures; epoll keeps idle allocations at one socket each.
//!
//! Usage: `null_relay --listen IP:PORT` (port 0 picks one; the bound address is printed
//! on standard output once ready). Stop it with SIGTERM or SIGINT.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

const MAGIC: u32 = 0x2112_A442;
const HEADER: usize = 20;

const METHOD_BINDING: u16 = 0x001;
const METHOD_ALLOCATE: u16 = 0x003;
const METHOD_REFRESH: u16 = 0x004;
const METHOD_SEND: u16 = 0x006;
const METHOD_DATA: u16 = 0x007;
const METHOD_CREATE_PERMISSION: u16 = 0x008;
const METHOD_CHANNEL_BIND: u16 = 0x009;

const CLASS_REQUEST: u16 = 0x000;
const CLASS_INDICATION: u16 = 0x010;
const CLASS_SUCCESS: u16 = 0x100;

const ATTR_CHANNEL_NUMBER: u16 = 0x000C;
const ATTR_LIFETIME: u16 = 0x000D;
const ATTR_XOR_PEER_ADDRESS: u16 = 0x0012;
const ATTR_DATA: u16 = 0x0013;
const ATTR_XOR_RELAYED_ADDRESS: u16 = 0x0016;
const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;

/// Socket buffers asked for, as tern's default `limits.socket_buffer` (the kernel caps
/// it at net.core.rmem_max / wmem_max).
const SOCKET_BUFFER: libc::c_int = 4 * 1024 * 1024;
/// Largest UDP payload, plus the ChannelData headroom.
const BUF: usize = 65536 + 4;
/// Events taken per `epoll_wait`.
const EVENTS: usize = 256;

/// What the control thread keeps per client.
struct ClientAlloc {
    relay: Arc<UdpSocket>,
    relay_addr: SocketAddr,
    token: u64,
    channels: HashMap<u16, SocketAddr>,
}

/// What the relay thread needs per relay socket.
struct RelayEntry {
    socket: Arc<UdpSocket>,
    client: SocketAddr,
    peers: HashMap<SocketAddr, u16>,
}

type RelayTable = Arc<Mutex<HashMap<u64, RelayEntry>>>;

fn main() {
    if let Err(e) = run() {
        eprintln!("null_relay: {e}");
        std::process::exit(1);
    }
}

fn run() -> io::Result<()> {
    let listen = parse_args()?;
    raise_nofile_limit();
    let listener = Arc::new(UdpSocket::bind(listen)?);
    set_buffers(&listener);
    let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if epoll < 0 {
        return Err(io::Error::last_os_error());
    }
    let table: RelayTable = Arc::new(Mutex::new(HashMap::new()));
    {
        let listener = Arc::clone(&listener);
        let table = Arc::clone(&table);
        std::thread::Builder::new()
            .name("relay".into())
            .spawn(move || relay_thread(epoll, &listener, &table))?;
    }
    println!("null_relay listening on {}", listener.local_addr()?);
    control_thread(&listener, epoll, &table)
}

fn parse_args() -> io::Result<SocketAddr> {
    let usage = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "usage: null_relay --listen IP:PORT (insecure benchmark reference: loopback only)",
        )
    };
    let mut args = std::env::args().skip(1);
    let mut listen = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = Some(args.next().ok_or_else(usage)?),
            s if s.starts_with("--listen=") => listen = Some(s["--listen=".len()..].to_string()),
            _ => return Err(usage()),
        }
    }
    listen
        .ok_or_else(usage)?
        .parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "--listen takes IP:PORT"))
}

/// Ten thousand allocations are ten thousand sockets: lift the soft open-file limit to
/// the hard one.
fn raise_nofile_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn set_buffers(socket: &UdpSocket) {
    let fd = socket.as_raw_fd();
    let size = SOCKET_BUFFER;
    for opt in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        // Best effort: a smaller buffer only means drops under bursts.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

// ---------------------------------------------------------------------------------
// Control thread: STUN and client → peer.

fn control_thread(listener: &UdpSocket, epoll: libc::c_int, table: &RelayTable) -> io::Result<()> {
    let local_ip = listener.local_addr()?.ip();
    let mut clients: HashMap<SocketAddr, ClientAlloc> = HashMap::new();
    let mut next_token: u64 = 1;
    let mut buf = vec![0u8; BUF];
    let mut out = Vec::with_capacity(128);
    loop {
        let (n, from) = match listener.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // ICMP errors from earlier sends surface here on some kernels: ignore.
            Err(_) => continue,
        };
        let pkt = &buf[..n];
        if n < 4 {
            continue;
        }
        match pkt[0] >> 6 {
            // ChannelData: channel numbers 0x4000..=0x7FFF.
            1 => {
                let number = u16::from_be_bytes([pkt[0], pkt[1]]);
                let len = u16::from_be_bytes([pkt[2], pkt[3]]) as usize;
                if 4 + len > n {
                    continue;
                }
                if let Some(alloc) = clients.get(&from)
                    && let Some(peer) = alloc.channels.get(&number)
                {
                    let _ = alloc.relay.send_to(&pkt[4..4 + len], peer);
                }
            }
            0 => {
                let Some(msg) = Stun::parse(pkt) else {
                    continue;
                };
                let method = msg.typ & 0x3EEF;
                let class = msg.typ & 0x0110;
                if class == CLASS_INDICATION && method == METHOD_SEND {
                    if let (Some(alloc), Some(peer), Some(data)) = (
                        clients.get(&from),
                        msg.attr(ATTR_XOR_PEER_ADDRESS)
                            .and_then(|v| decode_xor(v, &msg.tid)),
                        msg.attr(ATTR_DATA),
                    ) {
                        let _ = alloc.relay.send_to(data, peer);
                    }
                    continue;
                }
                if class != CLASS_REQUEST {
                    continue;
                }
                out.clear();
                let ok = match method {
                    METHOD_BINDING => {
                        let mut r = Response::new(&mut out, method, &msg.tid);
                        r.xor_addr(ATTR_XOR_MAPPED_ADDRESS, from);
                        true
                    }
                    METHOD_ALLOCATE => {
                        let alloc = match clients.get(&from) {
                            Some(a) => Some(a.relay_addr),
                            None => match allocate(local_ip, from, epoll, table, next_token) {
                                Ok(a) => {
                                    next_token += 1;
                                    let addr = a.relay_addr;
                                    clients.insert(from, a);
                                    Some(addr)
                                }
                                Err(e) => {
                                    eprintln!("null_relay: allocate for {from}: {e}");
                                    None
                                }
                            },
                        };
                        match alloc {
                            Some(relay_addr) => {
                                let mut r = Response::new(&mut out, method, &msg.tid);
                                r.xor_addr(ATTR_XOR_RELAYED_ADDRESS, relay_addr);
                                r.u32(ATTR_LIFETIME, 600);
                                r.xor_addr(ATTR_XOR_MAPPED_ADDRESS, from);
                                true
                            }
                            None => false,
                        }
                    }
                    METHOD_CREATE_PERMISSION => {
                        Response::new(&mut out, method, &msg.tid);
                        true
                    }
                    METHOD_CHANNEL_BIND => {
                        let number = msg
                            .attr(ATTR_CHANNEL_NUMBER)
                            .filter(|v| v.len() >= 2)
                            .map(|v| u16::from_be_bytes([v[0], v[1]]));
                        let peer = msg
                            .attr(ATTR_XOR_PEER_ADDRESS)
                            .and_then(|v| decode_xor(v, &msg.tid));
                        if let (Some(alloc), Some(number), Some(peer)) =
                            (clients.get_mut(&from), number, peer)
                        {
                            alloc.channels.insert(number, peer);
                            if let Some(entry) = lock(table).get_mut(&alloc.token) {
                                entry.peers.insert(peer, number);
                            }
                        }
                        Response::new(&mut out, method, &msg.tid);
                        true
                    }
                    METHOD_REFRESH => {
                        let lifetime = msg
                            .attr(ATTR_LIFETIME)
                            .filter(|v| v.len() >= 4)
                            .map(|v| u32::from_be_bytes([v[0], v[1], v[2], v[3]]))
                            .unwrap_or(600);
                        if lifetime == 0
                            && let Some(alloc) = clients.remove(&from)
                        {
                            unsafe {
                                libc::epoll_ctl(
                                    epoll,
                                    libc::EPOLL_CTL_DEL,
                                    alloc.relay.as_raw_fd(),
                                    std::ptr::null_mut(),
                                );
                            }
                            // Dropping the table's and our Arc closes the socket.
                            lock(table).remove(&alloc.token);
                        }
                        let mut r = Response::new(&mut out, method, &msg.tid);
                        r.u32(ATTR_LIFETIME, lifetime.min(600));
                        true
                    }
                    _ => false,
                };
                if ok {
                    let _ = listener.send_to(&out, from);
                }
            }
            _ => {}
        }
    }
}

fn allocate(
    ip: IpAddr,
    client: SocketAddr,
    epoll: libc::c_int,
    table: &RelayTable,
    token: u64,
) -> io::Result<ClientAlloc> {
    let socket = Arc::new(UdpSocket::bind(SocketAddr::new(ip, 0))?);
    socket.set_nonblocking(true)?;
    set_buffers(&socket);
    let relay_addr = socket.local_addr()?;
    lock(table).insert(
        token,
        RelayEntry {
            socket: Arc::clone(&socket),
            client,
            peers: HashMap::new(),
        },
    );
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: token,
    };
    if unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, socket.as_raw_fd(), &mut ev) } < 0 {
        let e = io::Error::last_os_error();
        lock(table).remove(&token);
        return Err(e);
    }
    Ok(ClientAlloc {
        relay: socket,
        relay_addr,
        token,
        channels: HashMap::new(),
    })
}

fn lock(table: &RelayTable) -> std::sync::MutexGuard<'_, HashMap<u64, RelayEntry>> {
    table.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------
// Relay thread: peer → client.

fn relay_thread(epoll: libc::c_int, listener: &UdpSocket, table: &RelayTable) {
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS];
    let mut buf = vec![0u8; BUF];
    let mut indication = Vec::with_capacity(BUF + 64);
    loop {
        let n = unsafe { libc::epoll_wait(epoll, events.as_mut_ptr(), EVENTS as libc::c_int, -1) };
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            eprintln!("null_relay: epoll_wait: {}", io::Error::last_os_error());
            std::process::exit(1);
        }
        let table = lock(table);
        for ev in &events[..n as usize] {
            let token = ev.u64;
            // Gone since the event was queued (Refresh with LIFETIME 0): skip.
            let Some(entry) = table.get(&token) else {
                continue;
            };
            let (len, peer) = match entry.socket.recv_from(&mut buf[4..]) {
                Ok(r) => r,
                Err(_) => continue,
            };
            match entry.peers.get(&peer) {
                Some(&number) => {
                    buf[..2].copy_from_slice(&number.to_be_bytes());
                    buf[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                    let _ = listener.send_to(&buf[..4 + len], entry.client);
                }
                None => {
                    indication.clear();
                    let tid: [u8; 12] = rand_tid(token, len);
                    let mut r = Response::indication(&mut indication, METHOD_DATA, &tid);
                    r.xor_addr(ATTR_XOR_PEER_ADDRESS, peer);
                    r.bytes(ATTR_DATA, &buf[4..4 + len]);
                    let _ = listener.send_to(&indication, entry.client);
                }
            }
        }
    }
}

/// A transaction id for a Data indication: unique enough, no RNG needed.
fn rand_tid(token: u64, len: usize) -> [u8; 12] {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut tid = [0u8; 12];
    tid[..8].copy_from_slice(&token.to_be_bytes());
    tid[8..].copy_from_slice(&(nanos ^ len as u32).to_be_bytes());
    tid
}

// ---------------------------------------------------------------------------------
// Just enough STUN.

struct Stun<'a> {
    typ: u16,
    tid: [u8; 12],
    attrs: &'a [u8],
}

impl<'a> Stun<'a> {
    fn parse(pkt: &'a [u8]) -> Option<Self> {
        if pkt.len() < HEADER || u32::from_be_bytes([pkt[4], pkt[5], pkt[6], pkt[7]]) != MAGIC {
            return None;
        }
        let len = u16::from_be_bytes([pkt[2], pkt[3]]) as usize;
        if HEADER + len > pkt.len() {
            return None;
        }
        Some(Self {
            typ: u16::from_be_bytes([pkt[0], pkt[1]]),
            tid: pkt[8..20].try_into().ok()?,
            attrs: &pkt[HEADER..HEADER + len],
        })
    }

    /// The value of the first attribute of type `t`.
    fn attr(&self, t: u16) -> Option<&'a [u8]> {
        let mut rest = self.attrs;
        while rest.len() >= 4 {
            let typ = u16::from_be_bytes([rest[0], rest[1]]);
            let len = u16::from_be_bytes([rest[2], rest[3]]) as usize;
            let value = rest.get(4..4 + len)?;
            if typ == t {
                return Some(value);
            }
            let padded = (4 + len + 3) & !3;
            rest = rest.get(padded..).unwrap_or(&[]);
        }
        None
    }
}

fn decode_xor(v: &[u8], tid: &[u8; 12]) -> Option<SocketAddr> {
    if v.len() < 8 {
        return None;
    }
    let port = u16::from_be_bytes([v[2], v[3]]) ^ (MAGIC >> 16) as u16;
    match v[1] {
        1 => {
            let raw = u32::from_be_bytes([v[4], v[5], v[6], v[7]]) ^ MAGIC;
            Some(SocketAddr::new(Ipv4Addr::from(raw).into(), port))
        }
        2 if v.len() >= 20 => {
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&v[4..20]);
            for (i, b) in ip.iter_mut().enumerate() {
                *b ^= xor_key(tid)[i];
            }
            Some(SocketAddr::new(Ipv6Addr::from(ip).into(), port))
        }
        _ => None,
    }
}

fn xor_key(tid: &[u8; 12]) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..4].copy_from_slice(&MAGIC.to_be_bytes());
    key[4..].copy_from_slice(tid);
    key
}

/// Builds a response (or indication) in place; the header length is kept up to date.
struct Response<'a> {
    out: &'a mut Vec<u8>,
    tid: [u8; 12],
}

impl<'a> Response<'a> {
    fn new(out: &'a mut Vec<u8>, method: u16, tid: &[u8; 12]) -> Self {
        Self::with_type(out, method | CLASS_SUCCESS, tid)
    }

    fn indication(out: &'a mut Vec<u8>, method: u16, tid: &[u8; 12]) -> Self {
        Self::with_type(out, method | CLASS_INDICATION, tid)
    }

    fn with_type(out: &'a mut Vec<u8>, typ: u16, tid: &[u8; 12]) -> Self {
        out.extend_from_slice(&typ.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&MAGIC.to_be_bytes());
        out.extend_from_slice(tid);
        Self { out, tid: *tid }
    }

    fn bytes(&mut self, t: u16, value: &[u8]) {
        self.out.extend_from_slice(&t.to_be_bytes());
        self.out
            .extend_from_slice(&(value.len() as u16).to_be_bytes());
        self.out.extend_from_slice(value);
        let pad = (4 - value.len() % 4) % 4;
        self.out.extend_from_slice(&[0u8; 3][..pad]);
        let len = (self.out.len() - HEADER) as u16;
        self.out[2..4].copy_from_slice(&len.to_be_bytes());
    }

    fn u32(&mut self, t: u16, v: u32) {
        self.bytes(t, &v.to_be_bytes());
    }

    fn xor_addr(&mut self, t: u16, addr: SocketAddr) {
        let port = addr.port() ^ (MAGIC >> 16) as u16;
        let mut v = vec![0u8];
        match addr.ip() {
            IpAddr::V4(ip) => {
                v.push(1);
                v.extend_from_slice(&port.to_be_bytes());
                v.extend_from_slice(&(u32::from(ip) ^ MAGIC).to_be_bytes());
            }
            IpAddr::V6(ip) => {
                v.push(2);
                v.extend_from_slice(&port.to_be_bytes());
                let key = xor_key(&self.tid);
                v.extend(ip.octets().iter().zip(key).map(|(a, b)| a ^ b));
            }
        }
        self.bytes(t, &v);
    }
}
