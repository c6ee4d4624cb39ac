//! Which primary serves which hash slot of a Redis Cluster, as this replica
//! last read it (`CLUSTER SLOTS`), so that a batch of one-key writes
//! spanning many slots goes as one pipeline per node instead of one per
//! slot ([`super::RedisBackend::run_each`]). Stream ids are random, so the
//! `SET`s a busy replica batches almost never share a slot: per slot, a
//! batch of 13 is 13 pipelines; per node, at most one per primary.
//!
//! The map is a grouping hint, never a source of truth: each pipeline is
//! routed by the cluster client to the node it knows for the pipeline's
//! first slot. A map gone stale (resharding, failover) puts a command on a
//! node that does not serve its slot; that node answers `MOVED`, the batch
//! fails as any failed write does (its writes go to memory), the map is
//! dropped and read again for the next batch. It is also read again once
//! it is [`MAX_AGE`] old. While it cannot be read, batches go one pipeline
//! per slot, which needs no map.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::Value;
use tokio::time::Instant;

/// How long a slot map is used before it is read again (30 s).
pub(super) const MAX_AGE: Duration = Duration::from_secs(30);

/// After a failed read, how long batches go per slot before the next try
/// (1 s), so a cluster that does not answer costs at most one extra
/// round trip a second.
pub(super) const RETRY_GAP: Duration = Duration::from_secs(1);

/// The number of hash slots of a Redis Cluster.
const SLOTS: usize = 16384;

/// The hash slot of `key`: CRC16 (XMODEM) mod 16384 of its hash tag — the
/// bytes between the first `{` and the next `}`, when there are any — or
/// of the whole key (Redis Cluster specification, "Hash tags").
pub(super) fn slot_of(key: &[u8]) -> u16 {
    let tag = key
        .iter()
        .position(|&c| c == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&c| c == b'}')?;
            Some(&rest[..close])
        })
        .filter(|tag| !tag.is_empty());
    crc16::State::<crc16::XMODEM>::calculate(tag.unwrap_or(key)) % SLOTS as u16
}

/// One pipeline of a batch: the slot it is routed by (its first command's)
/// and the indices of its commands in the batch, in order.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Group {
    /// Routes the pipeline: the cluster client sends it to the node it
    /// knows for this slot.
    pub(super) slot: u16,
    /// Indices into the batch.
    pub(super) indices: Vec<usize>,
}

/// Splits a batch of one-key commands, given by their keys' slots, into
/// pipelines: one per node `map` knows, one per slot for slots it does not
/// know (or for all of them without a map). Groups come in the order of
/// their first command.
pub(super) fn group(slots: &[u16], map: Option<&NodeMap>) -> Vec<Group> {
    #[derive(PartialEq, Eq, Hash)]
    enum By {
        Node(u16),
        Slot(u16),
    }
    let mut index: std::collections::HashMap<By, usize> = std::collections::HashMap::new();
    let mut groups: Vec<Group> = Vec::new();
    for (i, &slot) in slots.iter().enumerate() {
        let by = match map.and_then(|m| m.node_of(slot)) {
            Some(node) => By::Node(node),
            None => By::Slot(slot),
        };
        let g = *index.entry(by).or_insert_with(|| {
            groups.push(Group {
                slot,
                indices: Vec::new(),
            });
            groups.len() - 1
        });
        groups[g].indices.push(i);
    }
    groups
}

/// Slot → primary, from one `CLUSTER SLOTS` reply.
#[derive(Debug)]
pub(super) struct NodeMap {
    /// The index of the primary serving each slot (into the order primaries
    /// first appear in the reply); [`NodeMap::NONE`] for an unserved slot.
    owner: Box<[u16]>,
    read_at: Instant,
}

impl NodeMap {
    const NONE: u16 = u16::MAX;

    /// Reads a `CLUSTER SLOTS` reply: an array of
    /// `[start, end, [host, port, id, …], replicas…]`. A primary is known by
    /// its node id (Redis ≥ 4), else by host and port.
    ///
    /// Returns `None` for a reply of another shape, or one that serves no
    /// slot.
    pub(super) fn parse(reply: &Value, read_at: Instant) -> Option<Self> {
        let Value::Array(ranges) = reply else {
            return None;
        };
        let mut owner = vec![Self::NONE; SLOTS].into_boxed_slice();
        let mut primaries: Vec<Primary<'_>> = Vec::new();
        for range in ranges {
            let Value::Array(fields) = range else {
                return None;
            };
            let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(node))) =
                (fields.first(), fields.get(1), fields.get(2))
            else {
                return None;
            };
            let Some(Value::Int(port)) = node.get(1) else {
                return None;
            };
            let primary = Primary {
                id: bulk(node.get(2)),
                host: bulk(node.first()),
                port: *port,
            };
            let index = match primaries.iter().position(|p| p.is(&primary)) {
                Some(i) => i,
                None => {
                    primaries.push(primary);
                    primaries.len() - 1
                }
            };
            let index = u16::try_from(index).ok().filter(|&i| i != Self::NONE)?;
            let (Ok(start), Ok(end)) = (usize::try_from(*start), usize::try_from(*end)) else {
                return None;
            };
            if start > end || end >= SLOTS {
                return None;
            }
            owner[start..=end].fill(index);
        }
        if primaries.is_empty() {
            return None;
        }
        Some(Self { owner, read_at })
    }

    /// The primary serving `slot` (an index, equal for slots on one node),
    /// or `None` if the map has no node for it.
    pub(super) fn node_of(&self, slot: u16) -> Option<u16> {
        self.owner
            .get(usize::from(slot))
            .copied()
            .filter(|&i| i != Self::NONE)
    }
}

/// A primary as a `CLUSTER SLOTS` reply names it.
struct Primary<'a> {
    id: Option<&'a [u8]>,
    host: Option<&'a [u8]>,
    port: i64,
}

impl Primary<'_> {
    /// The same node: the same id, or (without ids) the same address.
    fn is(&self, other: &Self) -> bool {
        match (self.id, other.id) {
            (Some(a), Some(b)) => a == b,
            _ => self.host == other.host && self.port == other.port,
        }
    }
}

/// The bytes of a bulk string reply.
fn bulk(v: Option<&Value>) -> Option<&[u8]> {
    match v {
        Some(Value::BulkString(b)) => Some(b),
        _ => None,
    }
}

/// The slot map in use, replaced whole when read again.
#[derive(Debug, Default)]
pub(super) struct SlotMap {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    map: Option<Arc<NodeMap>>,
    /// When a read last failed (see [`RETRY_GAP`]).
    failed_at: Option<Instant>,
}

/// What [`SlotMap::current`] found.
pub(super) enum Lookup {
    /// A map younger than [`MAX_AGE`].
    Fresh(Arc<NodeMap>),
    /// No usable map, and one should be read now.
    Read,
    /// No usable map, and a read failed less than [`RETRY_GAP`] ago.
    Wait,
}

impl SlotMap {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The map to group by at `now`, or whether to read one.
    pub(super) fn current(&self, now: Instant) -> Lookup {
        let state = self.state();
        match (&state.map, state.failed_at) {
            (Some(map), _) if now.duration_since(map.read_at) < MAX_AGE => {
                Lookup::Fresh(map.clone())
            }
            (_, Some(at)) if now.duration_since(at) < RETRY_GAP => Lookup::Wait,
            _ => Lookup::Read,
        }
    }

    /// Keeps the outcome of a read made at `now` (a map, or a failure) and
    /// returns the map to use.
    pub(super) fn store(&self, map: Option<NodeMap>, now: Instant) -> Option<Arc<NodeMap>> {
        let map = map.map(Arc::new);
        *self.state() = State {
            map: map.clone(),
            failed_at: map.is_none().then_some(now),
        };
        map
    }

    /// Drops the map: a pipeline grouped by it failed, so it may be stale.
    pub(super) fn invalidate(&self) {
        self.state().map = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_the_cluster_clients_and_follow_hash_tags() {
        for key in [
            "",
            "a",
            "ballast:d:session:0123456789abcdef",
            "ballast:d:o:{0123456789abcdef}",
            "x{}y",
            "x{}{y}",
            "{a}{b}",
            "{unclosed",
        ] {
            let ours = redis::cluster_routing::Slot::new(slot_of(key.as_bytes()));
            assert_eq!(
                ours,
                Some(redis::cluster_routing::Slot::for_key(key)),
                "{key:?}"
            );
        }
        assert_eq!(slot_of(b"ballast:d:m:{s1}"), slot_of(b"ballast:d:s:{s1}"));
        assert_eq!(slot_of(b"foo"), 12182); // CLUSTER KEYSLOT foo
    }

    #[test]
    fn a_batch_goes_one_pipeline_per_node_or_per_slot_without_a_map() {
        let reply = Value::Array(vec![
            range(0, 8191, node("h", 1, "a")),
            range(8192, 16383, node("h", 2, "b")),
        ]);
        let map = NodeMap::parse(&reply, Instant::now()).expect("parses");
        let slots = [10, 9000, 11, 10, 9001];
        let by_node = group(&slots, Some(&map));
        assert_eq!(
            by_node,
            vec![
                Group {
                    slot: 10,
                    indices: vec![0, 2, 3]
                },
                Group {
                    slot: 9000,
                    indices: vec![1, 4]
                },
            ]
        );
        let by_slot = group(&slots, None);
        let sizes: Vec<usize> = by_slot.iter().map(|g| g.indices.len()).collect();
        assert_eq!(sizes, vec![2, 1, 1, 1]);
        assert!(group(&[], Some(&map)).is_empty());
    }

    fn node(host: &str, port: i64, id: &str) -> Value {
        Value::Array(vec![
            Value::BulkString(host.into()),
            Value::Int(port),
            Value::BulkString(id.into()),
        ])
    }

    fn range(start: i64, end: i64, primary: Value) -> Value {
        Value::Array(vec![Value::Int(start), Value::Int(end), primary])
    }

    #[test]
    fn slots_of_one_primary_share_a_node_and_unserved_slots_have_none() {
        let reply = Value::Array(vec![
            range(0, 99, node("127.0.0.1", 7000, "a")),
            range(100, 199, node("127.0.0.1", 7001, "b")),
            range(200, 299, node("127.0.0.1", 7000, "a")),
        ]);
        let map = NodeMap::parse(&reply, Instant::now()).expect("parses");
        assert_eq!(map.node_of(0), map.node_of(250));
        assert_ne!(map.node_of(99), map.node_of(100));
        assert!(map.node_of(199).is_some());
        assert_eq!(map.node_of(300), None);
        assert_eq!(map.node_of(16383), None);
    }

    #[test]
    fn primaries_without_ids_are_told_apart_by_address() {
        let bare = |port| Value::Array(vec![Value::BulkString(b"h".to_vec()), Value::Int(port)]);
        let reply = Value::Array(vec![
            range(0, 9, bare(1)),
            range(10, 19, bare(2)),
            range(20, 29, bare(1)),
        ]);
        let map = NodeMap::parse(&reply, Instant::now()).expect("parses");
        assert_eq!(map.node_of(0), map.node_of(25));
        assert_ne!(map.node_of(0), map.node_of(15));
    }

    #[test]
    fn replies_of_another_shape_give_no_map() {
        for reply in [
            Value::Okay,
            Value::Array(vec![]),
            Value::Array(vec![Value::Int(1)]),
            Value::Array(vec![range(5, 4, node("h", 1, "a"))]),
            Value::Array(vec![range(0, 16384, node("h", 1, "a"))]),
            Value::Array(vec![range(-1, 3, node("h", 1, "a"))]),
        ] {
            assert!(
                NodeMap::parse(&reply, Instant::now()).is_none(),
                "{reply:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_map_is_used_until_it_is_old_and_a_failed_read_waits_a_second() {
        let slots = SlotMap::default();
        assert!(matches!(slots.current(Instant::now()), Lookup::Read));
        let reply = Value::Array(vec![range(0, 16383, node("h", 1, "a"))]);
        slots.store(NodeMap::parse(&reply, Instant::now()), Instant::now());
        assert!(matches!(slots.current(Instant::now()), Lookup::Fresh(_)));
        tokio::time::advance(MAX_AGE).await;
        assert!(matches!(slots.current(Instant::now()), Lookup::Read));

        slots.store(None, Instant::now());
        assert!(matches!(slots.current(Instant::now()), Lookup::Wait));
        tokio::time::advance(RETRY_GAP).await;
        assert!(matches!(slots.current(Instant::now()), Lookup::Read));

        slots.store(NodeMap::parse(&reply, Instant::now()), Instant::now());
        slots.invalidate();
        assert!(matches!(slots.current(Instant::now()), Lookup::Read));
    }
}
