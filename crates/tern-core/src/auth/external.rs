//! Answers from the operator's own authentication service (`auth.webhook`), shared by
//! the workers: the long-term key of a username tern does not know itself, or a
//! refusal, each kept for a while so that a client's next requests (and its other
//! allocations) cost no lookup.
//!
//! The service is asked by the driver, never here: a username with no fresh answer
//! makes the engine hand the request to the driver, which asks, stores the answer with
//! [`ExternalKeys::store`] (or the failure with [`ExternalKeys::failed`]) and gives the
//! request back. The cache is bounded; past its size the entries nearest their end
//! make room.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::key::LongTermKey;

/// What the service said of a username.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExternalAnswer {
    /// Boxed: a key with its prepared HMAC is large, and most cached answers may be
    /// refusals.
    Key(Box<LongTermKey>),
    Refused,
}

/// How long answers are kept, and what a failed lookup leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachePolicy {
    /// How long a key is used before the service is asked again.
    pub key_ttl: Duration,
    /// How long a refusal is remembered.
    pub refusal_ttl: Duration,
    /// How long a failed lookup (no answer in time, an error, nonsense) stands as a
    /// refusal before the service is asked again.
    pub error_ttl: Duration,
    /// While the service fails, a key this far past its time is still used (0: never:
    /// fail closed).
    pub stale_ttl: Duration,
}

#[derive(Debug)]
struct Entry {
    answer: ExternalAnswer,
    /// Used until then.
    fresh_until: Instant,
    /// Kept until then (for a key: to stand in while the service fails).
    keep_until: Instant,
}

/// The cache of answers, by username.
#[derive(Debug)]
pub struct ExternalKeys {
    entries: Mutex<HashMap<String, Entry>>,
    capacity: usize,
    policy: Mutex<CachePolicy>,
}

impl ExternalKeys {
    /// A cache of at most `capacity` usernames (at least one).
    pub fn new(capacity: usize, policy: CachePolicy) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
            policy: Mutex::new(policy),
        }
    }

    /// Applies reloaded lifetimes to answers stored from now on.
    pub fn set_policy(&self, policy: CachePolicy) {
        *lock(&self.policy) = policy;
    }

    /// The answer for `username` that is still fresh at `now`, if any.
    pub fn lookup(&self, username: &str, now: Instant) -> Option<ExternalAnswer> {
        let entries = lock(&self.entries);
        let entry = entries.get(username)?;
        (now < entry.fresh_until).then(|| entry.answer.clone())
    }

    /// Keeps what the service answered for `username` at `now`.
    pub fn store(&self, username: &str, answer: ExternalAnswer, now: Instant) {
        let policy = *lock(&self.policy);
        let (fresh, keep) = match answer {
            ExternalAnswer::Key(_) => (policy.key_ttl, policy.key_ttl + policy.stale_ttl),
            ExternalAnswer::Refused => (policy.refusal_ttl, policy.refusal_ttl),
        };
        self.put(
            username,
            Entry {
                answer,
                fresh_until: now + fresh,
                keep_until: now + keep,
            },
            now,
        );
    }

    /// The service could not answer for `username` at `now`. A key it gave before that
    /// is within its stale time stays in use for the error time; otherwise the username
    /// is refused for that long. Either way the service is asked again after it.
    pub fn failed(&self, username: &str, now: Instant) {
        let policy = *lock(&self.policy);
        let mut entries = lock(&self.entries);
        if let Some(entry) = entries.get_mut(username)
            && matches!(entry.answer, ExternalAnswer::Key(_))
            && now < entry.keep_until
        {
            entry.fresh_until = (now + policy.error_ttl).min(entry.keep_until);
            return;
        }
        drop(entries);
        let until = now + policy.error_ttl;
        let entry = Entry {
            answer: ExternalAnswer::Refused,
            fresh_until: until,
            keep_until: until,
        };
        self.put(username, entry, now);
    }

    /// Usernames held (fresh or kept for failures).
    pub fn len(&self) -> usize {
        lock(&self.entries).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn put(&self, username: &str, entry: Entry, now: Instant) {
        let mut entries = lock(&self.entries);
        if entries.len() >= self.capacity && !entries.contains_key(username) {
            entries.retain(|_, e| now < e.keep_until);
            // Still full: the entry nearest its end makes room (one scan, only when
            // the cache is full of live answers).
            if entries.len() >= self.capacity
                && let Some(victim) = entries
                    .iter()
                    .min_by_key(|(_, e)| e.keep_until)
                    .map(|(name, _)| name.clone())
            {
                entries.remove(&victim);
            }
        }
        entries.insert(username.to_string(), entry);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn policy(stale: u64) -> CachePolicy {
        CachePolicy {
            key_ttl: 60 * SEC,
            refusal_ttl: 10 * SEC,
            error_ttl: 5 * SEC,
            stale_ttl: Duration::from_secs(stale),
        }
    }

    fn key() -> ExternalAnswer {
        ExternalAnswer::Key(Box::new(LongTermKey::derive("carol", "r", "pw")))
    }

    #[test]
    fn answers_are_used_for_their_time() {
        let t0 = Instant::now();
        let cache = ExternalKeys::new(10, policy(0));
        assert_eq!(cache.lookup("carol", t0), None);
        cache.store("carol", key(), t0);
        cache.store("mallory", ExternalAnswer::Refused, t0);
        assert_eq!(cache.lookup("carol", t0 + 59 * SEC), Some(key()));
        assert_eq!(cache.lookup("carol", t0 + 60 * SEC), None);
        assert_eq!(
            cache.lookup("mallory", t0 + 9 * SEC),
            Some(ExternalAnswer::Refused)
        );
        assert_eq!(cache.lookup("mallory", t0 + 10 * SEC), None);
    }

    #[test]
    fn a_failure_refuses_for_a_while_unless_a_stale_key_may_stand_in() {
        let t0 = Instant::now();
        let closed = ExternalKeys::new(10, policy(0));
        closed.store("carol", key(), t0);
        closed.failed("carol", t0 + 61 * SEC);
        assert_eq!(
            closed.lookup("carol", t0 + 62 * SEC),
            Some(ExternalAnswer::Refused)
        );
        assert_eq!(closed.lookup("carol", t0 + 66 * SEC), None, "asked again");

        let stale = ExternalKeys::new(10, policy(3600));
        stale.store("carol", key(), t0);
        stale.failed("carol", t0 + 61 * SEC);
        assert_eq!(stale.lookup("carol", t0 + 62 * SEC), Some(key()));
        assert_eq!(stale.lookup("carol", t0 + 66 * SEC), None, "asked again");
        // Past the stale time the key goes: a failure refuses.
        stale.failed("carol", t0 + 3700 * SEC);
        assert_eq!(
            stale.lookup("carol", t0 + 3701 * SEC),
            Some(ExternalAnswer::Refused)
        );
        // A refusal never stands in for a key.
        stale.store("dave", ExternalAnswer::Refused, t0);
        stale.failed("dave", t0 + 11 * SEC);
        assert_eq!(
            stale.lookup("dave", t0 + 12 * SEC),
            Some(ExternalAnswer::Refused)
        );
    }

    #[test]
    fn the_cache_is_bounded() {
        let t0 = Instant::now();
        let cache = ExternalKeys::new(3, policy(0));
        for (i, name) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            cache.store(name, key(), t0 + i as u32 * SEC);
        }
        assert_eq!(cache.len(), 3);
        // The oldest answers made room.
        assert_eq!(cache.lookup("a", t0 + 5 * SEC), None);
        assert_eq!(cache.lookup("e", t0 + 5 * SEC), Some(key()));
        // Expired entries go first.
        cache.store("f", key(), t0 + 100 * SEC);
        assert_eq!(cache.len(), 1);
    }
}
