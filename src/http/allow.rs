//! `405 Method Not Allowed` names the methods the path does allow (`Allow`, RFC 9110 15.5.6),
//! taken from the spec the routes are built from.

use std::sync::Arc;

use poem::{Endpoint, IntoResponse, Request, Response, Result, http::StatusCode};

/// Path templates of the spec with the methods each one serves.
#[derive(Debug, Default)]
pub struct AllowedMethods {
    routes: Vec<(Vec<String>, String)>,
}

impl AllowedMethods {
    /// From a spec's `paths`: `/api/users/{user_id}` with `get` serves `GET, HEAD` (poem
    /// answers HEAD with the GET handler).
    pub fn from_spec(spec: &serde_json::Value) -> Self {
        let mut routes = Vec::new();
        for (path, item) in spec["paths"].as_object().into_iter().flatten() {
            let mut methods: Vec<String> = item
                .as_object()
                .into_iter()
                .flatten()
                .map(|(method, _)| method.to_ascii_uppercase())
                .filter(|m| {
                    ["GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE"]
                        .contains(&m.as_str())
                })
                .collect();
            if methods.iter().any(|m| m == "GET") && !methods.iter().any(|m| m == "HEAD") {
                methods.push("HEAD".to_owned());
            }
            let segments = path.trim_start_matches('/').split('/').map(str::to_owned).collect();
            routes.push((segments, methods.join(", ")));
        }
        Self { routes }
    }

    /// The `Allow` value for a request path, if the spec has the path. Like the router, a
    /// literal segment wins over a parameter (`/api/workflows/retry-failed` is not a run id).
    pub fn lookup(&self, path: &str) -> Option<&str> {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        self.routes
            .iter()
            .filter(|(template, _)| {
                template.len() == segments.len()
                    && template.iter().zip(&segments).all(|(t, s)| t.starts_with('{') || t == s)
            })
            .max_by_key(|(template, _)| template.iter().filter(|t| !t.starts_with('{')).count())
            .map(|(_, allow)| allow.as_str())
    }
}

/// Adds `Allow` to the 405s of `ep`.
pub async fn add_allow_header<E: Endpoint>(
    allowed: Arc<AllowedMethods>,
    ep: Arc<E>,
    req: Request,
) -> Result<Response> {
    let path = req.uri().path().to_owned();
    let mut response = ep.call(req).await?.into_response();
    if response.status() == StatusCode::METHOD_NOT_ALLOWED
        && let Some(allow) = allowed.lookup(&path)
        && let Ok(value) = allow.parse()
    {
        response.headers_mut().insert(poem::http::header::ALLOW, value);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_by_segment() {
        let spec = serde_json::json!({"paths": {
            "/api/users/{user_id}": {"get": {}},
            "/api/users": {"post": {}},
            "/api/workflows/{run_id}/retry": {"post": {}},
            "/api/workflows/{run_id}": {"get": {}},
            "/api/workflows/retry-failed": {"post": {}},
        }});
        let allowed = AllowedMethods::from_spec(&spec);
        assert_eq!(allowed.lookup("/api/users/abc"), Some("GET, HEAD"));
        assert_eq!(allowed.lookup("/api/users"), Some("POST"));
        assert_eq!(allowed.lookup("/api/workflows/x/retry"), Some("POST"));
        assert_eq!(allowed.lookup("/api/workflows/x/cancel"), None);
        assert_eq!(allowed.lookup("/api/workflows/retry-failed"), Some("POST"));
        assert_eq!(allowed.lookup("/api/workflows/x"), Some("GET, HEAD"));
        assert_eq!(allowed.lookup("/nowhere"), None);
    }
}
