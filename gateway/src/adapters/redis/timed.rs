//! The shared Redis connection, timed: each command (or pipeline) records its latency and whether it
//! failed, labelled by the command's name from a fixed set. One place for every adapter, so no
//! command escapes the count.

use std::time::Instant;

use redis::aio::ConnectionLike;
use redis::{Arg, Cmd, ErrorKind, Pipeline, RedisFuture, RedisResult, Value};

use crate::app::metrics::{Backend, BackendMetrics};

pub struct Timed<C> {
    inner: C,
    metrics: BackendMetrics,
}

impl<C> Timed<C> {
    pub fn new(inner: C, metrics: BackendMetrics) -> Self {
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
    const KNOWN: [&str; 16] = [
        "evalsha",
        "eval",
        "script",
        "spublish",
        "ssubscribe",
        "sunsubscribe",
        "publish",
        "ping",
        "get",
        "set",
        "hgetall",
        "zadd",
        "zrem",
        "zrange",
        "zrangebyscore",
        "del",
    ];
    KNOWN
        .into_iter()
        .find(|known| known.as_bytes().eq_ignore_ascii_case(name))
        .unwrap_or("other")
}

impl Timed<super::Connection> {
    /// [`super::Connection::ping_one_node`], timed as `ping`.
    pub async fn ping_one_node(&mut self) -> RedisResult<Value> {
        let started = Instant::now();
        let result = self.inner.ping_one_node().await;
        self.record("ping", started, &result);
        result
    }
}

impl<C: ConnectionLike + Send> ConnectionLike for Timed<C> {
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
        assert_eq!(operation(redis::cmd("SPUBLISH").arg("c").arg("m")), "spublish");
        assert_eq!(operation(&redis::cmd("evalsha")), "evalsha");
        assert_eq!(operation(redis::cmd("FLUSHALL").arg("ASYNC")), "other");
    }
}
