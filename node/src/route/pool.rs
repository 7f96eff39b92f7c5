//! Outbound connections kept for the next message to the same address, and
//! the cap on connections to one address at once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::smtp::Connection;

/// Idle connections are keyed by address and by whether their TLS was verified.
type Key = (SocketAddr, bool);

pub struct Pool {
    idle: Mutex<HashMap<Key, Vec<(Connection, Instant)>>>,
    limits: DashMap<SocketAddr, Arc<Semaphore>>,
    max_per_host: usize,
    keep_idle: Duration,
}

impl Pool {
    pub fn new(max_per_host: usize, keep_idle: Duration) -> Pool {
        Pool { idle: Mutex::new(HashMap::new()), limits: DashMap::new(), max_per_host, keep_idle }
    }

    /// Waits for a free connection slot to `addr`.
    pub async fn slot(&self, addr: SocketAddr) -> OwnedSemaphorePermit {
        let semaphore =
            self.limits.entry(addr).or_insert_with(|| Arc::new(Semaphore::new(self.max_per_host))).clone();
        semaphore.acquire_owned().await.expect("pool semaphores are never closed")
    }

    /// An idle connection to `addr`, if one is fresh enough.
    pub fn take(&self, addr: SocketAddr, verified: bool) -> Option<Connection> {
        let mut idle = self.idle.lock().unwrap();
        let list = idle.get_mut(&(addr, verified))?;
        while let Some((conn, since)) = list.pop() {
            if since.elapsed() < self.keep_idle {
                return Some(conn);
            }
        }
        None
    }

    pub fn give_back(&self, conn: Connection, verified: bool) {
        if self.keep_idle.is_zero() {
            return;
        }
        let key = (conn.addr, verified);
        self.idle.lock().unwrap().entry(key).or_default().push((conn, Instant::now()));
    }

    /// Closes connections idle for too long (politely, in the background).
    pub fn sweep(&self) {
        let mut stale = Vec::new();
        {
            let mut idle = self.idle.lock().unwrap();
            for list in idle.values_mut() {
                let (old, fresh): (Vec<_>, Vec<_>) =
                    list.drain(..).partition(|(_, since)| since.elapsed() >= self.keep_idle);
                *list = fresh;
                stale.extend(old.into_iter().map(|(conn, _)| conn));
            }
            idle.retain(|_, list| !list.is_empty());
        }
        for conn in stale {
            tokio::spawn(conn.quit());
        }
    }
}
