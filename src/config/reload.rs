//! Which keys a reload (SIGHUP) applies and which take a restart.
//!
//! One table classifies every key of the schema. The reload reads it to find what
//! changed, to keep restart-only keys at their running values (so nothing built from
//! them sees a value the server does not run with) and to name each of them in a
//! warning; `tern check-config` prints the restart-only ones. A test walks the schema
//! and fails on a key missing from the table, so a new key cannot be added without
//! deciding how a reload treats it.

use super::Settings;

/// How a reload treats a key.
#[derive(Clone, Copy)]
pub enum OnReload {
    /// The reloaded value applies to new requests and new connections; allocations and
    /// connections in progress keep going under what they started with.
    Applies,
    /// Bound into something built once at start (sockets, threads, the nonce key, the
    /// log output): a reload keeps the running value, which `keep` copies back into
    /// reloaded settings, and warns.
    Restart { keep: fn(&mut Settings, &Settings) },
}

/// One dotted key, e.g. `auth.unauthorized_burst`.
pub struct Key {
    pub name: &'static str,
    pub on_reload: OnReload,
    changed: fn(&Settings, &Settings) -> bool,
}

impl Key {
    pub fn needs_restart(&self) -> bool {
        matches!(self.on_reload, OnReload::Restart { .. })
    }
}

/// A table row: the name and the field it reads come from the same tokens, so they
/// cannot disagree.
macro_rules! key {
    (applies $section:ident . $field:ident) => {
        Key {
            name: concat!(stringify!($section), ".", stringify!($field)),
            on_reload: OnReload::Applies,
            changed: |old, new| old.$section.$field != new.$section.$field,
        }
    };
    (restart $section:ident . $field:ident) => {
        Key {
            name: concat!(stringify!($section), ".", stringify!($field)),
            on_reload: OnReload::Restart {
                keep: |new, running| new.$section.$field.clone_from(&running.$section.$field),
            },
            changed: |old, new| old.$section.$field != new.$section.$field,
        }
    };
}

/// Every key of the schema. `tls.cert` and `tls.key` apply (a new path is read for new
/// connections), but turning TLS on or off takes a restart: the listeners are bound
/// for it at start (see `serve::reload`).
pub static KEYS: &[Key] = &[
    key!(restart server.listen),
    key!(restart server.tls_listen),
    key!(restart server.dtls_listen),
    key!(restart server.udp),
    key!(restart server.tcp),
    key!(restart server.workers),
    key!(restart server.nat_discovery),
    key!(applies server.drain_timeout),
    key!(applies server.realm),
    key!(applies server.software),
    key!(applies server.proxy_protocol_from),
    key!(restart relay.ips),
    key!(restart relay.external_ips),
    key!(restart relay.ports),
    key!(applies relay.default_lifetime),
    key!(applies relay.max_lifetime),
    key!(applies relay.permission_lifetime),
    key!(applies relay.channel_lifetime),
    key!(applies relay.tcp_allocations),
    key!(restart relay.offload),
    key!(restart relay.offload_interfaces),
    key!(restart relay.offload_channels),
    key!(restart relay.offload_xdp),
    key!(applies auth.users),
    key!(applies auth.secrets),
    key!(applies auth.rest_separator),
    key!(applies auth.allow_refresh_after_expiry),
    key!(applies auth.nonce_lifetime),
    key!(applies auth.rfc8489),
    key!(restart auth.nonce_key),
    key!(applies auth.unauthorized_per_second),
    key!(applies auth.unauthorized_burst),
    key!(restart auth.webhook),
    key!(applies peers.allowed),
    key!(applies peers.denied),
    key!(applies tls.cert),
    key!(applies tls.key),
    key!(restart tls.auto_detect),
    key!(applies tls.handshake_timeout),
    key!(applies front.upstream),
    key!(applies front.upstream_proxy_protocol),
    key!(applies front.turn_names),
    key!(applies front.connect_timeout),
    key!(applies front.idle_timeout),
    key!(restart tls.acme),
    key!(restart admin.listen),
    key!(restart admin.token),
    key!(restart selftest.listen),
    key!(restart selftest.token),
    key!(restart selftest.public_host),
    key!(restart selftest.credential_lifetime),
    key!(restart selftest.room_ttl),
    key!(restart selftest.max_rooms),
    key!(restart selftest.max_message),
    key!(restart selftest.messages_per_second),
    key!(restart selftest.message_burst),
    key!(restart selftest.max_connections),
    key!(restart selftest.idle_timeout),
    key!(restart cluster.redis_url),
    key!(restart cluster.node_id),
    key!(restart cluster.advertise),
    key!(restart cluster.advertise_tls),
    key!(restart cluster.key_prefix),
    key!(restart cluster.heartbeat_interval),
    key!(restart cluster.node_ttl),
    key!(restart cluster.redirect_above_allocations),
    key!(restart cluster.redirect_above_mbps),
    key!(restart cluster.realm_allocations),
    key!(restart usage.redis_max_len),
    key!(restart usage.queue),
    key!(restart usage.webhook_url),
    key!(restart usage.webhook_token),
    key!(restart usage.webhook_batch),
    key!(restart usage.webhook_interval),
    key!(restart usage.webhook_timeout),
    key!(applies bandwidth.allocation),
    key!(applies bandwidth.allocation_burst),
    key!(applies bandwidth.user),
    key!(applies bandwidth.user_burst),
    key!(applies bandwidth.server),
    key!(applies bandwidth.server_burst),
    key!(applies limits.total_allocations),
    key!(applies limits.user_allocations),
    key!(applies limits.permissions_per_allocation),
    key!(applies limits.channels_per_allocation),
    key!(restart limits.socket_buffer),
    key!(restart limits.relay_queue),
    key!(restart limits.rate_limit_slots),
    key!(applies limits.max_connections),
    key!(applies limits.max_connections_per_ip),
    key!(applies limits.connection_idle_timeout),
    key!(applies limits.max_dtls_handshakes),
    key!(applies limits.frame_timeout),
    key!(applies limits.max_frame),
    key!(applies limits.write_queue),
    key!(applies limits.tcp_connections_per_allocation),
    key!(applies limits.tcp_relay_buffer),
    key!(applies log.level),
    key!(restart log.format),
];

/// The keys that take a restart, in table order.
pub fn restart_only() -> impl Iterator<Item = &'static str> {
    KEYS.iter().filter(|k| k.needs_restart()).map(|k| k.name)
}

/// The keys whose values differ between `old` and `new`.
pub fn changed(old: &Settings, new: &Settings) -> Vec<&'static str> {
    KEYS.iter()
        .filter(|k| (k.changed)(old, new))
        .map(|k| k.name)
        .collect()
}

/// Puts the running value back into `reloaded` for every restart-only key that
/// differs, and returns those keys.
pub fn keep_restart_only(reloaded: &mut Settings, running: &Settings) -> Vec<&'static str> {
    let mut kept = Vec::new();
    for key in KEYS {
        if let OnReload::Restart { keep } = key.on_reload
            && (key.changed)(running, reloaded)
        {
            keep(reloaded, running);
            kept.push(key.name);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, Visitor};
    use std::cell::Cell;
    use std::collections::BTreeSet;

    /// A deserializer that walks down `path` (one field per nested struct) and records
    /// the field names of the struct found there. Whatever is not a struct (a number, a
    /// list, an option) answers with an error: that is a leaf, a key of the table.
    struct Probe<'a> {
        path: &'a [&'static str],
        fields: &'a Cell<Option<&'static [&'static str]>>,
    }

    #[derive(Debug)]
    struct Leaf;

    impl std::fmt::Display for Leaf {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("not a struct")
        }
    }

    impl std::error::Error for Leaf {}

    impl de::Error for Leaf {
        fn custom<T: std::fmt::Display>(_: T) -> Self {
            Leaf
        }
    }

    impl<'de> de::Deserializer<'de> for Probe<'_> {
        type Error = Leaf;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Leaf> {
            Err(Leaf)
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            visitor: V,
        ) -> Result<V::Value, Leaf> {
            let next = match self.path.split_first() {
                None => {
                    self.fields.set(Some(fields));
                    None
                }
                Some((field, rest)) => Some((
                    *field,
                    Probe {
                        path: rest,
                        fields: self.fields,
                    },
                )),
            };
            visitor.visit_map(OneField { next, value: None })
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }

    /// A map of at most one field, whose value is probed further.
    struct OneField<'a> {
        next: Option<(&'static str, Probe<'a>)>,
        value: Option<Probe<'a>>,
    }

    impl<'de> MapAccess<'de> for OneField<'_> {
        type Error = Leaf;

        fn next_key_seed<K: DeserializeSeed<'de>>(
            &mut self,
            seed: K,
        ) -> Result<Option<K::Value>, Leaf> {
            let Some((field, probe)) = self.next.take() else {
                return Ok(None);
            };
            self.value = Some(probe);
            seed.deserialize(field.into_deserializer()).map(Some)
        }

        fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Leaf> {
            seed.deserialize(self.value.take().ok_or(Leaf)?)
        }
    }

    /// Every dotted key under `path`, as the `Deserialize` implementations define them.
    fn schema_keys(path: &mut Vec<&'static str>, out: &mut BTreeSet<String>) {
        let fields = Cell::new(None);
        let _ = Settings::deserialize(Probe {
            path,
            fields: &fields,
        });
        match fields.get() {
            Some(names) => {
                for name in names {
                    path.push(name);
                    schema_keys(path, out);
                    path.pop();
                }
            }
            None => {
                out.insert(path.join("."));
            }
        }
    }

    #[test]
    fn every_key_of_the_schema_is_classified_once() {
        let mut schema = BTreeSet::new();
        schema_keys(&mut Vec::new(), &mut schema);
        // The walk itself must reach nested keys, or an empty table would pass.
        for known in ["server.listen", "auth.unauthorized_burst", "log.format"] {
            assert!(schema.contains(known), "{known} not found in {schema:?}");
        }
        let table: BTreeSet<String> = KEYS.iter().map(|k| k.name.to_string()).collect();
        assert_eq!(table.len(), KEYS.len(), "a key is in the table twice");
        let unclassified: Vec<_> = schema.difference(&table).collect();
        assert!(
            unclassified.is_empty(),
            "keys missing from config::reload::KEYS (decide whether a reload applies them): {unclassified:?}"
        );
        let unknown: Vec<_> = table.difference(&schema).collect();
        assert!(unknown.is_empty(), "not keys of the schema: {unknown:?}");
    }

    #[test]
    fn restart_only_keys_keep_their_running_values() {
        let running = Settings::default();
        let text = "[server]\nworkers = 3\nrealm = \"example.org\"\n[log]\nformat = \"json\"\n";
        let mut reloaded = Settings::from_toml(text, "t").unwrap();
        assert_eq!(
            changed(&running, &reloaded),
            ["server.workers", "server.realm", "log.format"]
        );
        assert_eq!(
            keep_restart_only(&mut reloaded, &running),
            ["server.workers", "log.format"]
        );
        assert_eq!(reloaded.server.workers, 0);
        assert_eq!(reloaded.log.format, crate::config::LogFormat::Human);
        assert_eq!(reloaded.server.realm, "example.org", "an applied key stays");
        assert_eq!(changed(&running, &reloaded), ["server.realm"]);
    }
}
