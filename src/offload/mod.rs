//! The kernel fast path for channels: tern's eBPF program (`channel.bpf.c`) on the TC
//! ingress hook, and on the XDP hook where the driver runs XDP itself, relays
//! ChannelData of UDP clients without a trip through user space, and the engine is its
//! control plane (see `tern_core::kernel`).
//!
//! The program is attached with TCX and XDP links (Linux 6.6 and later), which belong to
//! this process: nothing is pinned, so when tern exits, or crashes, the program and its
//! maps go with it and no stale channel outlives the process that vouched for it.

mod maps;

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use crate::config::{OffloadMode, Settings};
use crate::core::{KernelChannel, KernelRelayed, Traffic};
#[cfg(tern_offload)]
use crate::error_text::with_causes;
use maps::{ClientKey, ClientRoute, PeerKey, PeerRoute};

#[derive(Debug, thiserror::Error)]
pub enum OffloadError {
    #[error("this binary was built without it (clang was not found at build time)")]
    NotBuilt,
    #[error("it needs Linux 6.6 or later (TCX links, which die with the process): {0}")]
    OldKernel(String),
    #[error(
        "no interface holds a listener or relay address (loopback is never offloaded); set relay.offload_interfaces"
    )]
    NoInterface,
    #[error(
        "it needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN: run as root, or under systemd \
         add deploy/systemd/offload.conf as a drop-in"
    )]
    NoPermission,
    #[error("loading the eBPF program: {0}")]
    Load(String),
    #[error("attaching to {interface}: {reason}")]
    Attach { interface: String, reason: String },
    /// `relay.offload_xdp = "on"` could not be honoured: fatal whatever `relay.offload`
    /// says, since the operator asked for XDP by name.
    #[error("XDP on {interface} (relay.offload_xdp = \"on\"): {reason}")]
    Xdp { interface: String, reason: String },
}

/// What the kernel relayed since start, and the channels it holds now.
#[derive(Debug, Clone, Copy, Default)]
pub struct Totals {
    pub channels: usize,
    /// Per hook of [`HOOKS`].
    pub relayed: [Relayed; HOOKS.len()],
    /// Per reason of [`FALLBACKS`].
    pub fallbacks: [u64; FALLBACKS.len()],
}

/// What one hook relayed each way.
#[derive(Debug, Clone, Copy, Default)]
pub struct Relayed {
    pub to_peer_packets: u64,
    pub to_peer_bytes: u64,
    pub to_client_packets: u64,
    pub to_client_bytes: u64,
}

/// The hooks the program runs on, in the order of its counters.
pub const HOOKS: [&str; 2] = ["tc", "xdp"];

/// Why channel data went to user space: the program's reasons, one per slot of its
/// `stats` map in order, then "map_full" (a channel the maps had no room for).
pub const FALLBACKS: [&str; maps::PROGRAM_FALLBACKS + 1] = [
    "expired", "unheard", "too_big", "framing", "failed", "map_full",
];

/// The loaded and attached program and its maps, shared by the workers.
pub struct Offload {
    maps: Mutex<Maps>,
    /// The program's per-CPU counters, read for the metrics without the maps' lock.
    stats: aya::maps::PerCpuArray<aya::maps::MapData, u64>,
    channels: AtomicUsize,
    map_full: AtomicU64,
}

struct Maps {
    clients: aya::maps::HashMap<aya::maps::MapData, ClientKey, ClientRoute>,
    peers: aya::maps::HashMap<aya::maps::MapData, PeerKey, PeerRoute>,
    /// Owns the program and its links: dropping it detaches the program.
    _program: aya::Ebpf,
}

impl Offload {
    /// Starts the fast path as `relay.offload` says, on `interfaces`. `Ok(None)`:
    /// relaying stays in user space (the reason is logged); an error only when
    /// `relay.offload = "on"`.
    pub fn start(
        settings: &Settings,
        interfaces: Vec<String>,
    ) -> Result<Option<Offload>, OffloadError> {
        let relay = &settings.relay;
        if relay.offload == OffloadMode::Off {
            tracing::info!(
                "kernel fast path off (relay.offload = \"off\"): relaying in user space"
            );
            return Ok(None);
        }
        match load(&interfaces, relay.offload_channels, relay.offload_xdp) {
            Ok(Loaded { maps, stats, xdp }) => {
                for (interface, reason) in &xdp.skipped {
                    tracing::info!("kernel fast path: no XDP on {interface} ({reason}), TC there");
                }
                tracing::info!(
                    interfaces = ?interfaces,
                    xdp = ?xdp.attached,
                    channels = relay.offload_channels,
                    "kernel fast path on: channels of UDP clients are relayed by eBPF on TC ingress, and on XDP where listed"
                );
                Ok(Some(Offload {
                    maps: Mutex::new(maps),
                    stats,
                    channels: AtomicUsize::new(0),
                    map_full: AtomicU64::new(0),
                }))
            }
            Err(e)
                if relay.offload == OffloadMode::Auto && !matches!(e, OffloadError::Xdp { .. }) =>
            {
                tracing::info!("kernel fast path unavailable, relaying in user space: {e}");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Lets the kernel relay `ch` (the engine offers only UDP clients' channels) until
    /// `until`, or moves its deadline, keeping its counts. False when it cannot: mixed
    /// families, or no room.
    pub fn install(&self, ch: &KernelChannel, until: Instant) -> bool {
        let Some((ckey, mut croute, pkey, mut proute)) = maps::entries(ch) else {
            return false;
        };
        let deadline = monotonic_ns(until);
        let mut maps = self.lock_maps();
        // A refresh keeps what the program counted and learnt.
        let old = maps.clients.get(&ckey, 0).ok();
        if let Some(old) = old {
            (croute.packets, croute.bytes, croute.to_peer) = (old.packets, old.bytes, old.to_peer);
        }
        if let Ok(old) = maps.peers.get(&pkey, 0) {
            (proute.packets, proute.bytes, proute.to_client) =
                (old.packets, old.bytes, old.to_client);
        }
        croute.expires_ns = deadline;
        proute.expires_ns = deadline;
        let installed = maps.clients.insert(ckey, croute, 0).is_ok()
            && maps.peers.insert(pkey, proute, 0).is_ok();
        if !installed {
            let _ = maps.clients.remove(&ckey);
            let _ = maps.peers.remove(&pkey);
            self.map_full.fetch_add(1, Ordering::Relaxed);
            if old.is_some() {
                self.channels.fetch_sub(1, Ordering::Relaxed);
            }
        } else if old.is_none() {
            self.channels.fetch_add(1, Ordering::Relaxed);
        }
        installed
    }

    /// Stops the kernel relaying `ch`; returns what it relayed on it.
    pub fn withdraw(&self, ch: &KernelChannel) -> KernelRelayed {
        let Some((ckey, _, pkey, _)) = maps::entries(ch) else {
            return KernelRelayed::default();
        };
        let mut maps = self.lock_maps();
        let to_peer = maps.clients.get(&ckey, 0).ok();
        let to_client = maps.peers.get(&pkey, 0).unwrap_or_default();
        let _ = maps.clients.remove(&ckey);
        let _ = maps.peers.remove(&pkey);
        if to_peer.is_some() {
            self.channels.fetch_sub(1, Ordering::Relaxed);
        }
        channel_counters(&to_peer.unwrap_or_default(), &to_client)
    }

    /// What the kernel relayed on `ch` so far.
    pub fn relayed(&self, ch: &KernelChannel) -> KernelRelayed {
        let Some((ckey, _, pkey, _)) = maps::entries(ch) else {
            return KernelRelayed::default();
        };
        let maps = self.lock_maps();
        let to_peer = maps.clients.get(&ckey, 0).unwrap_or_default();
        let to_client = maps.peers.get(&pkey, 0).unwrap_or_default();
        channel_counters(&to_peer, &to_client)
    }

    /// Totals for the metrics, from the program's per-CPU counters.
    pub fn totals(&self) -> Totals {
        let stat = |slot: u32| {
            self.stats
                .get(&slot, 0)
                .map_or(0, |per_cpu| per_cpu.iter().sum::<u64>())
        };
        let mut fallbacks = [0; FALLBACKS.len()];
        for (slot, count) in (0u32..).zip(&mut fallbacks[..maps::PROGRAM_FALLBACKS]) {
            *count = stat(slot);
        }
        fallbacks[maps::PROGRAM_FALLBACKS] = self.map_full.load(Ordering::Relaxed);
        let hook = |n: u32| {
            let at = n * maps::HOOK_STATS;
            Relayed {
                to_peer_packets: stat(at + maps::TO_PEER_PACKETS),
                to_peer_bytes: stat(at + maps::TO_PEER_BYTES),
                to_client_packets: stat(at + maps::TO_CLIENT_PACKETS),
                to_client_bytes: stat(at + maps::TO_CLIENT_BYTES),
            }
        };
        Totals {
            channels: self.channels.load(Ordering::Relaxed),
            relayed: [hook(0), hook(1)],
            fallbacks,
        }
    }

    fn lock_maps(&self) -> std::sync::MutexGuard<'_, Maps> {
        self.maps.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The CLOCK_MONOTONIC nanoseconds (the program's clock, `bpf_ktime_get_ns`) of `at`.
fn monotonic_ns(at: Instant) -> u64 {
    let now = Instant::now();
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write to; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let now_ns = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
    match at.checked_duration_since(now) {
        Some(ahead) => now_ns.saturating_add(ahead.as_nanos() as u64),
        None => now_ns.saturating_sub(now.duration_since(at).as_nanos() as u64),
    }
}

/// Whether this process holds the capabilities to load and attach the program:
/// CAP_NET_ADMIN, and CAP_BPF with CAP_PERFMON (the verifier's Spectre hardening
/// refuses the program without it), or CAP_SYS_ADMIN, which covers those two.
#[cfg(tern_offload)]
fn may_load_programs() -> bool {
    const CAP_NET_ADMIN: u32 = 12;
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    let has = |cap: u32| effective & (1 << cap) != 0;
    has(CAP_NET_ADMIN) && ((has(CAP_BPF) && has(CAP_PERFMON)) || has(CAP_SYS_ADMIN))
}

/// The attached program: its maps, its counters apart (read without the maps' lock),
/// and where it runs on XDP too.
struct Loaded {
    maps: Maps,
    stats: aya::maps::PerCpuArray<aya::maps::MapData, u64>,
    xdp: XdpAttachments,
}

/// The interfaces the XDP hook runs on, and those it does not, with the reason.
#[derive(Default)]
struct XdpAttachments {
    attached: Vec<String>,
    skipped: Vec<(String, String)>,
}

#[cfg(not(tern_offload))]
fn load(_interfaces: &[String], _channels: u32, _xdp: OffloadMode) -> Result<Loaded, OffloadError> {
    Err(OffloadError::NotBuilt)
}

#[cfg(tern_offload)]
fn load(interfaces: &[String], channels: u32, xdp: OffloadMode) -> Result<Loaded, OffloadError> {
    use aya::programs::tc::TcAttachOptions;
    use aya::programs::{LinkOrder, SchedClassifier, TcAttachType};
    use aya::util::KernelVersion;

    static PROGRAM: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/channel.bpf.o"));

    let version = KernelVersion::current().map_err(|e| OffloadError::OldKernel(e.to_string()))?;
    if version < KernelVersion::new(6, 6, 0) {
        return Err(OffloadError::OldKernel(format!("running {version:?}")));
    }
    if interfaces.is_empty() {
        return Err(OffloadError::NoInterface);
    }
    if !may_load_programs() {
        return Err(OffloadError::NoPermission);
    }
    let load_error = |e: &dyn std::error::Error| OffloadError::Load(with_causes(e));
    let mut ebpf = aya::EbpfLoader::new()
        .map_max_entries("clients", channels)
        .map_max_entries("peers", channels)
        .load(PROGRAM)
        .map_err(|e| load_error(&e))?;
    let program: &mut SchedClassifier = ebpf
        .program_mut("tern_channels")
        .ok_or_else(|| OffloadError::Load("the object has no tern_channels program".into()))?
        .try_into()
        .map_err(|e| load_error(&e))?;
    program.load().map_err(|e| load_error(&e))?;
    for interface in interfaces {
        let options = TcAttachOptions::TcxOrder(LinkOrder::default());
        program
            .attach_with_options(interface, TcAttachType::Ingress, options)
            .map_err(|e| OffloadError::Attach {
                interface: interface.clone(),
                reason: with_causes(&e),
            })?;
    }
    let xdp = attach_xdp(&mut ebpf, interfaces, xdp)?;
    let mut take = |name: &str| {
        ebpf.take_map(name)
            .ok_or_else(|| OffloadError::Load(format!("the object has no {name} map")))
    };
    let (clients, peers, stats) = (take("clients")?, take("peers")?, take("stats")?);
    let maps = Maps {
        clients: clients.try_into().map_err(|e| load_error(&e))?,
        peers: peers.try_into().map_err(|e| load_error(&e))?,
        _program: ebpf,
    };
    Ok(Loaded {
        maps,
        stats: stats.try_into().map_err(|e| load_error(&e))?,
        xdp,
    })
}

/// Attaches the XDP entry point in native (driver) mode as `relay.offload_xdp` says:
/// "auto" on interfaces backed by a device whose driver accepts it, "on" on all of them
/// or not at all. Generic (skb) XDP is never used: it runs after the socket buffer is
/// built, which is what TC already does.
#[cfg(tern_offload)]
fn attach_xdp(
    ebpf: &mut aya::Ebpf,
    interfaces: &[String],
    mode: OffloadMode,
) -> Result<XdpAttachments, OffloadError> {
    use aya::programs::{Xdp, XdpMode};

    let mut done = XdpAttachments::default();
    let candidates: Vec<&String> = match mode {
        OffloadMode::Off => return Ok(done),
        OffloadMode::On => interfaces.iter().collect(),
        OffloadMode::Auto => interfaces
            .iter()
            .filter(|interface| {
                let device = std::path::Path::new("/sys/class/net")
                    .join(interface)
                    .join("device");
                let backed = device.exists();
                if !backed {
                    let reason =
                        "not backed by a device: a bridge, veth or other virtual interface";
                    done.skipped.push(((*interface).clone(), reason.into()));
                }
                backed
            })
            .collect(),
    };
    // A failure is the interface's in "auto" (TC stays), fatal in "on".
    let mut failed = |interface: &String, reason: String| {
        if mode == OffloadMode::On {
            return Err(OffloadError::Xdp {
                interface: interface.clone(),
                reason,
            });
        }
        done.skipped.push((interface.clone(), reason));
        Ok(())
    };
    if candidates.is_empty() {
        return Ok(done);
    }
    let program = ebpf
        .program_mut("tern_channels_xdp")
        .ok_or_else(|| "the object has no tern_channels_xdp program".to_string())
        .and_then(|program| {
            let program: &mut Xdp = program.try_into().map_err(|e| with_causes(&e))?;
            program.load().map_err(|e| with_causes(&e))?;
            Ok(program)
        });
    let program = match program {
        Ok(program) => program,
        Err(reason) => {
            for interface in candidates {
                failed(interface, format!("loading the XDP program: {reason}"))?;
            }
            return Ok(done);
        }
    };
    let mut attached = Vec::new();
    for interface in candidates {
        match program.attach(interface, XdpMode::Driver) {
            Ok(_) => attached.push(interface.clone()),
            Err(e) => failed(interface, with_causes(&e))?,
        }
    }
    done.attached = attached;
    Ok(done)
}

/// A channel's counters, from its two map entries.
fn channel_counters(to_peer: &maps::ClientRoute, to_client: &maps::PeerRoute) -> KernelRelayed {
    KernelRelayed {
        to_peer: Traffic {
            packets: to_peer.packets,
            bytes: to_peer.bytes,
        },
        to_client: Traffic {
            packets: to_client.packets,
            bytes: to_client.bytes,
        },
    }
}
