//! Socket.IO (one node, or two with the Redis adapter) as an open-loop target (being written).
