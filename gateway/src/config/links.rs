//! `HERALD_ACTION_URL_ORIGINS` and `HERALD_ICON_URL_ORIGINS` into a [`LinkPolicy`]; a bad origin
//! stops the start with the setting's name.

use herald_contract::Options;

use crate::domain::link::{LinkPolicy, parse_origins};

use super::{ConfigError, invalid};

pub(super) fn link_policy(o: &Options) -> Result<LinkPolicy, ConfigError> {
    let origins = |name: &str, list: Option<&str>| {
        parse_origins(list.unwrap_or_default()).map_err(|e| invalid(format!("{name}: {e}")))
    };
    // Set but empty (`HERALD_ACTION_URL_ORIGINS=`) is "no origin": only relative paths.
    let action_url_origins = match o.action_url_origins.as_deref() {
        Some(list) => Some(origins("HERALD_ACTION_URL_ORIGINS", Some(list))?),
        None => None,
    };
    Ok(LinkPolicy {
        action_url_origins,
        icon_url_origins: origins("HERALD_ICON_URL_ORIGINS", o.icon_url_origins.as_deref())?,
    })
}

impl LinkPolicy {
    /// For `check-config`.
    pub fn describe(&self) -> serde_json::Value {
        let list =
            |origins: &[crate::domain::link::Origin]| origins.iter().map(ToString::to_string).collect::<Vec<_>>();
        serde_json::json!({
            "actionUrlOrigins": self.action_url_origins.as_deref().map(list),
            "iconUrlOrigins": list(&self.icon_url_origins),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(action: Option<&str>, icon: Option<&str>) -> Result<LinkPolicy, ConfigError> {
        link_policy(&Options {
            action_url_origins: action.map(Into::into),
            icon_url_origins: icon.map(Into::into),
            ..Options::default()
        })
    }

    #[test]
    fn unset_allows_any_https_action_url_and_no_icon_url() {
        assert_eq!(policy(None, None).expect("defaults"), LinkPolicy::default());
    }

    #[test]
    fn origins_are_read_and_a_bad_one_names_the_setting() {
        let links = policy(Some("https://app.example.com"), Some("https://cdn.example.com/")).expect("valid");
        assert_eq!(
            links.describe()["actionUrlOrigins"],
            serde_json::json!(["https://app.example.com"])
        );
        assert_eq!(
            links.describe()["iconUrlOrigins"],
            serde_json::json!(["https://cdn.example.com"])
        );
        assert_eq!(policy(Some(""), None).expect("empty").action_url_origins, Some(vec![]));
        let err = policy(Some("http://app.example.com"), None).expect_err("http");
        assert!(err.to_string().contains("HERALD_ACTION_URL_ORIGINS"), "{err}");
        let err = policy(None, Some("https://cdn.example.com/icons")).expect_err("a path");
        assert!(err.to_string().contains("HERALD_ICON_URL_ORIGINS"), "{err}");
    }
}
