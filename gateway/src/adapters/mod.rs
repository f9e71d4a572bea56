//! Implementations of the ports, side by side: `memory` (in-process, the embedded default and tests),
//! `sqlite` (the embedded default's store). Transports never use these directly.

pub mod clock;
pub mod jwt;
pub mod memory;
pub mod sqlite;
