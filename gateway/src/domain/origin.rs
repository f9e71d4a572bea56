//! Which web origins may open a WebSocket (`HERALD_ALLOWED_ORIGINS`). A browser sends its page's
//! origin with every WebSocket upgrade and lets any page open one to any host: without a check, a
//! page on another site could use a visitor's connection token if it ever got hold of one
//! (cross-site WebSocket hijacking). Clients that are not browsers send no `Origin` and are not
//! concerned.

/// An origin as compared: scheme, host and port, lowercase, the scheme's default port left out.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin(String);

impl Origin {
    fn parse(text: &str) -> Result<Origin, String> {
        let text = text.trim();
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| format!("`{text}` is not an origin (scheme://host[:port])"))?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "https" => ":443",
            "http" => ":80",
            _ => return Err(format!("`{text}`: the scheme must be http or https")),
        };
        if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
            return Err(format!("`{text}` is not an origin: no path, query, user or spaces"));
        }
        let host = rest.to_ascii_lowercase();
        let host = host.strip_suffix(default_port).unwrap_or(&host);
        Ok(Origin(format!("{scheme}://{host}")))
    }
}

/// The allow-list; empty allows every origin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedOrigins(Vec<Origin>);

impl AllowedOrigins {
    /// A comma-separated list of origins such as `https://app.example.com,http://localhost:3000`.
    pub fn parse(list: &str) -> Result<AllowedOrigins, String> {
        list.split(',')
            .filter(|part| !part.trim().is_empty())
            .map(Origin::parse)
            .collect::<Result<Vec<_>, _>>()
            .map(AllowedOrigins)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether an upgrade with this `Origin` header may go on. Without a list, every one; without
    /// the header, yes (not a browser); `null` (sandboxed frames, local files) or anything unparsable
    /// only when there is no list.
    pub fn allows(&self, origin: Option<&str>) -> bool {
        match origin {
            _ if self.0.is_empty() => true,
            None => true,
            Some(origin) => Origin::parse(origin).is_ok_and(|origin| self.0.contains(&origin)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_match_by_scheme_host_and_port_whatever_the_case_and_default_port() {
        let allowed = AllowedOrigins::parse("https://App.Example.com, http://localhost:3000").expect("list");
        assert!(allowed.allows(Some("https://app.example.com")));
        assert!(allowed.allows(Some("https://app.example.com:443")));
        assert!(allowed.allows(Some("http://localhost:3000")));
        assert!(!allowed.allows(Some("http://app.example.com")), "another scheme");
        assert!(
            !allowed.allows(Some("https://app.example.com.evil.example")),
            "another host"
        );
        assert!(!allowed.allows(Some("https://evil.example")));
        assert!(!allowed.allows(Some("http://localhost:3001")), "another port");
        assert!(!allowed.allows(Some("null")));
        assert!(allowed.allows(None), "not a browser");
        assert!(AllowedOrigins::default().allows(Some("https://anything.example")));
    }

    #[test]
    fn entries_that_are_not_origins_are_refused() {
        for bad in [
            "app.example.com",
            "https://app.example.com/path",
            "ftp://x",
            "https://user@x",
            "https://",
        ] {
            assert!(AllowedOrigins::parse(bad).is_err(), "{bad}");
        }
    }
}
