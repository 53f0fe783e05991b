//! `JsonBody<T>`: a JSON request body read with a size cap, for the management API.
//!
//! poem-openapi's `Json<T>` reads a body of any size into memory. Every management operation
//! checks the bearer token before its body is read, but a token holder (or a leaked token)
//! could still make the service buffer gigabytes; these bodies are a few hundred bytes. The cap
//! holds for chunked bodies without a `Content-Length` too, and is answered 413. The spec is
//! the same as for `Json<T>`.

use bytes::Bytes;
use poem::{Request, RequestBody, error::ReadBodyError, http::StatusCode};
use poem_openapi::{
    error::ParseRequestPayloadError,
    payload::{Json, ParsePayload, Payload},
    registry::{MetaSchemaRef, Registry},
    types::{ParseFromJSON, Type},
};

/// Largest management request body accepted.
pub const MAX_JSON_BODY: usize = 64 * 1024;

/// A JSON request body of at most [`MAX_JSON_BODY`] bytes.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: Type> Payload for JsonBody<T> {
    const CONTENT_TYPE: &'static str = <Json<T> as Payload>::CONTENT_TYPE;

    fn check_content_type(content_type: &str) -> bool {
        <Json<T> as Payload>::check_content_type(content_type)
    }

    fn schema_ref() -> MetaSchemaRef {
        <Json<T> as Payload>::schema_ref()
    }

    fn register(registry: &mut Registry) {
        <Json<T> as Payload>::register(registry);
    }
}

impl<T: ParseFromJSON> ParsePayload for JsonBody<T> {
    const IS_REQUIRED: bool = T::IS_REQUIRED;

    async fn from_request(request: &Request, body: &mut RequestBody) -> poem::Result<Self> {
        let Some(bytes) = read_capped(request, body, MAX_JSON_BODY).await? else {
            return Err(too_large());
        };
        let value = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .map_err(|err| ParseRequestPayloadError { reason: err.to_string() })?
        };
        let value = T::parse_from_json(Some(value))
            .map_err(|err| ParseRequestPayloadError { reason: err.into_message() })?;
        Ok(Self(value))
    }
}

/// Reads the whole body if it is at most `limit` bytes; `None` if it is larger. A declared
/// `Content-Length` over the limit is refused before reading; a chunked body stops being read
/// at the limit.
pub async fn read_capped(
    request: &Request,
    body: &mut RequestBody,
    limit: usize,
) -> poem::Result<Option<Bytes>> {
    let declared = request.header("content-length").and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Ok(None);
    }
    match body.take()?.into_bytes_limit(limit).await {
        Ok(bytes) => Ok(Some(bytes)),
        Err(ReadBodyError::PayloadTooLarge) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn too_large() -> poem::Error {
    poem::Error::from_string(format!("the body exceeds {MAX_JSON_BODY} bytes"), StatusCode::PAYLOAD_TOO_LARGE)
}

poem_openapi::impl_apirequest_for_payload!(JsonBody<T>, T: ParseFromJSON);
