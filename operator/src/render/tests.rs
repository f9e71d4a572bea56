use super::*;
use crate::crd::{GatewayRef, NotificationChannelSpec, NotificationGatewaySpec, NotificationType};
use serde_json::json;

fn gateway(spec: serde_json::Value) -> NotificationGateway {
    let spec: NotificationGatewaySpec = serde_json::from_value(spec).expect("spec");
    let mut gateway = NotificationGateway::new("alerts", spec);
    gateway.metadata.namespace = Some("apps".into());
    gateway.metadata.uid = Some("1f5a2b58-0000-4000-8000-000000000001".into());
    gateway
}

/// The image the tests render (the operator's default or the gateway's own: rendering is told).
const IMAGE: &str = "registry.local/herald/gateway:1.2.3";

fn migration_job_of(gateway: &NotificationGateway, secret_versions: &[(String, String)]) -> Option<Job> {
    migration_job(gateway, IMAGE, secret_versions)
}

/// The pod template's spec of the gateway's Deployment.
fn pod_of(gateway: &NotificationGateway) -> PodSpec {
    deployment(gateway, IMAGE, "abc")
        .spec
        .expect("spec")
        .template
        .spec
        .expect("pod")
}

fn cluster_gateway() -> NotificationGateway {
    gateway(json!({
        "replicas": 3,
        "postgres": {"urlSecretRef": {"name": "db", "key": "url"}},
        "redis": {"urlSecretRef": {"name": "cache", "key": "url"}},
        "auth": {"jwksUrl": "https://issuer.example/jwks", "issuer": "https://issuer.example/", "audience": "herald", "hs256SecretRef": {"name": "jwt", "key": "secret"}},
        "publisherKeysSecretRef": {"name": "publishers", "key": "keys"},
    }))
}

fn channel(name: &str, types: Vec<NotificationType>) -> NotificationChannel {
    let mut channel = NotificationChannel::new(
        name,
        NotificationChannelSpec {
            gateway_ref: GatewayRef { name: "alerts".into() },
            description: Some(format!("{name} things")),
            types,
            admin_only: name == "ops",
            required_role: None,
            default_subscribed: true,
            retention_days: Some(30),
        },
    );
    channel.metadata.namespace = Some("apps".into());
    channel
}

fn assert_owned(meta: &ObjectMeta) {
    let owners = meta.owner_references.as_ref().expect("owner references");
    assert_eq!(owners.len(), 1);
    assert_eq!(owners[0].kind, "NotificationGateway");
    assert_eq!(owners[0].name, "alerts");
    assert_eq!(owners[0].controller, Some(true));
    assert_eq!(meta.namespace.as_deref(), Some("apps"));
}

#[test]
fn every_child_is_owned_by_the_gateway() {
    let gw = cluster_gateway();
    let (config, checksum) = config_map(&gw, &[]);
    assert_owned(&config.metadata);
    assert_owned(&deployment(&gw, IMAGE, &checksum).metadata);
    assert_owned(&service(&gw).metadata);
    assert_owned(&internal_service(&gw).metadata);
    assert_owned(&pod_disruption_budget(&gw).expect("pdb").metadata);
    assert_owned(&signing_keys(&gw, r#"{"keys":[]}"#).metadata);
}

#[test]
fn every_applied_child_is_listed_for_the_ownership_check_by_kind_and_name() {
    let migration = migration_job_of(&cluster_gateway(), &[])
        .expect("job")
        .metadata
        .name
        .expect("name");
    let listed = |gw: &NotificationGateway| -> Vec<(String, String)> {
        Children::render(gw, IMAGE, &[], &[])
            .refs()
            .into_iter()
            .map(|child| (child.resource.kind, child.name))
            .collect()
    };
    let expected = |with_pdb: bool| -> Vec<(String, String)> {
        let mut children = vec![
            ("ConfigMap", "alerts-config"),
            ("Deployment", "alerts"),
            ("Service", "alerts"),
            ("Service", "alerts-internal"),
        ];
        if with_pdb {
            children.push(("PodDisruptionBudget", "alerts"));
            children.push(("Job", migration.as_str()));
        } else {
            children.push(("PersistentVolumeClaim", "alerts-data"));
        }
        children
            .into_iter()
            .map(|(k, n)| (k.to_owned(), n.to_owned()))
            .collect()
    };
    assert_eq!(listed(&cluster_gateway()), expected(true));
    let single = gateway(json!({"replicas": 1, "auth": {"jwksUrl": "https://i/j"}}));
    assert_eq!(listed(&single), expected(false));
    let pdb = &Children::render(&cluster_gateway(), IMAGE, &[], &[]).refs()[4].resource;
    assert_eq!(
        (pdb.group.as_str(), pdb.plural.as_str()),
        ("policy", "poddisruptionbudgets")
    );
}

/// The gateway's configuration from the rendered ConfigMap of `gw`, with what the Deployment passes
/// through Secret-backed environment variables; the rendered `gateway.yaml` too.
fn resolved(gw: &NotificationGateway, channels: &[&NotificationChannel]) -> (herald_gateway::config::Config, String) {
    use herald_gateway::config::{Config, Options};
    let (config_map, _) = config_map(gw, channels);
    let yaml = config_map.data.as_ref().expect("data")["gateway.yaml"].clone();
    let mut options = Options::from_yaml(&yaml).expect("the gateway parses every key");
    options.database_url = Some("postgres://herald@db/herald".into());
    options.redis_url = Some("redis://cache:6379".into());
    options.jwt_hs256_secret = Some("an-hs256-secret-that-is-long-enough-0123".into());
    options.signing_keys_file = None;
    options.token_secret = Some("a-token-secret-that-is-long-enough-0123456".into());
    let config = Config::resolve(options).expect("the gateway starts with this configuration");
    (config, yaml)
}

#[test]
fn the_rendered_config_is_one_the_gateway_accepts() {
    let gw = cluster_gateway();
    let social = channel("social", vec![NotificationType::NewLike, NotificationType::NewComment]);
    let ops = channel("ops", vec![NotificationType::MaintenanceScheduled]);
    let (config, yaml) = resolved(&gw, &[&social, &ops]);
    let names: Vec<&str> = config.catalog.channels().iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["ops", "social"]);
    assert!(config.catalog.get("ops").expect("ops").admin_only);
    assert_eq!(config.connections.max_per_user, 5);
    assert_eq!(config.listen.port(), GATEWAY_PORT as u16);
    assert_eq!(config.internal_listen.port(), GATEWAY_INTERNAL_PORT as u16);
    assert!(
        config.listen.ip().is_unspecified() && config.internal_listen.ip().is_unspecified(),
        "both reachable from other pods"
    );
    assert!(!yaml.contains("an-hs256-secret"), "no secret in the ConfigMap");
}

#[test]
fn a_redis_cluster_reaches_the_gateway_as_one() {
    use herald_gateway::config::StoreConfig;
    let cluster_of = |gw: &NotificationGateway| match resolved(gw, &[]).0.store {
        StoreConfig::Cluster { redis_cluster, .. } => redis_cluster,
        StoreConfig::Sqlite { .. } => panic!("cluster mode"),
    };
    let mut gw = cluster_gateway();
    assert!(!cluster_of(&gw), "one Redis unless said");
    assert!(!config_map(&gw, &[]).0.data.expect("data")["gateway.yaml"].contains("redis_cluster"));
    gw.spec.redis.as_mut().expect("redis").cluster = true;
    assert!(
        cluster_of(&gw),
        "spec.redis.cluster: the seed URL names a Redis Cluster"
    );
}

#[test]
fn trusted_proxies_reach_the_gateway_as_its_own_ranges() {
    let mut gw = cluster_gateway();
    let (config, yaml) = resolved(&gw, &[]);
    assert!(config.trusted_proxies.is_empty());
    assert!(!yaml.contains("trusted_proxies"), "unset stays unset: {yaml}");
    gw.spec.trusted_proxies = vec!["10.0.0.0/8".into(), "fd00::/8".into(), "192.0.2.10".into()];
    let (config, yaml) = resolved(&gw, &[]);
    assert!(
        yaml.contains("trusted_proxies: 10.0.0.0/8,fd00::/8,192.0.2.10"),
        "{yaml}"
    );
    let expected: Vec<herald_gateway::domain::ip_range::IpRange> = ["10.0.0.0/8", "fd00::/8", "192.0.2.10"]
        .iter()
        .map(|range| range.parse().expect("range"))
        .collect();
    assert_eq!(config.trusted_proxies, expected);
}

#[test]
fn tracing_reaches_the_gateway_with_each_pod_named_and_the_ratio_sampled() {
    let mut gw = cluster_gateway();
    let (config, yaml) = resolved(&gw, &[]);
    assert_eq!(config.otlp_endpoint, None, "off by default");
    assert!(!yaml.contains("otlp"), "{yaml}");
    let names = |pod: &PodSpec| -> Vec<String> {
        pod.containers[0]
            .env
            .iter()
            .flatten()
            .map(|var| var.name.clone())
            .collect()
    };
    assert!(!names(&pod_of(&gw)).iter().any(|name| name.starts_with("OTEL_")));

    gw.spec.tracing.otlp_endpoint = Some("http://otel-collector.monitoring:4318".into());
    gw.spec.tracing.sample_ratio = Some(0.25);
    let (config, _) = resolved(&gw, &[]);
    assert_eq!(
        config.otlp_endpoint.as_ref().map(|url| url.as_str()),
        Some("http://otel-collector.monitoring:4318/")
    );
    let pod = pod_of(&gw);
    let env = pod.containers[0].env.clone().expect("env");
    let value = |name: &str| {
        env.iter()
            .find(|var| var.name == name)
            .and_then(|var| var.value.clone())
    };
    let pod_name = env.iter().find(|var| var.name == "POD_NAME").expect("POD_NAME");
    assert_eq!(
        pod_name
            .value_from
            .as_ref()
            .and_then(|from| from.field_ref.as_ref())
            .map(|f| f.field_path.as_str()),
        Some("metadata.name")
    );
    let position = |name: &str| env.iter().position(|var| var.name == name).expect(name);
    assert!(
        position("POD_NAME") < position("OTEL_RESOURCE_ATTRIBUTES"),
        "declared before the variable that refers to it"
    );
    assert_eq!(
        value("OTEL_RESOURCE_ATTRIBUTES").as_deref(),
        Some("service.instance.id=$(POD_NAME),k8s.pod.name=$(POD_NAME),k8s.namespace.name=apps,herald.gateway=alerts")
    );
    assert_eq!(
        value("OTEL_TRACES_SAMPLER").as_deref(),
        Some("parentbased_traceidratio")
    );
    assert_eq!(value("OTEL_TRACES_SAMPLER_ARG").as_deref(), Some("0.25"));
}

#[test]
fn link_origins_reach_the_gateway_as_its_own_policy() {
    use herald_gateway::domain::link::{LinkPolicy, parse_origins};
    let mut gw = cluster_gateway();
    let (config, yaml) = resolved(&gw, &[]);
    assert_eq!(
        config.links,
        LinkPolicy::default(),
        "unset: any https link, icon names only"
    );
    assert!(!yaml.contains("origins"), "{yaml}");
    gw.spec.links.action_url_origins = Some(vec![
        "https://app.example.com".into(),
        "https://app.example.com:8443".into(),
    ]);
    gw.spec.links.icon_url_origins = vec!["https://cdn.example.com/".into()];
    let (config, _) = resolved(&gw, &[]);
    let expected = LinkPolicy {
        action_url_origins: Some(
            parse_origins("https://app.example.com,https://app.example.com:8443").expect("origins"),
        ),
        icon_url_origins: parse_origins("https://cdn.example.com").expect("origins"),
    };
    assert_eq!(config.links, expected);
    gw.spec.links.action_url_origins = Some(vec![]);
    let (config, _) = resolved(&gw, &[]);
    assert_eq!(
        config.links.action_url_origins,
        Some(vec![]),
        "empty: relative paths only"
    );
}

#[test]
fn the_checksum_follows_the_settings_but_not_the_channels() {
    let gw = cluster_gateway();
    let (_, first) = config_map(&gw, &[]);
    let (_, same) = config_map(&gw, &[]);
    assert_eq!(first, same);
    let mut changed = gw.clone();
    changed.spec.limits.connections_per_user = 3;
    assert_ne!(config_map(&changed, &[]).1, first);
    let social = channel("social", vec![NotificationType::NewLike]);
    let (with_social, checksum) = config_map(&gw, &[&social]);
    assert_eq!(
        checksum, first,
        "a channel change does not roll the pods: gateways reload channels"
    );
    let channels_of = |config: &ConfigMap| {
        config.metadata.annotations.clone().expect("annotations")[CHANNELS_CHECKSUM_ANNOTATION].clone()
    };
    assert_ne!(
        channels_of(&with_social),
        channels_of(&config_map(&gw, &[]).0),
        "but it changes the channels' checksum"
    );
    assert_ne!(with_social.data, config_map(&gw, &[]).0.data, "and the file");
    let mut scaled = gw.clone();
    scaled.spec.replicas = Some(5);
    assert_eq!(config_map(&scaled, &[]).1, first, "scaling does not restart pods");
    let template = deployment(&gw, IMAGE, &first).spec.expect("spec").template;
    assert_eq!(
        template.metadata.expect("meta").annotations.expect("annotations")[CHECKSUM_ANNOTATION],
        first
    );
}

#[test]
fn the_deployment_is_safe_by_default() {
    let gw = cluster_gateway();
    let spec = deployment(&gw, IMAGE, "abc").spec.expect("spec");
    assert_eq!(spec.replicas, Some(3));
    let rolling = spec.strategy.expect("strategy").rolling_update.expect("rolling");
    assert_eq!(
        rolling.max_unavailable,
        Some(IntOrString::Int(0)),
        "never below the desired count"
    );
    let pod = spec.template.spec.expect("pod");
    assert!(pod.termination_grace_period_seconds.expect("grace") > DRAIN_SECONDS);
    let container = &pod.containers[0];
    let security = container.security_context.as_ref().expect("security context");
    assert_eq!(security.run_as_non_root, Some(true));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    let probe_path = |p: &Option<Probe>| {
        p.as_ref()
            .and_then(|p| p.http_get.as_ref())
            .and_then(|g| g.path.clone())
    };
    assert_eq!(probe_path(&container.liveness_probe).as_deref(), Some("/healthz"));
    assert_eq!(probe_path(&container.readiness_probe).as_deref(), Some("/readyz"));
    let init = pod
        .init_containers
        .expect("the pods wait for the schema in cluster mode");
    assert_eq!(init[0].args.as_deref(), Some(&["await-migrations".to_owned()][..]));
    // Secrets only ever come from Secret references.
    let env = container.env.as_ref().expect("env");
    for name in [
        "DATABASE_URL",
        "REDIS_URL",
        "HERALD_JWT_HS256_SECRET",
        "HERALD_PUBLISHER_KEYS",
    ] {
        let var = env
            .iter()
            .find(|v| v.name == name)
            .unwrap_or_else(|| panic!("{name} missing"));
        assert!(
            var.value.is_none()
                && var
                    .value_from
                    .as_ref()
                    .and_then(|v| v.secret_key_ref.as_ref())
                    .is_some(),
            "{name}"
        );
    }
}

/// The gateway refuses to start without issuer and audience unless waived (issue 10): the waiver a
/// gateway's author writes reaches the gateway's file, and the gateway starts with it.
#[test]
fn the_issuer_and_audience_waiver_is_rendered_for_the_gateway() {
    use herald_gateway::config::{Config, Options};
    let resolve = |auth: serde_json::Value| {
        let gw = gateway(json!({"replicas": 1, "auth": auth}));
        let (config_map, _) = config_map(&gw, &[]);
        let yaml = config_map.data.expect("data")["gateway.yaml"].clone();
        let mut options = Options::from_yaml(&yaml).expect("the gateway parses every key");
        options.signing_keys_file = None;
        options.token_secret = Some("a-token-secret-that-is-long-enough-0123456".into());
        (yaml, Config::resolve(options).map(|_| ()))
    };
    let (yaml, config) = resolve(json!({"jwksUrl": "https://i/j", "allowAnyIssuerAndAudience": true}));
    assert!(yaml.contains("jwt_allow_any_issuer_and_audience: true"), "{yaml}");
    assert!(config.is_ok(), "{config:?}");
    let (yaml, config) = resolve(json!({"jwksUrl": "https://i/j", "issuer": "https://i/", "audience": "herald"}));
    assert!(!yaml.contains("jwt_allow_any_issuer_and_audience"), "{yaml}");
    assert!(config.is_ok(), "{config:?}");
    let (_, config) = resolve(json!({"jwksUrl": "https://i/j", "issuer": "https://i/"}));
    assert!(config.is_err(), "the gateway itself refuses it too");
}

#[test]
fn the_public_service_exposes_only_the_public_port_and_the_internal_one_stays_in_the_cluster() {
    let mut gw = cluster_gateway();
    gw.spec.service.service_type = ServiceType::LoadBalancer;
    let ports = |service: &Service| -> Vec<(String, i32, IntOrString)> {
        service
            .spec
            .as_ref()
            .and_then(|spec| spec.ports.clone())
            .expect("ports")
            .into_iter()
            .map(|p| (p.name.expect("name"), p.port, p.target_port.expect("target")))
            .collect()
    };
    let public = service(&gw);
    assert_eq!(
        ports(&public),
        [("http".to_owned(), 80, IntOrString::String("http".into()))],
        "publishing and metrics are not on the public Service"
    );
    assert_eq!(
        public.spec.as_ref().and_then(|s| s.type_.as_deref()),
        Some("LoadBalancer")
    );
    let internal = internal_service(&gw);
    assert_eq!(internal.metadata.name.as_deref(), Some("alerts-internal"));
    assert_eq!(
        internal.spec.as_ref().and_then(|s| s.type_.as_deref()),
        Some("ClusterIP"),
        "whatever type the public Service has"
    );
    assert_eq!(
        ports(&internal),
        [("internal".to_owned(), 9090, IntOrString::String("internal".into()))]
    );
    assert_eq!(
        internal.spec.as_ref().and_then(|s| s.selector.clone()),
        public.spec.as_ref().and_then(|s| s.selector.clone()),
        "the same pods"
    );
    // The selector is named, not derived: the gateway's name and instance, nothing else.
    let expected = BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "herald-gateway".to_owned()),
        ("app.kubernetes.io/instance".to_owned(), "alerts".to_owned()),
    ]);
    assert_eq!(
        public.spec.as_ref().and_then(|s| s.selector.clone()),
        Some(expected.clone())
    );
    let selector = deployment(&gw, IMAGE, "abc").spec.expect("spec").selector;
    assert_eq!(selector.match_labels, Some(expected));
    assert_eq!(
        selector_string(&gw),
        "app.kubernetes.io/instance=alerts,app.kubernetes.io/name=herald-gateway"
    );
    let pod = pod_of(&gw);
    let container_ports: Vec<(Option<String>, i32)> = pod.containers[0]
        .ports
        .clone()
        .expect("ports")
        .into_iter()
        .map(|p| (p.name, p.container_port))
        .collect();
    assert_eq!(
        container_ports,
        [(Some("http".to_owned()), 8080), (Some("internal".to_owned()), 9090)]
    );
}

#[test]
fn migrations_run_in_a_job_per_version_labelled_apart_with_their_own_credentials() {
    let mut gw = cluster_gateway();
    gw.spec.postgres.as_mut().expect("postgres").migration_url_secret_ref = Some(SecretKeyRef {
        name: "db-owner".into(),
        key: "url".into(),
    });
    let job = migration_job_of(&gw, &[]).expect("cluster mode migrates");
    assert_owned(&job.metadata);
    let name = job.metadata.name.clone().expect("name");
    assert!(
        name.starts_with("alerts-migrate-") && name.len() == "alerts-migrate-".len() + 10,
        "{name}"
    );
    let template = job.spec.expect("spec").template;
    let labels = template.metadata.expect("meta").labels.expect("labels");
    let selector = selector(&gw);
    assert!(
        !selector.iter().all(|(k, v)| labels.get(k) == Some(v)),
        "the gateway's selector must not match the migration pod: {labels:?}"
    );
    let pod = template.spec.expect("pod");
    assert_eq!(pod.containers[0].args.as_deref(), Some(&["migrate".to_owned()][..]));
    let names: Vec<String> = pod.containers[0]
        .env
        .clone()
        .expect("env")
        .into_iter()
        .map(|v| v.name)
        .collect();
    assert_eq!(
        names,
        ["DATABASE_URL", "REDIS_URL"],
        "no JWT or publisher secret in the migration pod"
    );
    let database = pod.containers[0]
        .env
        .clone()
        .expect("env")
        .into_iter()
        .find(|v| v.name == "DATABASE_URL")
        .expect("url");
    let from = database.value_from.expect("from").secret_key_ref.expect("secret");
    assert_eq!(
        (from.name.as_str(), from.key.as_str()),
        ("db-owner", "url"),
        "the migration credentials"
    );
    // A new image is a new Job; the same spec the same Job.
    assert_eq!(
        migration_job_of(&gw, &[]).expect("job").metadata.name,
        Some(name.clone())
    );
    // A changed credential (its Secret's resourceVersion) is a new Job, which runs again; a change
    // of a Secret the Job does not read is not.
    let versions = |db: &str| {
        vec![
            ("db-owner".to_owned(), db.to_owned()),
            ("jwt".to_owned(), "7".to_owned()),
        ]
    };
    let before = migration_job_of(&gw, &versions("1")).expect("job").metadata.name;
    assert_ne!(
        migration_job_of(&gw, &versions("2")).expect("job").metadata.name,
        before,
        "new password"
    );
    let other = vec![
        ("db-owner".to_owned(), "1".to_owned()),
        ("jwt".to_owned(), "8".to_owned()),
    ];
    assert_eq!(
        migration_job_of(&gw, &other).expect("job").metadata.name,
        before,
        "JWT secret changed"
    );
    let upgraded = migration_job(&gw, "ghcr.io/herald-dev/herald-gateway:9.9.9", &[]).expect("job");
    assert_ne!(upgraded.metadata.name, Some(name), "a new image");
    // Embedded gateways migrate their SQLite on open: no Job.
    assert!(migration_job_of(&gateway(json!({"auth": {"jwksUrl": "https://i/j"}})), &[]).is_none());
}

#[test]
fn named_cas_are_mounted_from_their_secrets_and_passed_to_the_gateway() {
    let gw = gateway(json!({
        "postgres": {"urlSecretRef": {"name": "db", "key": "url"}, "caSecretRef": {"name": "db-tls", "key": "ca.crt"}},
        "redis": {"urlSecretRef": {"name": "cache", "key": "url"}, "caSecretRef": {"name": "cache-tls", "key": "ca.pem"}},
        "auth": {"jwksUrl": "https://issuer.example/jwks"},
    }));
    let pod = pod_of(&gw);
    let env = pod.containers[0].env.clone().expect("env");
    let value = |name: &str| env.iter().find(|v| v.name == name).and_then(|v| v.value.clone());
    assert_eq!(
        value("HERALD_DATABASE_CA_FILE").as_deref(),
        Some("/etc/herald/tls/postgres-ca.crt")
    );
    assert_eq!(
        value("HERALD_REDIS_CA_FILE").as_deref(),
        Some("/etc/herald/tls/redis-ca.crt")
    );
    let tls = pod
        .volumes
        .expect("volumes")
        .into_iter()
        .find(|v| v.name == "tls")
        .expect("tls volume");
    let sources = tls.projected.expect("projected").sources.expect("sources");
    let files: Vec<(String, String, String)> = sources
        .into_iter()
        .map(|s| {
            let secret = s.secret.expect("secret");
            let item = secret.items.expect("items").remove(0);
            (secret.name, item.key, item.path)
        })
        .collect();
    assert_eq!(
        files,
        [
            ("db-tls".into(), "ca.crt".into(), "postgres-ca.crt".into()),
            ("cache-tls".into(), "ca.pem".into(), "redis-ca.crt".into())
        ]
    );
    let mount = pod.containers[0]
        .volume_mounts
        .clone()
        .expect("mounts")
        .into_iter()
        .find(|m| m.name == "tls")
        .expect("mount");
    assert_eq!(
        (mount.mount_path.as_str(), mount.read_only),
        ("/etc/herald/tls", Some(true))
    );
    // The CA Secrets must opt in like every other Secret the pods read.
    let uses: Vec<_> = crate::admission::secret_uses(&gw)
        .into_iter()
        .map(|u| u.source)
        .collect();
    assert!(
        uses.contains(&"spec.postgres.caSecretRef") && uses.contains(&"spec.redis.caSecretRef"),
        "{uses:?}"
    );
    // Without CAs: no volume, no variables.
    let plain = deployment(&cluster_gateway(), IMAGE, "abc")
        .spec
        .expect("spec")
        .template
        .spec
        .expect("pod");
    assert!(plain.volumes.expect("volumes").iter().all(|v| v.name != "tls"));
}

#[test]
fn an_embedded_gateway_keeps_its_data_on_a_claim_and_is_recreated_not_rolled() {
    let gw = gateway(
        json!({"auth": {"jwksUrl": "https://issuer.example/jwks"}, "storage": {"size": "5Gi", "storageClassName": "fast"}}),
    );
    let spec = deployment(&gw, IMAGE, "abc").spec.expect("spec");
    assert_eq!(spec.replicas, Some(1), "embedded without replicas: one");
    assert_eq!(spec.strategy.expect("strategy").type_.as_deref(), Some("Recreate"));
    let pod = spec.template.spec.expect("pod");
    let data = pod
        .volumes
        .expect("volumes")
        .into_iter()
        .find(|v| v.name == "data")
        .expect("data volume");
    assert_eq!(data.persistent_volume_claim.expect("a claim").claim_name, "alerts-data");
    let claim = data_claim(&gw).expect("claim");
    assert_owned(&claim.metadata);
    let claim = claim.spec.expect("spec");
    assert_eq!(claim.access_modes, Some(vec!["ReadWriteOnce".to_owned()]));
    assert_eq!(claim.storage_class_name.as_deref(), Some("fast"));
    assert_eq!(
        claim.resources.expect("resources").requests.expect("requests")["storage"].0,
        "5Gi"
    );
    // Cluster mode: no claim, a rolling update that never goes below the desired count.
    let cluster = cluster_gateway();
    assert!(data_claim(&cluster).is_none());
    let strategy = deployment(&cluster, IMAGE, "abc")
        .spec
        .expect("spec")
        .strategy
        .expect("strategy");
    assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
}

#[test]
fn a_single_embedded_replica_has_no_pdb_and_no_migrations() {
    let gw = gateway(json!({"replicas": 1, "auth": {"jwksUrl": "https://issuer.example/jwks"}}));
    assert!(pod_disruption_budget(&gw).is_none());
    let pod = pod_of(&gw);
    assert!(pod.init_containers.is_none());
    let env = pod.containers[0].env.clone().expect("env");
    assert!(env.iter().any(|v| v.name == "HERALD_DATA_DIR"));
    assert!(!env.iter().any(|v| v.name == "DATABASE_URL"));
}

#[test]
fn every_container_runs_the_image_it_is_told() {
    let gw = cluster_gateway();
    let pod = pod_of(&gw);
    let job = migration_job_of(&gw, &[])
        .expect("job")
        .spec
        .expect("spec")
        .template
        .spec
        .expect("pod");
    let images: Vec<Option<&str>> = pod
        .containers
        .iter()
        .chain(pod.init_containers.iter().flatten())
        .chain(&job.containers)
        .map(|c| c.image.as_deref())
        .collect();
    assert_eq!(images, [Some(IMAGE); 3], "gateway, await-migrations, migrate");
}
