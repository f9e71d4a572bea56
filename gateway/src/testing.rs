//! Test-only helpers shared by the adapters' tests.

/// The URL of a test service (PostgreSQL, Redis) from `var`, as `scripts/services` exports it. In CI a
/// missing service fails the test; elsewhere the test is skipped, loudly.
pub fn service_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("CI").is_ok_and(|ci| ci == "true") => {
            panic!("{var} is not set and CI=true: the test services are required (scripts/test starts them)")
        }
        _ => {
            eprintln!("SKIPPED: {var} is not set; run `eval \"$(scripts/services)\"` first to test against it");
            None
        }
    }
}
