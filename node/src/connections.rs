//! Connection slots: a global cap and a per-IP cap, taken at accept and
//! given back when the connection ends. Trusted sources are held only to
//! the global cap: an MTA that opens its 20 parallel sessions (Postfix's
//! default) must not lose one to the moment between a client's close and
//! this end's.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

pub struct ConnectionSlots {
    max_total: usize,
    max_per_ip: usize,
    total: AtomicUsize,
    per_ip: DashMap<IpAddr, usize>,
}

/// Why a connection was not given a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    Total,
    PerIp,
}

/// Held for the life of a connection.
pub struct Slot {
    slots: Arc<ConnectionSlots>,
    /// The address whose per-IP count it holds (none for a trusted source).
    ip: Option<IpAddr>,
}

impl ConnectionSlots {
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(ConnectionSlots {
            max_total,
            max_per_ip,
            total: AtomicUsize::new(0),
            per_ip: DashMap::new(),
        })
    }

    /// A slot for a connection from `ip`; a trusted one is not held to the per-IP cap.
    pub fn take(self: &Arc<Self>, ip: IpAddr, trusted: bool) -> Result<Slot, Full> {
        if self.total.fetch_add(1, Ordering::AcqRel) >= self.max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Full::Total);
        }
        if trusted {
            return Ok(Slot { slots: self.clone(), ip: None });
        }
        let mut count = self.per_ip.entry(ip).or_insert(0);
        if *count >= self.max_per_ip {
            drop(count);
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Full::PerIp);
        }
        *count += 1;
        Ok(Slot { slots: self.clone(), ip: Some(ip) })
    }

    pub fn in_use(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(ip) = self.ip {
            self.slots.per_ip.remove_if_mut(&ip, |_, count| {
                *count -= 1;
                *count == 0
            });
        }
        self.slots.total.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_hold_and_slots_come_back() {
        let slots = ConnectionSlots::new(3, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let s1 = slots.take(a, false).unwrap();
        let _s2 = slots.take(a, false).unwrap();
        assert_eq!(slots.take(a, false).err(), Some(Full::PerIp));
        let _s3 = slots.take(b, false).unwrap();
        assert_eq!(slots.take(b, false).err(), Some(Full::Total));
        drop(s1);
        assert!(slots.take(a, false).is_ok());
        assert_eq!(slots.in_use(), 3 - 1);
    }

    #[test]
    fn a_trusted_source_is_held_only_to_the_global_cap() {
        let slots = ConnectionSlots::new(30, 2);
        let relay: IpAddr = "192.0.2.25".parse().unwrap();
        let held: Vec<Slot> = (0..20).map(|_| slots.take(relay, true).unwrap()).collect();
        assert_eq!(slots.in_use(), 20, "twenty sessions at once, over a per-IP cap of 2");
        let _untrusted = [slots.take(relay, false).unwrap(), slots.take(relay, false).unwrap()];
        assert_eq!(slots.take(relay, false).err(), Some(Full::PerIp), "untrusted, the cap holds");
        drop(held);
        assert_eq!(slots.in_use(), 2);
    }

    #[test]
    fn a_million_addresses_leave_no_more_entries_than_connections() {
        let slots = ConnectionSlots::new(2000, 20);
        let mut held = std::collections::VecDeque::new();
        for n in 0..1_000_000u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0A00_0000 + n));
            if let Ok(slot) = slots.take(ip, false) {
                held.push_back(slot);
            }
            if held.len() == 2000 {
                held.pop_front();
            }
            assert!(slots.per_ip.len() <= 2000);
        }
        drop(held);
        assert_eq!(slots.per_ip.len(), 0, "an address without a connection is forgotten");
    }
}
