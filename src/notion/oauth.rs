//! OAuth for public integrations: the authorize URL the user is sent to, and the code
//! exchange (`POST /v1/oauth/token`).

use std::fmt;

use reqwest::{Method, Url};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    client::{NotionClient, decode},
    error::NotionError,
};

/// Notion's answer to a successful code exchange. Store all of it, keyed by `bot_id` (one per
/// authorisation) and `workspace_id` (webhook events name the workspace, not the user).
///
/// Holds secrets: `Debug` redacts them and there is deliberately no `Serialize`, so the token
/// cannot end up in a log line or a JSON body by accident.
#[derive(Clone, Deserialize)]
pub struct OAuthToken {
    pub access_token: String,
    #[serde(default)]
    pub token_type: Option<String>,
    /// Newer integrations get one; older answers have none (the lifetime is undocumented).
    #[serde(default)]
    pub refresh_token: Option<String>,
    pub bot_id: String,
    pub workspace_id: String,
    #[serde(default)]
    pub workspace_name: Option<String>,
    #[serde(default)]
    pub workspace_icon: Option<String>,
    /// `{"type":"user","user":{...}}` or `{"type":"workspace","workspace":true}`.
    #[serde(default)]
    pub owner: Value,
    #[serde(default)]
    pub duplicated_template_id: Option<String>,
    #[serde(default)]
    pub request_id: Option<String>,
}

impl fmt::Debug for OAuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthToken")
            .field("access_token", &"[redacted]")
            .field("token_type", &self.token_type)
            .field("refresh_token", &self.refresh_token.as_ref().map(|_| "[redacted]"))
            .field("bot_id", &self.bot_id)
            .field("workspace_id", &self.workspace_id)
            .field("workspace_name", &self.workspace_name)
            .field("workspace_icon", &self.workspace_icon)
            .field("owner", &self.owner)
            .field("duplicated_template_id", &self.duplicated_template_id)
            .field("request_id", &self.request_id)
            .finish()
    }
}

/// Notion's answer to a refresh (`grant_type: refresh_token`): a new access token and,
/// normally, a new refresh token (the old one may no longer work). Only these two are read: the
/// rest of the answer (workspace, owner) describes the same authorisation as before.
#[derive(Clone, Deserialize)]
pub struct RefreshedToken {
    pub access_token: String,
    #[serde(default)]
    pub refresh_token: Option<String>,
}

impl fmt::Debug for RefreshedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshedToken")
            .field("access_token", &"[redacted]")
            .field("refresh_token", &self.refresh_token.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

impl NotionClient {
    /// `{base}/v1/oauth/authorize?client_id=…&response_type=code&owner=user&redirect_uri=…&state=…`:
    /// where the user grants the integration access (Notion asks for no scope; access is the
    /// integration's capabilities plus the pages the user picks). Notion then redirects the
    /// browser to `redirect_uri` with `code` and `state`.
    pub fn oauth_authorize_url(&self, client_id: &str, redirect_uri: &str, state: &str) -> Url {
        let mut url = self.url(&["oauth", "authorize"]);
        url.query_pairs_mut()
            .append_pair("client_id", client_id)
            .append_pair("response_type", "code")
            .append_pair("owner", "user")
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("state", state);
        url
    }

    /// Exchanges the temporary `code` from the OAuth redirect for an access token, with HTTP
    /// Basic auth `client_id:client_secret`. `redirect_uri` must be the one sent in the
    /// authorize URL. A code works once: a second exchange is `notion_oauth_invalid_grant`.
    pub async fn exchange_oauth_code(
        &self,
        client_id: &str,
        client_secret: &str,
        code: &str,
        redirect_uri: &str,
    ) -> Result<OAuthToken, NotionError> {
        let body = json!({
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
        });
        self.token_request(client_id, client_secret, &body)
            .await
            .map_err(|e| e.without_secret(code, "[code]"))
    }

    /// Trades a refresh token for a new access token (and a new refresh token), with HTTP Basic
    /// auth `client_id:client_secret`. A refresh token Notion no longer accepts (used, revoked,
    /// or the user removed the integration) is `notion_oauth_invalid_grant`.
    pub async fn refresh_oauth_token(
        &self,
        client_id: &str,
        client_secret: &str,
        refresh_token: &str,
    ) -> Result<RefreshedToken, NotionError> {
        let body = json!({ "grant_type": "refresh_token", "refresh_token": refresh_token });
        self.token_request(client_id, client_secret, &body)
            .await
            .map_err(|e| e.without_secret(refresh_token, "[refresh_token]"))
    }

    /// `POST /v1/oauth/token` with the client's credentials; answers with an empty access
    /// token are refused.
    async fn token_request<T: serde::de::DeserializeOwned + HasAccessToken>(
        &self,
        client_id: &str,
        client_secret: &str,
        body: &Value,
    ) -> Result<T, NotionError> {
        let request = self
            .bare_request(Method::POST, self.url(&["oauth", "token"]))
            .basic_auth(client_id, Some(client_secret))
            .json(body);
        let (status, body) = self.send(request, NotionError::from_oauth_response).await?;
        let token: T = decode(status, &body)?;
        if token.access_token().is_empty() {
            return Err(NotionError::MalformedResponse {
                status: status.as_u16(),
                detail: "the token response has an empty access_token".to_owned(),
            });
        }
        Ok(token)
    }
}

/// The access token of a token endpoint's answer.
trait HasAccessToken {
    fn access_token(&self) -> &str;
}

impl HasAccessToken for OAuthToken {
    fn access_token(&self) -> &str {
        &self.access_token
    }
}

impl HasAccessToken for RefreshedToken {
    fn access_token(&self) -> &str {
        &self.access_token
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_token() -> OAuthToken {
        serde_json::from_slice(include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/notion/oauth_token_response.json"
        )))
        .expect("the fixture is a token response")
    }

    #[test]
    fn the_authorize_url_has_every_parameter_notion_requires() {
        let client = NotionClient::new(super::super::NotionClientConfig::default()).expect("client");
        let url = client.oauth_authorize_url("client-1", "https://app.example.com/cb?x=1", "s.t");
        assert_eq!(url.origin().ascii_serialization(), "https://api.notion.com");
        assert_eq!(url.path(), "/v1/oauth/authorize");
        let pairs: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(pairs["client_id"], "client-1");
        assert_eq!(pairs["response_type"], "code");
        assert_eq!(pairs["owner"], "user");
        assert_eq!(pairs["redirect_uri"], "https://app.example.com/cb?x=1");
        assert_eq!(pairs["state"], "s.t");
    }

    #[test]
    fn the_fixture_token_response_is_read_in_full() {
        let token = fixture_token();
        assert!(token.access_token.starts_with("ntn_"));
        assert_eq!(token.bot_id, "1e7d2a9b-3c4f-81a5-b8c2-0027d4e9f6a1");
        assert_eq!(token.workspace_id, "5c2d8e4f-1a3b-4c6d-9e7f-2a4b6c8d0e1f");
        assert_eq!(token.workspace_name.as_deref(), Some("Maya's Study Space"));
        assert_eq!(token.owner["user"]["id"], "a3f1c9d2-6b4e-4f7a-8c0d-1e2f3a4b5c6d");
    }

    #[test]
    fn debug_output_never_shows_the_access_or_refresh_token() {
        let token = fixture_token();
        let debug = format!("{token:?} {token:#?}");
        assert!(!debug.contains(&token.access_token), "{debug}");
        assert!(!debug.contains(token.refresh_token.as_deref().expect("fixture has one")), "{debug}");
        assert!(debug.contains("[redacted]"));
        assert!(debug.contains(&token.workspace_id));
    }

    #[test]
    fn an_old_style_answer_without_refresh_token_or_names_is_accepted() {
        let token: OAuthToken = serde_json::from_value(json!({
            "access_token": "secret_x", "bot_id": "b", "workspace_id": "w", "owner": {"workspace": true}
        }))
        .expect("minimal answer");
        assert_eq!(token.refresh_token, None);
        assert_eq!(token.workspace_name, None);
    }
}
