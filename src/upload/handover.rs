//! The tus lock hand-over (tusd's lock release request): a request for an upload that a
//! PATCH of this process holds asks that PATCH to stop, and waits until it has saved what it
//! read, recorded the offset and let go of the file.
//!
//! A PATCH that takes an upload's file lock registers a [`Hold`], which carries its
//! [`Lease`] (the lock across replicas, `db::locks`); the hold lives in the session's open
//! file, after the file itself, so it ends exactly when the lock is released (whatever ended
//! the session: its own end, its client going away, an actor restart).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{oneshot, Notify};

use crate::db::locks::Lease;
use crate::ids::UploadId;

/// How long a request waits for the PATCH it asked to stop (the lock hand-over) to save
/// what it read and let go; past it, the upload is still locked (423).
pub const HANDOVER_WAIT: Duration = Duration::from_secs(3);

/// The PATCHes of this process that hold an upload's lock, by upload.
#[derive(Debug, Default)]
pub struct Holders {
    held: Mutex<HashMap<UploadId, Holder>>,
}

#[derive(Debug)]
struct Holder {
    /// Told once a newcomer asks the PATCH to stop.
    stop: Arc<Notify>,
    /// Told when the lock is released.
    waiters: Vec<oneshot::Sender<()>>,
}

impl Holders {
    fn map(&self) -> MutexGuard<'_, HashMap<UploadId, Holder>> {
        // A panic while the map was locked leaves it consistent: every change is one call.
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers the PATCH that has just locked upload `id` with `lease`; answers its hold
    /// and the signal it must watch.
    pub fn hold(self: &Arc<Self>, id: UploadId, lease: Lease) -> (Hold, Arc<Notify>) {
        let stop = Arc::new(Notify::new());
        let holder = Holder {
            stop: stop.clone(),
            waiters: Vec::new(),
        };
        // A previous entry for `id` would belong to a lock already released.
        if let Some(stale) = self.map().insert(id, holder) {
            stale.release();
        }
        let hold = Hold {
            holders: self.clone(),
            id,
            stop: stop.clone(),
            lease: Some(lease),
        };
        (hold, stop)
    }

    /// Whether a PATCH of this process holds upload `id` right now.
    pub fn is_held(&self, id: UploadId) -> bool {
        self.map().contains_key(&id)
    }

    /// Asks the PATCH holding upload `id`, if one in this process does, to stop; answers what
    /// to await for its release (`None`: nobody here holds it).
    pub fn ask_release(&self, id: UploadId) -> Option<oneshot::Receiver<()>> {
        let mut held = self.map();
        let holder = held.get_mut(&id)?;
        // `notify_one` keeps the request for a PATCH not waiting on it right now.
        holder.stop.notify_one();
        let (tx, rx) = oneshot::channel();
        holder.waiters.push(tx);
        Some(rx)
    }

    /// Asks every PATCH of this process holding a lock to stop (the locks were lost);
    /// answers how many there were.
    pub fn stop_all(&self) -> usize {
        let held = self.map();
        for holder in held.values() {
            holder.stop.notify_one();
        }
        held.len()
    }
}

impl Holder {
    fn release(self) {
        for waiter in self.waiters {
            let _ = waiter.send(());
        }
    }
}

/// One PATCH's registration; dropping it releases its lease, then tells the waiters the
/// lock is free.
#[derive(Debug)]
pub struct Hold {
    holders: Arc<Holders>,
    id: UploadId,
    /// Tells this hold's entry from a later one for the same upload.
    stop: Arc<Notify>,
    lease: Option<Lease>,
}

impl Drop for Hold {
    fn drop(&mut self) {
        // First: a waiter told below takes the lease at once.
        drop(self.lease.take());
        let mut held = self.holders.map();
        if held
            .get(&self.id)
            .is_some_and(|holder| Arc::ptr_eq(&holder.stop, &self.stop))
        {
            if let Some(holder) = held.remove(&self.id) {
                drop(held);
                holder.release();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_web::test]
    async fn a_release_request_stops_the_holder_and_resolves_when_its_hold_drops() {
        let holders = Arc::new(Holders::default());
        let id = UploadId::new();
        assert!(holders.ask_release(id).is_none(), "nobody holds it yet");
        let (hold, stop) = holders.hold(id, Lease::local());
        let released = holders.ask_release(id).unwrap();
        // The request was kept although the holder was not waiting for it.
        stop.notified().await;
        drop(hold);
        released.await.unwrap();
        assert!(holders.ask_release(id).is_none());
    }
}
