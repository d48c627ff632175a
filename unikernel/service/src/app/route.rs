//! The service's endpoints.

use crate::http::Method;

/// Where a request path leads. Every response is counted under one route.
///
/// To add an endpoint, add a variant here (with its label and methods) and
/// its handler in [`App`](super::App)'s dispatch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// `/`: the HTML status page.
    Home,
    /// `/healthz`: liveness.
    Health,
    /// `/metrics`: Prometheus exposition.
    Metrics,
    /// `/v1/kv`: the key listing.
    Keys,
    /// `/v1/kv/{key}`: one entry.
    Key,
    /// `/v1/integrity`: the watchdog's state.
    Integrity,
    /// `/v1/attestation/report`: a signed runtime report.
    Report,
    /// Any other path, and requests refused before routing.
    Other,
}

const READ_ONLY: &[Method] = &[Method::Get, Method::Head];
const READ_WRITE: &[Method] = &[Method::Get, Method::Head, Method::Put, Method::Delete];

/// Paths below this prefix are [`Route::Key`]; the rest of the path is the key.
const KEY_PREFIX: &[u8] = b"/v1/kv/";

impl Route {
    /// All routes, in the order of [`index`](Self::index).
    pub const ALL: [Self; 8] = [
        Self::Home,
        Self::Health,
        Self::Metrics,
        Self::Keys,
        Self::Key,
        Self::Integrity,
        Self::Report,
        Self::Other,
    ];

    /// Position in [`ALL`](Self::ALL), for tables indexed by route.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The `route` label in metrics: the path, or its template.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Home => "/",
            Self::Health => "/healthz",
            Self::Metrics => "/metrics",
            Self::Keys => "/v1/kv",
            Self::Key => "/v1/kv/{key}",
            Self::Integrity => "/v1/integrity",
            Self::Report => "/v1/attestation/report",
            Self::Other => "other",
        }
    }

    /// Whether the route serves the business (or says the service is
    /// healthy): these answer 503 once the watchdog's `degrade` reaction has
    /// fired. The operator's and verifier's routes keep answering.
    pub const fn degrades(self) -> bool {
        matches!(self, Self::Home | Self::Health | Self::Keys | Self::Key)
    }

    /// The methods the route answers (listed in `Allow` on a 405).
    pub const fn methods(self) -> &'static [Method] {
        match self {
            Self::Key => READ_WRITE,
            Self::Other => &[],
            Self::Home
            | Self::Health
            | Self::Metrics
            | Self::Keys
            | Self::Integrity
            | Self::Report => READ_ONLY,
        }
    }

    /// The route of `path` (without query), and for [`Route::Key`] the key
    /// part of the path, still to be validated.
    pub fn resolve(path: &[u8]) -> (Self, &[u8]) {
        if let Some(key) = path.strip_prefix(KEY_PREFIX) {
            return (Self::Key, key);
        }
        // Labels of the other routes are their paths ("other" is no path).
        let route = Self::ALL
            .into_iter()
            .find(|route| route.label().as_bytes() == path)
            .unwrap_or(Self::Other);
        (route, &[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_paths() {
        let cases: &[(&str, Route, &str)] = &[
            ("/", Route::Home, ""),
            ("/healthz", Route::Health, ""),
            ("/metrics", Route::Metrics, ""),
            ("/v1/kv", Route::Keys, ""),
            ("/v1/kv/abc", Route::Key, "abc"),
            ("/v1/kv/", Route::Key, ""),
            ("/v1/kv/a/b", Route::Key, "a/b"),
            ("/v1/kv/{key}", Route::Key, "{key}"),
            ("/v1/integrity", Route::Integrity, ""),
            ("/v1/attestation/report", Route::Report, ""),
            ("/v1/attestation", Route::Other, ""),
            ("/healthz/", Route::Other, ""),
            ("/HEALTHZ", Route::Other, ""),
            ("/v1", Route::Other, ""),
            ("other", Route::Other, ""),
            ("", Route::Other, ""),
        ];
        for &(path, route, key) in cases {
            assert_eq!(
                Route::resolve(path.as_bytes()),
                (route, key.as_bytes()),
                "{path}"
            );
        }
    }

    #[test]
    fn route_table_is_consistent() {
        for (i, route) in Route::ALL.into_iter().enumerate() {
            assert_eq!(route.index(), i);
            assert_eq!(route.methods().is_empty(), route == Route::Other);
        }
    }
}
