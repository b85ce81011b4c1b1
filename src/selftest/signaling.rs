//! Signaling for the call room: a WebSocket per member, two members per room, and the
//! server passing each member's messages (SDP, ICE candidates) to the other verbatim.
//!
//! It is deliberately useless as a general relay for other apps: the token is needed to
//! connect, rooms hold two members and close after `room_ttl`, messages are size- and
//! rate-limited per member, nothing is stored, and a member that stops reading loses
//! messages rather than growing a queue, and is dropped when a write to it stalls.
//! The server pings every member, so one that vanished without closing stops
//! answering and the listener's idle timeout ends it.

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

use crate::metrics::Metrics;
use crate::net::lifecycle::Lifecycle;

/// Messages waiting for one member's socket; past it, messages to that member are dropped.
const MEMBER_QUEUE: usize = 64;

/// Longest a write to a member's socket may take. A member that stops reading fills
/// its TCP buffers and then stalls every write; it is dropped and leaves its room.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest time between the server's pings to a member.
const PING_INTERVAL: Duration = Duration::from_secs(15);

/// How often members are pinged when connections close after `idle_timeout` without
/// a byte from the client: often enough that a live member's pongs (browsers answer
/// pings by themselves) keep it open, at most every [`PING_INTERVAL`].
pub fn ping_interval(idle_timeout: Duration) -> Duration {
    PING_INTERVAL.min(idle_timeout / 2)
}

/// WebSocket close codes (RFC 6455 §7.4.1).
const CLOSE_POLICY: u16 = 1008;
const CLOSE_TOO_BIG: u16 = 1009;
const CLOSE_GOING_AWAY: u16 = 1001;

/// The bounds a room lives within.
#[derive(Debug, Clone, Copy)]
pub struct RoomLimits {
    pub ttl: Duration,
    pub max_rooms: usize,
    pub max_message: usize,
    pub messages_per_second: u32,
    pub message_burst: u32,
    /// How often each member is pinged.
    pub ping_interval: Duration,
}

/// The open rooms, by name.
pub struct Rooms {
    rooms: Mutex<HashMap<String, Room>>,
    limits: RoomLimits,
    metrics: Arc<Metrics>,
}

struct Room {
    opened: Instant,
    members: Vec<Member>,
}

struct Member {
    id: u64,
    /// Text for the member's socket.
    outbox: mpsc::Sender<Utf8Bytes>,
}

/// Why a member could not join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinRefused {
    RoomFull,
    TooManyRooms,
}

impl JoinRefused {
    fn reason(self) -> &'static str {
        match self {
            JoinRefused::RoomFull => "room full",
            JoinRefused::TooManyRooms => "too many rooms open on this server",
        }
    }
}

/// A member's place in a room, from joining until its socket ends.
struct Membership {
    id: u64,
    room: String,
    first: bool,
    closes_at: Instant,
    inbox: mpsc::Receiver<Utf8Bytes>,
}

/// A room name: 1 to 64 of A-Z a-z 0-9 - _.
pub fn valid_room_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Rooms {
    pub fn new(limits: RoomLimits, metrics: Arc<Metrics>) -> Self {
        Self {
            rooms: Mutex::new(HashMap::new()),
            limits,
            metrics,
        }
    }

    pub fn limits(&self) -> RoomLimits {
        self.limits
    }

    /// Rooms are plain data updated in one step each, so a panic elsewhere cannot
    /// leave them half-changed: poisoning is ignored.
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Room>> {
        self.rooms.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn join(&self, name: &str, id: u64) -> Result<Membership, JoinRefused> {
        let mut rooms = self.lock();
        if !rooms.contains_key(name) && rooms.len() >= self.limits.max_rooms {
            return Err(JoinRefused::TooManyRooms);
        }
        let room = rooms.entry(name.to_string()).or_insert_with(|| Room {
            opened: Instant::now(),
            members: Vec::with_capacity(2),
        });
        if room.members.len() >= 2 {
            return Err(JoinRefused::RoomFull);
        }
        let (outbox, inbox) = mpsc::channel(MEMBER_QUEUE);
        let first = room.members.is_empty();
        if let Some(other) = room.members.first() {
            let _ = other.outbox.try_send(r#"{"type":"peer-joined"}"#.into());
        }
        room.members.push(Member { id, outbox });
        let closes_at = room.opened + self.limits.ttl;
        self.metrics.selftest_rooms.set(rooms.len() as i64);
        Ok(Membership {
            id,
            room: name.to_string(),
            first,
            closes_at,
            inbox,
        })
    }

    /// Passes `text` from member `from` to the other member of `room`, if any.
    fn forward(&self, room: &str, from: u64, text: Utf8Bytes) {
        let rooms = self.lock();
        let other = rooms
            .get(room)
            .and_then(|r| r.members.iter().find(|m| m.id != from));
        if let Some(other) = other {
            if other.outbox.try_send(text).is_ok() {
                self.metrics.selftest_signaling_messages.inc();
            } else {
                self.metrics.selftest_refused("queue_full");
            }
        }
    }

    fn leave(&self, room: &str, id: u64) {
        let mut rooms = self.lock();
        if let Some(r) = rooms.get_mut(room) {
            r.members.retain(|m| m.id != id);
            match r.members.first() {
                None => {
                    rooms.remove(room);
                }
                Some(other) => {
                    let _ = other.outbox.try_send(r#"{"type":"peer-left"}"#.into());
                }
            }
        }
        self.metrics.selftest_rooms.set(rooms.len() as i64);
    }
}

/// A token bucket for one member's messages.
struct MessageBudget {
    tokens: f64,
    per_second: f64,
    burst: f64,
    last: Instant,
}

impl MessageBudget {
    fn new(per_second: u32, burst: u32) -> Self {
        Self {
            tokens: f64::from(burst),
            per_second: f64::from(per_second),
            burst: f64::from(burst),
            last: Instant::now(),
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Runs one member's socket until it closes, the room expires or the server stops.
pub async fn run_member(
    mut socket: WebSocket,
    rooms: Arc<Rooms>,
    room: String,
    id: u64,
    mut lifecycle: watch::Receiver<Lifecycle>,
) {
    let mut member = match rooms.join(&room, id) {
        Ok(member) => member,
        Err(refused) => {
            rooms.metrics.selftest_refused(match refused {
                JoinRefused::RoomFull => "room_full",
                JoinRefused::TooManyRooms => "too_many_rooms",
            });
            let text = format!(r#"{{"type":"error","reason":"{}"}}"#, refused.reason());
            if send(&mut socket, Message::Text(text.into()), &rooms.metrics).await {
                send(
                    &mut socket,
                    close(CLOSE_POLICY, refused.reason()),
                    &rooms.metrics,
                )
                .await;
            }
            return;
        }
    };
    let role = if member.first { "first" } else { "second" };
    let welcome = format!(r#"{{"type":"welcome","role":"{role}"}}"#);
    if send(&mut socket, Message::Text(welcome.into()), &rooms.metrics).await {
        serve_member(&mut socket, &rooms, &mut member, &mut lifecycle).await;
    }
    rooms.leave(&member.room, member.id);
}

async fn serve_member(
    socket: &mut WebSocket,
    rooms: &Rooms,
    member: &mut Membership,
    lifecycle: &mut watch::Receiver<Lifecycle>,
) {
    let limits = rooms.limits();
    let mut budget = MessageBudget::new(limits.messages_per_second, limits.message_burst);
    let expiry = tokio::time::sleep_until(member.closes_at.into());
    tokio::pin!(expiry);
    let first_ping = tokio::time::Instant::now() + limits.ping_interval;
    let mut ping = tokio::time::interval_at(first_ping, limits.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let metrics = &rooms.metrics;
    // Every write is bounded by SEND_TIMEOUT, so a member that stopped reading cannot
    // hold this loop (and with it the room's expiry and the server's shutdown).
    loop {
        tokio::select! {
            incoming = socket.recv() => {
                let text = match incoming {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Binary(_))) => {
                        send(socket, close(CLOSE_POLICY, "text messages only"), metrics).await;
                        return;
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    // Closed, or a protocol error (including a message past twice the
                    // limit, which the WebSocket layer refuses itself).
                    Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                };
                if text.len() > limits.max_message {
                    rooms.metrics.selftest_refused("too_big");
                    send(socket, close(CLOSE_TOO_BIG, "message too big"), metrics).await;
                    return;
                }
                if !budget.take(Instant::now()) {
                    rooms.metrics.selftest_refused("rate");
                    send(socket, close(CLOSE_POLICY, "too many messages"), metrics).await;
                    return;
                }
                rooms.forward(&member.room, member.id, text);
            }
            outgoing = member.inbox.recv() => {
                let Some(text) = outgoing else {
                    return;
                };
                if !send(socket, Message::Text(text), metrics).await {
                    return;
                }
            }
            _ = ping.tick() => {
                if !send(socket, Message::Ping(Default::default()), metrics).await {
                    return;
                }
            }
            () = &mut expiry => {
                let text = r#"{"type":"error","reason":"room expired"}"#;
                if send(socket, Message::Text(text.into()), metrics).await {
                    send(socket, close(CLOSE_POLICY, "room expired"), metrics).await;
                }
                return;
            }
            changed = lifecycle.changed() => {
                if changed.is_err() || *lifecycle.borrow() == Lifecycle::Stopping {
                    send(socket, close(CLOSE_GOING_AWAY, "server stopping"), metrics).await;
                    return;
                }
            }
        }
    }
}

/// Sends `message` to a member within [`SEND_TIMEOUT`]: false when the socket failed
/// or the member stopped reading, and the member must go.
async fn send(socket: &mut WebSocket, message: Message, metrics: &Metrics) -> bool {
    match tokio::time::timeout(SEND_TIMEOUT, socket.send(message)).await {
        Ok(sent) => sent.is_ok(),
        Err(_) => {
            metrics.selftest_refused("send_timeout");
            false
        }
    }
}

fn close(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rooms(max_rooms: usize) -> Rooms {
        let limits = RoomLimits {
            ttl: Duration::from_secs(60),
            max_rooms,
            max_message: 1024,
            messages_per_second: 1,
            message_burst: 2,
            ping_interval: Duration::from_secs(15),
        };
        Rooms::new(limits, Arc::new(Metrics::new()))
    }

    #[test]
    fn a_room_takes_two_members_and_is_gone_when_both_leave() {
        let rooms = rooms(10);
        let a = rooms.join("r", 1).unwrap();
        let b = rooms.join("r", 2).unwrap();
        assert!(a.first && !b.first);
        assert_eq!(rooms.join("r", 3).err(), Some(JoinRefused::RoomFull));
        rooms.leave("r", 1);
        rooms.leave("r", 2);
        assert!(rooms.lock().is_empty());
        assert!(rooms.join("r", 4).unwrap().first);
    }

    #[test]
    fn rooms_are_bounded() {
        let rooms = rooms(2);
        rooms.join("a", 1).unwrap();
        rooms.join("b", 2).unwrap();
        assert_eq!(rooms.join("c", 3).err(), Some(JoinRefused::TooManyRooms));
        // Joining an existing room is still fine.
        rooms.join("a", 4).unwrap();
    }

    #[test]
    fn the_first_member_hears_of_the_second_and_of_its_leaving() {
        let rooms = rooms(10);
        let mut a = rooms.join("r", 1).unwrap();
        let _b = rooms.join("r", 2).unwrap();
        rooms.forward("r", 2, "hello".into());
        rooms.leave("r", 2);
        let texts: Vec<String> = std::iter::from_fn(|| a.inbox.try_recv().ok())
            .map(|t| t.to_string())
            .collect();
        assert_eq!(
            texts,
            [
                r#"{"type":"peer-joined"}"#,
                "hello",
                r#"{"type":"peer-left"}"#
            ]
        );
    }

    #[test]
    fn budget_refills_over_time_up_to_the_burst() {
        let mut budget = MessageBudget::new(1, 2);
        let t0 = budget.last;
        assert!(budget.take(t0) && budget.take(t0));
        assert!(!budget.take(t0));
        assert!(budget.take(t0 + Duration::from_secs(1)));
        assert!(!budget.take(t0 + Duration::from_secs(1)));
    }

    #[test]
    fn members_are_pinged_twice_per_idle_timeout_at_most_every_15_s() {
        let ping = |idle| ping_interval(Duration::from_secs(idle));
        assert_eq!(ping(30), Duration::from_secs(15));
        assert_eq!(ping(3600), Duration::from_secs(15));
        assert_eq!(ping(2), Duration::from_secs(1));
        assert_eq!(ping(1), Duration::from_millis(500));
    }

    #[test]
    fn room_names_are_restricted() {
        assert!(valid_room_name("team-42_b"));
        for bad in ["", "a b", "x/y", "é", &"a".repeat(65)] {
            assert!(!valid_room_name(bad), "{bad:?}");
        }
    }
}
