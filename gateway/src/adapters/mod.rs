//! Implementations of the ports, side by side: `memory` (in-process, the embedded default and tests),
//! `sqlite` (the embedded default's store), `postgres` and `redis` (cluster mode), `sql` (what the
//! SQLite and PostgreSQL adapters share). Transports never use these directly.

pub mod clock;
pub mod coalesced;
pub mod group_commit;
pub mod jwt;
pub mod memory;
pub mod postgres;
pub mod preference_cache;
pub mod redis;
pub mod sql;
pub mod sqlite;
pub mod timed;
