//! In-process adapters: correct for a single replica only (the embedded default), and the reference
//! behaviour the shared adapters must match.

mod bus;
mod preferences;
mod rate_limiter;
mod registry;
mod subscriptions;
mod token_ledger;

pub use bus::MemoryEventBus;
pub use preferences::MemoryPreferenceStore;
pub use rate_limiter::MemoryRateLimiter;
pub use registry::MemoryConnectionRegistry;
pub use subscriptions::MemorySubscriptionStore;
pub use token_ledger::MemoryTokenLedger;

/// Locks a std mutex, recovering the data if a panicking thread poisoned it: every critical section
/// here leaves the maps consistent, so the data is still good.
fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
