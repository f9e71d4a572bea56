//! Where state is kept: the embedded default (SQLite), or PostgreSQL and Redis shared by every
//! replica. The only part of the configuration `herald-gateway migrate` needs.

use std::path::PathBuf;

use herald_contract::{Options, Secret, defaults};

use super::{ConfigError, invalid, positive};

#[derive(Clone, PartialEq, Eq)]
pub enum StoreConfig {
    Sqlite {
        url: String,
    },
    Cluster {
        database_url: Secret,
        redis_url: Secret,
        /// `redis_url` names a Redis Cluster (its seed nodes).
        redis_cluster: bool,
        redis_prefix: String,
        /// CA of PostgreSQL's certificate (`HERALD_DATABASE_CA_FILE`): TLS, verified.
        database_ca_file: Option<PathBuf>,
        /// CA of Redis' certificate (`HERALD_REDIS_CA_FILE`), for `rediss://`.
        redis_ca_file: Option<PathBuf>,
        max_connections: u32,
        /// Apply PostgreSQL migrations when serving starts (safe with several replicas).
        migrate_on_start: bool,
    },
}

/// What an operator may see: the URLs without their passwords.
impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl StoreConfig {
    /// `sqlite://` (or nothing) without Redis: the embedded default. `postgres://` with `redis://`:
    /// cluster mode. Either of the two without the other is refused: a replica must never believe it
    /// is alone when it is not, nor the reverse.
    pub fn resolve(o: &Options) -> Result<StoreConfig, ConfigError> {
        let database_url = o.database_url.as_ref().map(Secret::expose);
        let postgres = database_url.filter(|url| url.starts_with("postgres://") || url.starts_with("postgresql://"));
        match (postgres, &o.redis_url) {
            (Some(database_url), Some(redis_url)) => {
                let urls: Vec<&str> = redis_url.expose().split(',').map(str::trim).collect();
                for (i, redis) in urls.iter().enumerate() {
                    if !redis.starts_with("redis://") && !redis.starts_with("rediss://") {
                        // Shown redacted only when it is a whole URL: a comma inside a password (it
                        // must be written %2C) cuts it there, and the rest of the password would
                        // show in a piece without a scheme.
                        let shown = if redis.contains("://") {
                            format!(", got `{}`", without_password(redis))
                        } else {
                            String::new()
                        };
                        return Err(invalid(format!(
                            "REDIS_URL must be redis:// or rediss:// URLs (comma-separated for a Redis Cluster's \
                             seed nodes; a comma in a password is written %2C), and URL {} of {} is not{shown}",
                            i + 1,
                            urls.len()
                        )));
                    }
                }
                let tls = urls.iter().filter(|url| url.starts_with("rediss://")).count();
                if tls != 0 && tls != urls.len() {
                    return Err(invalid(
                        "REDIS_URL mixes redis:// and rediss:// seed nodes: a Redis Cluster uses TLS on all or none",
                    ));
                }
                if o.redis_ca_file.is_some() && tls == 0 {
                    return Err(invalid(
                        "HERALD_REDIS_CA_FILE is set but REDIS_URL is not rediss://: a CA is for TLS connections",
                    ));
                }
                let redis_cluster = match o.redis_cluster {
                    Some(false) if urls.len() > 1 => {
                        return Err(invalid(format!(
                            "REDIS_URL names {} seed nodes, which is a Redis Cluster, but HERALD_REDIS_CLUSTER=false",
                            urls.len()
                        )));
                    }
                    Some(cluster) => cluster,
                    None => urls.len() > 1,
                };
                for (name, file) in [
                    ("HERALD_DATABASE_CA_FILE", &o.database_ca_file),
                    ("HERALD_REDIS_CA_FILE", &o.redis_ca_file),
                ] {
                    if let Some(file) = file {
                        readable_pem(name, file)?;
                    }
                }
                return Ok(StoreConfig::Cluster {
                    database_url: Secret::new(database_url.clone()),
                    redis_url: redis_url.clone(),
                    redis_cluster,
                    redis_prefix: match &o.redis_prefix {
                        // A brace would move the hash tag of every key (a Redis Cluster would then
                        // refuse the registry's scripts as touching several slots).
                        Some(prefix) if prefix.contains(['{', '}']) => {
                            return Err(invalid(format!(
                                "HERALD_REDIS_PREFIX must not contain braces (Redis Cluster hash tags), got `{prefix}`"
                            )));
                        }
                        Some(prefix) => prefix.clone(),
                        None => defaults::REDIS_PREFIX.to_owned(),
                    },
                    database_ca_file: o.database_ca_file.clone(),
                    redis_ca_file: o.redis_ca_file.clone(),
                    max_connections: positive(
                        "HERALD_DATABASE_MAX_CONNECTIONS",
                        o.database_max_connections,
                        defaults::DATABASE_MAX_CONNECTIONS,
                    )?,
                    migrate_on_start: o.migrate_on_start.unwrap_or(false),
                });
            }
            (Some(_), None) => {
                return Err(invalid(
                    "DATABASE_URL is a PostgreSQL URL but REDIS_URL is not set: cluster mode needs both \
                     (or use sqlite://PATH and no REDIS_URL for the embedded default)",
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "REDIS_URL is set but DATABASE_URL is not a postgres:// URL: cluster mode needs both \
                     (unset REDIS_URL for the embedded default)",
                ));
            }
            (None, None) => {}
        }
        let url = match database_url {
            Some(url) if url.starts_with("sqlite:") => url.to_owned(),
            Some(url) => {
                return Err(invalid(format!(
                    "DATABASE_URL must be sqlite://PATH or postgres://..., got `{}`",
                    without_password(url)
                )));
            }
            None => {
                let dir = o.data_dir.clone().unwrap_or_else(|| PathBuf::from(defaults::DATA_DIR));
                std::fs::create_dir_all(&dir)
                    .map_err(|e| invalid(format!("cannot create data directory {}: {e}", dir.display())))?;
                format!("sqlite://{}", dir.join("herald.db").display())
            }
        };
        Ok(StoreConfig::Sqlite { url })
    }

    /// Where the store is, without credentials.
    pub fn describe(&self) -> String {
        match self {
            StoreConfig::Sqlite { url } => url.clone(),
            StoreConfig::Cluster {
                database_url,
                redis_url,
                ..
            } => {
                let redis: Vec<String> = redis_url
                    .expose()
                    .split(',')
                    .map(|url| without_password(url.trim()))
                    .collect();
                format!(
                    "cluster: {} + {}",
                    without_password(database_url.expose()),
                    redis.join(",")
                )
            }
        }
    }
}

/// `scheme://user:secret@host/...` -> `scheme://user:***@host/...`.
fn without_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Refuses at start a CA file that cannot be read or holds no PEM certificate (a wrong mount would
/// otherwise show only as failing connections).
fn readable_pem(name: &str, file: &std::path::Path) -> Result<(), ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|e| invalid(format!("{name} {}: {e}", file.display())))?;
    if !text.contains("-----BEGIN CERTIFICATE-----") {
        return Err(invalid(format!("{name} {}: no PEM certificate in it", file.display())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::test_options as options;
    use super::*;

    fn refusal(options: &Options) -> String {
        StoreConfig::resolve(options).expect_err("refused").to_string()
    }

    #[test]
    fn several_redis_urls_name_a_redis_cluster() {
        let with = |redis: &str, cluster: Option<bool>| Options {
            database_url: Some("postgres://herald:s3cret@db:5432/herald".into()),
            redis_url: Some(redis.into()),
            redis_cluster: cluster,
            ..options()
        };
        let cluster_of = |options: &Options| match StoreConfig::resolve(options).expect("resolves") {
            StoreConfig::Cluster { redis_cluster, .. } => redis_cluster,
            StoreConfig::Sqlite { .. } => panic!("cluster mode"),
        };
        let seeds = with("redis://:pw@r1:6379, redis://:pw@r2:6379", None);
        assert!(cluster_of(&seeds), "several seeds: a Redis Cluster");
        assert_eq!(
            StoreConfig::resolve(&seeds).expect("resolves").describe(),
            "cluster: postgres://herald:***@db:5432/herald + redis://:***@r1:6379,redis://:***@r2:6379",
            "no password of any seed is shown"
        );
        assert!(!cluster_of(&with("redis://r1:6379", None)), "one URL: one server");
        assert!(
            cluster_of(&with("redis://config-endpoint:6379", Some(true))),
            "one seed, said to be a Cluster"
        );
        let err = refusal(&with("redis://r1:6379,redis://r2:6379", Some(false)));
        assert!(err.contains("HERALD_REDIS_CLUSTER=false"), "{err}");
        let err = refusal(&with("redis://r1:6379,rediss://r2:6379", None));
        assert!(err.contains("mixes"), "{err}");
        let err = refusal(&with("redis://r1:6379,http://r2", None));
        assert!(
            err.contains("redis:// or rediss://") && err.contains("URL 2 of 2"),
            "{err}"
        );
        let err = refusal(&with("redis://:s3cr,etZ9@r1:6379", None));
        assert!(!err.contains("etZ9"), "no part of a password shown: {err}");
        let braces = Options {
            redis_prefix: Some("herald:{team}:".into()),
            ..with("redis://r1:6379", None)
        };
        assert!(refusal(&braces).contains("braces"));
    }

    #[test]
    fn cluster_mode_needs_both_urls() {
        let both = Options {
            database_url: Some("postgres://herald:s3cret@db:5432/herald".into()),
            redis_url: Some("redis://cache:6379".into()),
            ..options()
        };
        let store = StoreConfig::resolve(&both).expect("cluster");
        assert!(matches!(store, StoreConfig::Cluster { .. }));
        assert_eq!(
            store.describe(),
            "cluster: postgres://herald:***@db:5432/herald + redis://cache:6379"
        );
        assert!(!format!("{store:?}").contains("s3cret"));
    }

    #[test]
    fn cluster_urls_alone_are_refused_with_a_clear_message() {
        let redis = Options {
            redis_url: Some("redis://127.0.0.1:6379".into()),
            ..options()
        };
        let err = refusal(&redis);
        assert!(err.contains("REDIS_URL"), "{err}");
        let pg = Options {
            database_url: Some("postgres://localhost/herald".into()),
            ..options()
        };
        let err = refusal(&pg);
        assert!(err.contains("PostgreSQL"), "{err}");
    }

    #[test]
    fn ca_files_must_hold_a_certificate_and_a_redis_ca_needs_rediss() {
        let dir = std::env::temp_dir().join(format!("herald-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let pem = dir.join("ca.crt");
        std::fs::write(&pem, "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").expect("pem");
        let junk = dir.join("junk.txt");
        std::fs::write(&junk, "not a certificate").expect("junk");
        let cluster =
            |redis: &str, database_ca: Option<&std::path::Path>, redis_ca: Option<&std::path::Path>| Options {
                database_url: Some("postgres://db/herald".into()),
                redis_url: Some(redis.into()),
                database_ca_file: database_ca.map(Into::into),
                redis_ca_file: redis_ca.map(Into::into),
                ..options()
            };
        assert!(StoreConfig::resolve(&cluster("rediss://cache:6380", Some(&pem), Some(&pem))).is_ok());
        let err = refusal(&cluster("redis://cache:6379", None, Some(&pem)));
        assert!(
            err.contains("HERALD_REDIS_CA_FILE is set but REDIS_URL is not rediss://"),
            "{err}"
        );
        let err = refusal(&cluster("rediss://cache:6380", Some(&junk), None));
        assert!(
            err.contains("HERALD_DATABASE_CA_FILE") && err.contains("no PEM certificate"),
            "{err}"
        );
        let err = refusal(&cluster("rediss://cache:6380", Some(&dir.join("missing.crt")), None));
        assert!(err.contains("missing.crt"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_bad_url_is_refused_without_printing_its_password() {
        let bad = Options {
            database_url: Some("mysql://root:hunter2@db/herald".into()),
            ..options()
        };
        let err = refusal(&bad);
        assert!(err.contains("mysql://root:***@db/herald"), "{err}");
    }
}
