//! The management API's bearer token (`Authorization: Bearer $API_TOKEN`).

use poem::Request;
use poem_openapi::{SecurityScheme, auth::Bearer};
use secrecy::ExposeSecret;
use subtle::ConstantTimeEq;

use super::HttpState;

/// Management endpoints require the service's API token (`API_TOKEN`, or the token the service
/// created in its data directory).
#[derive(SecurityScheme)]
#[oai(ty = "bearer", checker = "check_api_token")]
pub struct ApiToken(());

async fn check_api_token(req: &Request, bearer: Bearer) -> Option<()> {
    let state = req.data::<std::sync::Arc<HttpState>>()?;
    let expected = state.api_token.expose_secret().as_bytes();
    // An empty token never matches (HTTP/2 lets `Bearer ` through with nothing after it).
    // Constant-time: the comparison takes as long whether the first or the last byte differs.
    (!expected.is_empty() && bool::from(expected.ct_eq(bearer.token.as_bytes()))).then_some(())
}
