//! The per-host share of the attempt slots (`--max-in-flight-per-host`):
//! how many attempts are in flight to each webhook authority (`host:port`),
//! and the events parked while their host's share is full. No IO.
//!
//! Why parking and not waiting: an attempt that waited for its host would
//! hold one of the global slots while it waits, and a loop that waited
//! would stop serving every other host; either way a silent host could
//! still starve the others. A parked event stays claimed (the loop skips
//! it) but holds no slot and no task: it costs its id. When
//! one of its host's attempts ends, that attempt's task takes the next
//! parked event up in the same host slot and the same global slot.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use crate::record::EventId;

/// Attempt slots per webhook authority, and the events waiting for one.
pub(super) struct HostSlots {
    /// Attempts in flight at once to one host.
    limit: usize,
    /// Hosts with an attempt in flight; a host is forgotten once idle, so
    /// the map holds only busy hosts.
    hosts: Mutex<HashMap<String, Host>>,
}

/// One busy host.
#[derive(Debug, Default)]
struct Host {
    /// Attempts in flight to it, at most the limit.
    busy: usize,
    /// Claimed events waiting for one of its slots, oldest first.
    parked: VecDeque<EventId>,
}

impl HostSlots {
    /// Slots for `limit` attempts per host (at least one).
    pub(super) fn new(limit: usize) -> Self {
        HostSlots {
            limit: limit.max(1),
            hosts: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Host>> {
        // The map stays consistent across a panic: every change is one
        // step under the lock.
        self.hosts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes one of `host`'s slots for the claimed event `id`, or, when the
    /// host's share is full, parks the event (`false`): it is taken up when
    /// one of the host's attempts ends ([`HostSlots::leave`]).
    pub(super) fn enter(&self, host: &str, id: EventId) -> bool {
        let mut hosts = self.lock();
        let entry = hosts.entry(host.to_owned()).or_default();
        if entry.busy < self.limit {
            entry.busy += 1;
            true
        } else {
            entry.parked.push_back(id);
            false
        }
    }

    /// One of `host`'s attempts has ended. With `hand_over`, the oldest
    /// parked event takes its slot over and is returned, to be attempted
    /// next; otherwise (or with none parked) the slot is freed.
    pub(super) fn leave(&self, host: &str, hand_over: bool) -> Option<EventId> {
        let mut hosts = self.lock();
        let entry = hosts.get_mut(host)?;
        if hand_over && let Some(next) = entry.parked.pop_front() {
            return Some(next);
        }
        entry.busy = entry.busy.saturating_sub(1);
        if entry.busy == 0 && entry.parked.is_empty() {
            hosts.remove(host);
        }
        None
    }

    /// How many attempts are in flight to `host` and how many events wait
    /// for it (for the tests).
    #[cfg(test)]
    fn state(&self, host: &str) -> (usize, usize) {
        self.lock()
            .get(host)
            .map_or((0, 0), |h| (h.busy, h.parked.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u128) -> EventId {
        EventId::from_u128(n)
    }

    #[test]
    fn a_full_host_parks_and_hands_its_slots_over_in_order() {
        let slots = HostSlots::new(2);
        for n in 1..=2 {
            let id = event(n);
            assert!(slots.enter("a:80", id));
        }
        for n in 3..=4 {
            let id = event(n);
            assert!(!slots.enter("a:80", id), "event {n} not parked");
        }
        // Another host has its own share.
        let id = event(9);
        assert!(slots.enter("b:80", id));
        assert_eq!(slots.state("a:80"), (2, 2));
        // An ending attempt hands its slot to the oldest parked event.
        assert_eq!(slots.leave("a:80", true), Some(event(3)));
        assert_eq!(slots.state("a:80"), (2, 1));
        assert_eq!(slots.leave("a:80", true), Some(event(4)));
        assert_eq!(slots.leave("a:80", true), None);
        assert_eq!(slots.state("a:80"), (1, 0));
        assert_eq!(slots.leave("a:80", true), None);
        // An idle host is forgotten.
        assert!(!slots.lock().contains_key("a:80"));
        assert_eq!(slots.state("b:80"), (1, 0));
    }

    #[test]
    fn without_hand_over_the_slot_is_freed_and_parked_events_stay() {
        let slots = HostSlots::new(1);
        let id = event(1);
        assert!(slots.enter("a:80", id));
        let id = event(2);
        assert!(!slots.enter("a:80", id));
        assert_eq!(slots.leave("a:80", false), None);
        assert_eq!(slots.state("a:80"), (0, 1));
    }
}
