use async_trait::async_trait;
use tokio::sync::broadcast;

use crate::error::Result;
use crate::ports::{BusEvent, EventBus};

/// Events stay in this process: the embedded default has one replica.
#[derive(Debug)]
pub struct MemoryEventBus {
    sender: broadcast::Sender<BusEvent>,
}

impl MemoryEventBus {
    /// `capacity` events may be buffered per receiver before the slowest one starts losing them.
    pub fn new(capacity: usize) -> Self {
        Self {
            sender: broadcast::channel(capacity.max(1)).0,
        }
    }
}

impl Default for MemoryEventBus {
    fn default() -> Self {
        Self::new(4_096)
    }
}

#[async_trait]
impl EventBus for MemoryEventBus {
    async fn publish(&self, event: BusEvent) -> Result<()> {
        // No receiver (nobody connected yet) is not an error: the store has everything.
        let _ = self.sender.send(event);
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<BusEvent> {
        self.sender.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::conformance;

    #[tokio::test]
    async fn conforms_to_event_bus() {
        conformance::event_bus(&MemoryEventBus::default()).await;
    }
}
