//! Image references and the patterns of the operator's image allow-list, compared as parsed
//! references, never as raw strings: a string prefix `ghcr.io/herald-dev/herald-gateway` would also
//! allow `ghcr.io/herald-dev/herald-gateway-evil` and `ghcr.io/herald-dev/herald-gateway.evil.com/x`.
//! Both sides are normalized the way container runtimes read them (`nginx` is
//! `docker.io/library/nginx`, no tag is `latest`), so a pattern means what a pull would fetch.

use std::fmt;
use std::str::FromStr;

/// Registry of references without one (Docker Hub), and its alias.
const DEFAULT_REGISTRY: &str = "docker.io";
const DEFAULT_REGISTRY_ALIAS: &str = "index.docker.io";

/// A parsed image reference: `registry/path[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageReference {
    /// `registry/path`, normalized (`docker.io/library/nginx`).
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

/// Why a string is not an image reference (or not a pattern).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a valid image reference: {why}")]
pub struct InvalidReference {
    text: String,
    why: &'static str,
}

fn invalid(text: &str, why: &'static str) -> InvalidReference {
    InvalidReference {
        text: text.chars().take(256).collect(),
        why,
    }
}

impl FromStr for ImageReference {
    type Err = InvalidReference;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (name_and_tag, digest) = match text.split_once('@') {
            Some((name, digest)) => (name, Some(digest)),
            None => (text, None),
        };
        if let Some(digest) = digest
            && !is_digest(digest)
        {
            return Err(invalid(text, "the digest is not `algorithm:hex`"));
        }
        // A tag's colon comes after the last slash; an earlier one is a registry's port.
        let last_slash = name_and_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_and_tag[last_slash..].split_once(':') {
            Some((_, tag)) => (&name_and_tag[..name_and_tag.len() - tag.len() - 1], Some(tag)),
            None => (name_and_tag, None),
        };
        if let Some(tag) = tag
            && !is_tag(tag)
        {
            return Err(invalid(text, "the tag is not 1-128 of A-Z, a-z, 0-9, `_`, `.`, `-`"));
        }
        Ok(Self {
            repository: repository(name).map_err(|why| invalid(text, why))?,
            tag: tag.map(str::to_owned),
            digest: digest.map(str::to_owned),
        })
    }
}

impl ImageReference {
    /// The tag a pull without a digest fetches.
    fn effective_tag(&self) -> &str {
        self.tag.as_deref().unwrap_or("latest")
    }
}

/// `registry/path` of a name without tag or digest, normalized.
fn repository(name: &str) -> Result<String, &'static str> {
    let (registry, path) = split_registry(name);
    let registry = normalized_registry(registry)?;
    let components: Vec<&str> = path.split('/').collect();
    if !components.iter().all(|c| is_path_component(c)) {
        return Err("a path component is not lowercase letters and digits separated by `.`, `_`, `__` or `-`");
    }
    if registry == DEFAULT_REGISTRY && components.len() == 1 {
        return Ok(format!("{DEFAULT_REGISTRY}/library/{path}"));
    }
    Ok(format!("{registry}/{path}"))
}

/// A first component is a registry when it looks like a host (a dot, a port, or `localhost`) and
/// something follows it; otherwise the name is a Docker Hub path.
fn split_registry(name: &str) -> (&str, &str) {
    match name.split_once('/') {
        Some((first, rest)) if looks_like_host(first) => (first, rest),
        _ => (DEFAULT_REGISTRY, name),
    }
}

fn looks_like_host(component: &str) -> bool {
    component.contains('.') || component.contains(':') || component == "localhost"
}

/// Host names compare case-insensitively; `index.docker.io` is Docker Hub.
fn normalized_registry(registry: &str) -> Result<String, &'static str> {
    let registry = registry.to_ascii_lowercase();
    let (host, port) = match registry.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (registry.as_str(), None),
    };
    let host_ok = host.split('.').all(|label| {
        !label.is_empty()
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    });
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    if !host_ok || !port_ok {
        return Err("the registry is not a host name with an optional port");
    }
    Ok(if registry == DEFAULT_REGISTRY_ALIAS {
        DEFAULT_REGISTRY.to_owned()
    } else {
        registry
    })
}

/// `[a-z0-9]+` runs joined by `.`, `_`, `__` or any number of `-` (the distribution spec's grammar).
fn is_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.first().is_none_or(|b| !alnum(b)) || bytes.last().is_none_or(|b| !alnum(b)) {
        return false;
    }
    component
        .split(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        .filter(|separator| !separator.is_empty())
        .all(|separator| matches!(separator, "." | "_" | "__") || separator.bytes().all(|b| b == b'-'))
}

fn is_tag(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    tag.len() <= 128 && tag.bytes().next().is_some_and(word) && tag.bytes().all(|b| word(b) || b == b'.' || b == b'-')
}

fn is_digest(digest: &str) -> bool {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return false;
    };
    !algorithm.is_empty()
        && algorithm
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b))
        && hex.len() >= 32
        && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// One entry of the allow-list, as written (`--allowed-images`, chart value `gateway.allowedImages`):
///
/// - `registry/repo`: that repository, any tag or digest;
/// - `registry/repo:tag`: that tag only, and without a digest (a digest, not the tag, decides what
///   runs);
/// - `registry/repo@sha256:...`: that digest only (with or without a tag beside it);
/// - `registry/path/*`: every repository below `registry/path/` (whole path components only);
/// - `*`: any well-formed image (turns the check off).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePattern {
    text: String,
    rule: Rule,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    Any,
    /// A normalized repository prefix ending in `/`.
    Below(String),
    Repository(String),
    Tag {
        repository: String,
        tag: String,
    },
    Digest {
        repository: String,
        digest: String,
    },
}

impl FromStr for ImagePattern {
    type Err = InvalidReference;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let rule = if text == "*" {
            Rule::Any
        } else if let Some(prefix) = text.strip_suffix("/*") {
            Rule::Below(below(prefix).map_err(|why| invalid(text, why))?)
        } else {
            let reference: ImageReference = text.parse()?;
            match (reference.tag, reference.digest) {
                (_, Some(digest)) => Rule::Digest {
                    repository: reference.repository,
                    digest,
                },
                (Some(tag), None) => Rule::Tag {
                    repository: reference.repository,
                    tag,
                },
                (None, None) => Rule::Repository(reference.repository),
            }
        };
        Ok(Self {
            text: text.to_owned(),
            rule,
        })
    }
}

/// The normalized prefix of `registry/path/*`; a bare registry (`ghcr.io/*`) is allowed.
fn below(prefix: &str) -> Result<String, &'static str> {
    if !prefix.contains('/') && looks_like_host(prefix) {
        return Ok(format!("{}/", normalized_registry(prefix)?));
    }
    let (registry, path) = split_registry(prefix);
    if !path.split('/').all(is_path_component) {
        return Err("a path component is not lowercase letters and digits separated by `.`, `_`, `__` or `-`");
    }
    Ok(format!("{}/{path}/", normalized_registry(registry)?))
}

impl ImagePattern {
    pub fn allows(&self, image: &ImageReference) -> bool {
        match &self.rule {
            Rule::Any => true,
            Rule::Below(prefix) => image.repository.starts_with(prefix.as_str()),
            Rule::Repository(repository) => image.repository == *repository,
            Rule::Tag { repository, tag } => {
                image.repository == *repository && image.digest.is_none() && image.effective_tag() == tag
            }
            Rule::Digest { repository, digest } => {
                image.repository == *repository && image.digest.as_deref() == Some(digest.as_str())
            }
        }
    }
}

impl fmt::Display for ImagePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn allowed(pattern: &str, image: &str) -> bool {
        let pattern: ImagePattern = pattern.parse().expect("pattern");
        image.parse().is_ok_and(|image| pattern.allows(&image))
    }

    #[test]
    fn a_repository_allows_its_tags_and_digests_and_nothing_that_merely_starts_like_it() {
        let repo = "ghcr.io/herald-dev/herald-gateway";
        for image in [
            repo.to_owned(),
            format!("{repo}:0.1.0"),
            format!("{repo}@{DIGEST}"),
            format!("{repo}:0.1.0@{DIGEST}"),
            "GHCR.IO/herald-dev/herald-gateway:1".to_owned(),
        ] {
            assert!(allowed(repo, &image), "{image}");
        }
        for image in [
            format!("{repo}-evil:0.1.0"),
            format!("{repo}.evil.com/x:1"),
            format!("{repo}/sub:1"),
            format!("{repo}evil"),
            "ghcr.io/herald-dev/herald:1".to_owned(),
            format!("evil.io/{repo}:1"),
            "ghcr.io:443/herald-dev/herald-gateway:1".to_owned(),
        ] {
            assert!(!allowed(repo, &image), "{image}");
        }
    }

    #[test]
    fn a_tag_pattern_allows_that_tag_only_and_never_with_a_digest() {
        let pattern = "ghcr.io/herald-dev/herald-gateway:0.1.0";
        assert!(allowed(pattern, "ghcr.io/herald-dev/herald-gateway:0.1.0"));
        assert!(!allowed(pattern, "ghcr.io/herald-dev/herald-gateway:0.1.1"));
        assert!(!allowed(pattern, "ghcr.io/herald-dev/herald-gateway:0.1.0-evil"));
        assert!(
            !allowed(pattern, &format!("ghcr.io/herald-dev/herald-gateway:0.1.0@{DIGEST}")),
            "the digest, not the tag, decides what runs"
        );
        assert!(allowed("example.com/app:latest", "example.com/app"), "no tag is latest");
    }

    #[test]
    fn a_digest_pattern_allows_that_digest_only() {
        let pattern = format!("ghcr.io/herald-dev/herald-gateway@{DIGEST}");
        assert!(allowed(
            &pattern,
            &format!("ghcr.io/herald-dev/herald-gateway@{DIGEST}")
        ));
        assert!(allowed(
            &pattern,
            &format!("ghcr.io/herald-dev/herald-gateway:any@{DIGEST}")
        ));
        assert!(!allowed(&pattern, "ghcr.io/herald-dev/herald-gateway:0.1.0"));
        let other = DIGEST.replace("0123", "fedc");
        assert!(!allowed(
            &pattern,
            &format!("ghcr.io/herald-dev/herald-gateway@{other}")
        ));
    }

    #[test]
    fn a_path_pattern_allows_whole_components_below_it() {
        assert!(allowed("ghcr.io/herald-dev/*", "ghcr.io/herald-dev/herald-gateway:1"));
        assert!(allowed("ghcr.io/herald-dev/*", "ghcr.io/herald-dev/team/gateway:1"));
        assert!(!allowed("ghcr.io/herald-dev/*", "ghcr.io/herald-dev-evil/gateway:1"));
        assert!(!allowed("ghcr.io/herald-dev/*", "ghcr.io/herald-dev:1"));
        assert!(allowed("registry.local:5000/*", "registry.local:5000/gateway:1"));
        assert!(!allowed("registry.local:5000/*", "registry.local:5001/gateway:1"));
        assert!(!allowed("registry.local/*", "registry.local.evil.com/gateway:1"));
        assert!(allowed("herald/*", "herald/gateway:1"), "a Docker Hub namespace");
        assert!(allowed("docker.io/herald/*", "index.docker.io/herald/gateway"));
        assert!(allowed("*", "anything.example/at/all:1"));
    }

    #[test]
    fn docker_hub_names_are_normalized_on_both_sides() {
        assert!(allowed("docker.io/library/nginx", "nginx:1.27"));
        assert!(allowed("nginx", "docker.io/library/nginx"));
        assert!(allowed("nginx", "index.docker.io/library/nginx"));
        assert!(!allowed("nginx", "evil/nginx"));
        assert!(allowed("localhost:5000/gateway", "localhost:5000/gateway:dev"));
        assert!(!allowed("localhost/gateway", "docker.io/localhost/gateway"));
    }

    #[test]
    fn malformed_references_are_never_allowed() {
        let repo = "ghcr.io/herald-dev/herald-gateway";
        for image in [
            "",
            " ghcr.io/herald-dev/herald-gateway",
            "ghcr.io/herald-dev/herald-gateway:1.0:2",
            "ghcr.io/herald-dev/Herald-Gateway:1",
            "ghcr.io/herald-dev//herald-gateway",
            "ghcr.io/herald-dev/../herald-gateway",
            "ghcr.io/herald-dev/herald-gateway@sha256:short",
            "ghcr.io/herald-dev/herald-gateway:\n1",
            "ghcr.io/herald-dev/herald-gateway:-1",
        ] {
            assert!(!allowed(repo, image), "{image:?}");
            assert!(!allowed("*", image), "{image:?} is not an image at all");
        }
        assert!("ghcr.io/UPPER/*".parse::<ImagePattern>().is_err());
        assert!("evil.io/x@nope".parse::<ImagePattern>().is_err());
    }
}
