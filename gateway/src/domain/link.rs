//! The two fields of a notification that a client follows or loads: `actionUrl` (a deep link the
//! user opens) and `icon` (a name of the client's own icon set, or an image the client fetches), and
//! the origins a deployment allows for each.
//!
//! URLs are parsed as browsers parse them (WHATWG, the `url` crate) and compared by origin, never by
//! string prefix: `https://app.example.com.evil.example` is not `https://app.example.com`. The host
//! must also be written as that parser reads it, but for letter case (no default port, no numeric
//! IPv4 spellings such as `https://2130706433/`, no percent-encoding), so that a client with another
//! URL parser cannot reach another host than the one checked here.

use std::fmt;
use std::str::FromStr;

/// Most characters of an `actionUrl` (AC15).
pub const MAX_ACTION_URL_CHARS: usize = 2_048;
/// Most characters of an `icon` (the column is 255 characters).
pub const MAX_ICON_CHARS: usize = 255;
/// Most characters of an icon name.
pub const MAX_ICON_NAME_CHARS: usize = 64;

/// `https://host` or `https://host:port`, as browsers serialize an origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin(String);

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An allowed origin as configured: `https://app.example.com`, a trailing `/` tolerated, nothing else.
impl FromStr for Origin {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let (origin, rest) = https_origin(text).map_err(|reason| format!("`{text}`: {reason}"))?;
        if !matches!(rest, "" | "/") {
            return Err(format!("`{text}` is not an origin: write `{origin}`, without a path"));
        }
        Ok(origin)
    }
}

/// Comma-separated origins, as in `HERALD_ACTION_URL_ORIGINS`; empty entries are ignored.
pub fn parse_origins(list: &str) -> Result<Vec<Origin>, String> {
    list.split(',')
        .filter(|entry| !entry.trim().is_empty())
        .map(str::parse)
        .collect()
}

/// Which origins links may point to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkPolicy {
    /// `None`: any https URL (the default, for compatibility); `Some`: only these origins.
    pub action_url_origins: Option<Vec<Origin>>,
    /// Origins icon images may be fetched from; none by default, since a client fetches an icon as
    /// soon as it shows the notification, telling that host who read what and when.
    pub icon_url_origins: Vec<Origin>,
}

/// A deep link: a relative path (`/mocs/42`, not `//host`) or an https URL without credentials,
/// of an allowed origin when `HERALD_ACTION_URL_ORIGINS` is set.
pub fn check_action_url(url: &str, policy: &LinkPolicy) -> Result<(), String> {
    if url.chars().count() > MAX_ACTION_URL_CHARS {
        return Err(format!("at most {MAX_ACTION_URL_CHARS} characters"));
    }
    check_url_characters(url)?;
    // `//evil.example` is protocol-relative: a different origin, not a path.
    if url.starts_with('/') && !url.starts_with("//") {
        return Ok(());
    }
    if !url.starts_with("https://") {
        return Err("must be a relative path starting with `/` or an https:// URL".into());
    }
    let (origin, _) = https_origin(url)?;
    match &policy.action_url_origins {
        Some(allowed) if !allowed.contains(&origin) => Err(format!(
            "`{origin}` is not an allowed origin (HERALD_ACTION_URL_ORIGINS)"
        )),
        _ => Ok(()),
    }
}

/// An icon: a name the client maps to its own icon set (`bell`, `upload-complete`:
/// `[a-z0-9][a-z0-9_-]{0,63}`), or an https URL of an origin in `HERALD_ICON_URL_ORIGINS`.
pub fn check_icon(icon: &str, policy: &LinkPolicy) -> Result<(), String> {
    if is_icon_name(icon) {
        return Ok(());
    }
    if !icon.starts_with("https://") {
        return Err(format!(
            "an icon name (a-z, 0-9, `-`, `_`, at most {MAX_ICON_NAME_CHARS} characters, e.g. `bell`) or an https:// URL"
        ));
    }
    if icon.chars().count() > MAX_ICON_CHARS {
        return Err(format!("at most {MAX_ICON_CHARS} characters"));
    }
    check_url_characters(icon)?;
    let (origin, _) = https_origin(icon)?;
    if policy.icon_url_origins.contains(&origin) {
        Ok(())
    } else {
        Err(format!(
            "`{origin}` is not an allowed icon origin (HERALD_ICON_URL_ORIGINS); or use an icon name"
        ))
    }
}

fn is_icon_name(icon: &str) -> bool {
    let lower_or_digit = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    match icon.as_bytes() {
        [first, rest @ ..] => {
            rest.len() < MAX_ICON_NAME_CHARS
                && lower_or_digit(*first)
                && rest.iter().all(|&b| lower_or_digit(b) || b == b'-' || b == b'_')
        }
        [] => false,
    }
}

/// URLs travel as printable ASCII (non-ASCII percent-encoded, hosts in punycode): no white space,
/// control or invisible characters, and no look-alike letters in a host. No backslashes either,
/// which browsers read as `/` and other parsers do not.
fn check_url_characters(url: &str) -> Result<(), String> {
    if url.bytes().all(|b| b.is_ascii_graphic() && b != b'\\') {
        Ok(())
    } else {
        Err("must be printable ASCII without spaces or backslashes (percent-encode the rest, punycode hosts)".into())
    }
}

/// The origin of an `https://` URL and what follows its authority. Refuses credentials and hosts
/// not written as browsers read them (see the module's documentation).
fn https_origin(url: &str) -> Result<(Origin, &str), String> {
    let Some(rest) = url.strip_prefix("https://") else {
        return Err("must start with https://".into());
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, after) = rest.split_at(end);
    if authority.contains('@') {
        return Err("must not carry credentials (`user@`)".into());
    }
    let parsed = url::Url::parse(url).map_err(|err| format!("not a valid URL: {err}"))?;
    let host = parsed.host_str().unwrap_or_default();
    let canonical = match parsed.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };
    if host.is_empty() || authority.to_ascii_lowercase() != canonical {
        return Err(format!(
            "the host must be written as browsers read it: `https://{canonical}`"
        ));
    }
    Ok((Origin(format!("https://{canonical}")), after))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only(origins: &str) -> LinkPolicy {
        LinkPolicy {
            action_url_origins: Some(parse_origins(origins).expect("origins")),
            icon_url_origins: parse_origins(origins).expect("origins"),
        }
    }

    #[test]
    fn action_urls_are_relative_paths_or_https_only() {
        let any = LinkPolicy::default();
        for ok in [
            "/mocs/42",
            "/a?b=c#d",
            "https://example.com/x",
            "https://example.com",
            "https://[2001:db8::1]:8443/x",
        ] {
            assert_eq!(check_action_url(ok, &any), Ok(()), "{ok}");
        }
        for bad in [
            "javascript:alert(1)",
            "JAVASCRIPT:alert(1)",
            "http://example.com",
            "//evil.example/x",
            "mocs/42",
            "https://",
            "https:evil.example",
            "/a b",
            "https://user:pw@example.com",
            "https://@example.com",
            "data:text/html,x",
            "/\\evil",
            "https://example.com/\u{202E}x",
            "https://exämple.com/",
        ] {
            assert!(check_action_url(bad, &any).is_err(), "{bad}");
        }
        assert!(check_action_url(&format!("/{}", "a".repeat(MAX_ACTION_URL_CHARS)), &any).is_err());
    }

    #[test]
    fn hosts_must_be_written_as_browsers_read_them() {
        let any = LinkPolicy::default();
        for spelled in [
            "https://example.com:443/",
            "https://exam%70le.com/",
            "https://2130706433/",
            "https://0x7f.1/",
            "https://example.com%2F@evil/",
        ] {
            assert!(check_action_url(spelled, &any).is_err(), "{spelled}");
        }
        assert_eq!(check_action_url("https://example.com:8443/x", &any), Ok(()));
        assert_eq!(
            check_action_url("https://EXAMPLE.com/", &any),
            Ok(()),
            "case is no ambiguity"
        );
        let app = only("https://app.example.com");
        assert_eq!(check_action_url("https://App.Example.com/x", &app), Ok(()));
    }

    #[test]
    fn an_origin_allow_list_is_matched_by_scheme_host_and_port() {
        let policy = only("https://app.example.com, https://app.example.com:8443/");
        for ok in [
            "https://app.example.com/x",
            "https://app.example.com",
            "https://app.example.com:8443/y",
            "/relative",
        ] {
            assert_eq!(check_action_url(ok, &policy), Ok(()), "{ok}");
        }
        for bad in [
            "https://evil.example/",
            "https://app.example.com.evil.example/",
            "https://evil.example/https://app.example.com",
            "https://sub.app.example.com/",
            "https://app.example.com:444/",
        ] {
            let reason = check_action_url(bad, &policy).expect_err(bad);
            assert!(reason.contains("not an allowed origin"), "{bad}: {reason}");
        }
    }

    #[test]
    fn configured_origins_are_bare_https_origins() {
        assert_eq!(parse_origins("").expect("empty"), vec![]);
        assert_eq!(
            parse_origins(" https://a.example , https://b.example:8443/ ,").expect("two"),
            vec![
                Origin("https://a.example".into()),
                Origin("https://b.example:8443".into())
            ]
        );
        assert_eq!("https://A.example".parse(), Ok(Origin("https://a.example".into())));
        for bad in [
            "http://a.example",
            "https://a.example/path",
            "https://a.example?",
            "a.example",
            "https://u@a.example",
        ] {
            assert!(bad.parse::<Origin>().is_err(), "{bad}");
        }
    }

    #[test]
    fn icons_are_names_or_urls_of_allowed_icon_origins() {
        let none = LinkPolicy::default();
        for name in [
            "bell",
            "upload-complete",
            "new_like",
            "0",
            &"a".repeat(MAX_ICON_NAME_CHARS),
        ] {
            assert_eq!(check_icon(name, &none), Ok(()), "{name}");
        }
        for bad in [
            "",
            "Bell",
            "-bell",
            "bell icon",
            "<img src=x onerror=alert(1)>",
            "javascript:alert(1)",
            "/icons/bell.svg",
            &"a".repeat(MAX_ICON_NAME_CHARS + 1),
            "https://cdn.example.com/bell.png",
        ] {
            assert!(check_icon(bad, &none).is_err(), "{bad}");
        }
        let cdn = LinkPolicy {
            icon_url_origins: parse_origins("https://cdn.example.com").expect("origin"),
            ..LinkPolicy::default()
        };
        assert_eq!(check_icon("https://cdn.example.com/bell.png", &cdn), Ok(()));
        assert!(check_icon("https://evil.example/bell.png", &cdn).is_err());
        assert!(check_icon(&format!("https://cdn.example.com/{}", "a".repeat(MAX_ICON_CHARS)), &cdn).is_err());
    }
}
