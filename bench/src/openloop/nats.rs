//! NATS with its WebSocket listener as an open-loop target (being written).
