//! Where a registration stands, and who is told when it changes.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;

use tokio::sync::watch;

/// Where a [`Registration`](super::Registration) stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RegistrationState {
    /// The instance is in the store, on a live session.
    Registered,
    /// The lease was lost; the instance is being written again on a new session.
    Reregistering,
    /// Another registration of the same id took the key; this one stopped.
    Replaced,
    /// Someone removed the key (for example `RegistryService::deregister(id)`); this one stopped.
    Removed,
    /// Deregistered by its owner (or its coordinator was closed).
    Deregistered,
}

impl RegistrationState {
    /// Whether the registration has stopped for good.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RegistrationState::Replaced
                | RegistrationState::Removed
                | RegistrationState::Deregistered
        )
    }
}

const STATES: [RegistrationState; 5] = [
    RegistrationState::Registered,
    RegistrationState::Reregistering,
    RegistrationState::Replaced,
    RegistrationState::Removed,
    RegistrationState::Deregistered,
];

/// A registration's state, with a channel made only for those who follow it
/// (a tokio watch channel is ~0.4 KiB: most registrations are never followed).
pub(super) struct StateCell {
    now: AtomicU8,
    followers: Mutex<Option<watch::Sender<RegistrationState>>>,
}

impl StateCell {
    pub(super) fn new(state: RegistrationState) -> Self {
        StateCell {
            now: AtomicU8::new(state as u8),
            followers: Mutex::new(None),
        }
    }

    pub(super) fn get(&self) -> RegistrationState {
        STATES[usize::from(self.now.load(Ordering::SeqCst))]
    }

    /// Move to `state`, unless the state is final already (a final state stays).
    pub(super) fn set(&self, state: RegistrationState) {
        let followers = self.followers.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.get();
        if now == state || now.is_final() {
            return;
        }
        self.now.store(state as u8, Ordering::SeqCst);
        if let Some(tx) = followers.as_ref() {
            tx.send_replace(state);
        }
    }

    pub(super) fn subscribe(&self) -> watch::Receiver<RegistrationState> {
        let mut followers = self.followers.lock().unwrap_or_else(|e| e.into_inner());
        followers
            .get_or_insert_with(|| watch::Sender::new(self.get()))
            .subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn followers_see_each_change_and_a_final_state_stays() {
        let cell = StateCell::new(RegistrationState::Registered);
        cell.set(RegistrationState::Reregistering);
        let rx = cell.subscribe();
        assert_eq!(*rx.borrow(), RegistrationState::Reregistering);
        cell.set(RegistrationState::Removed);
        assert_eq!(*rx.borrow(), RegistrationState::Removed);
        cell.set(RegistrationState::Registered);
        assert_eq!(cell.get(), RegistrationState::Removed);
        for (i, s) in STATES.iter().enumerate() {
            assert_eq!(*s as u8 as usize, i);
        }
    }
}
