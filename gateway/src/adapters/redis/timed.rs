//! The shared Redis connection, timed: each command (or pipeline) records its latency and whether it
//! failed, labelled by the command's name from a fixed set. One place for every adapter, so no
//! command escapes the count.

use std::time::Instant;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::{Arg, Cmd, ErrorKind, Pipeline, RedisFuture, RedisResult, Value};

use crate::app::metrics::{Backend, BackendMetrics};

pub struct Timed {
    inner: ConnectionManager,
    metrics: BackendMetrics,
}

impl Timed {
    pub fn new(inner: ConnectionManager, metrics: BackendMetrics) -> Self {
        Self { inner, metrics }
    }

    fn record<T>(&self, operation: &'static str, started: Instant, result: &RedisResult<T>) {
        // A script Redis does not hold yet (after a restart) is loaded and run again by the client:
        // that answer is part of the protocol, not a failure.
        let ok = match result {
            Ok(_) => true,
            Err(err) => err.kind() == ErrorKind::NoScriptError,
        };
        self.metrics.observe(Backend::Redis, operation, started.elapsed(), ok);
    }
}

/// The command's name as a label: the commands Herald sends, else `other`.
fn operation(cmd: &Cmd) -> &'static str {
    let Some(Arg::Simple(name)) = cmd.args_iter().next() else {
        return "other";
    };
    const KNOWN: [&str; 11] = [
        "evalsha",
        "eval",
        "script",
        "publish",
        "ping",
        "get",
        "set",
        "hgetall",
        "zrange",
        "zrangebyscore",
        "del",
    ];
    KNOWN
        .into_iter()
        .find(|known| known.as_bytes().eq_ignore_ascii_case(name))
        .unwrap_or("other")
}

impl ConnectionLike for Timed {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let started = Instant::now();
            let result = self.inner.req_packed_command(cmd).await;
            self.record(operation(cmd), started, &result);
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let started = Instant::now();
            let result = self.inner.req_packed_commands(cmd, offset, count).await;
            self.record("pipeline", started, &result);
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.inner.get_db()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_named_from_a_fixed_set() {
        assert_eq!(operation(redis::cmd("PUBLISH").arg("c").arg("m")), "publish");
        assert_eq!(operation(&redis::cmd("evalsha")), "evalsha");
        assert_eq!(operation(redis::cmd("FLUSHALL").arg("ASYNC")), "other");
    }
}
