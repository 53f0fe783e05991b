//! The `openai` generator: any OpenAI-compatible chat-completions endpoint.
//!
//! One call per part of the notes (whole pages, at most [`MAX_NOTES_BYTES`] per call, so a
//! large database never outgrows the model's context or output limit): `POST
//! {base_url}/chat/completions` with `Authorization: Bearer <key>`, the configured `model`, a
//! system prompt asking for JSON cards, the content as text with each block's id in brackets, and `response_format: {"type": "json_object"}` (no
//! `temperature` or token limits: some models reject any non-default value). The base URL is the
//! API root *including* its version path: `https://api.openai.com/v1`,
//! `https://openrouter.ai/api/v1`, `http://localhost:11434/v1` (Ollama).
//!
//! Failures, classified here: invalid answers, 5xx / 408 / 409, 429 (with `Retry-After`; but
//! not `insufficient_quota`, an account out of credits), timeouts and connection errors are
//! retryable; 401 / 403 (key), 400 / 404 / other 4xx (model,
//! URL, request) are fatal. The key is never logged nor put in an error: provider messages for
//! 401 / 403 are dropped (they echo part of the key) and the key is redacted from the others.

mod output;
mod prompt;

use std::time::Duration;

use reqwest::{StatusCode, Url, header::RETRY_AFTER};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Card, Content, GenerateError, PartialCards};
use prompt::{SYSTEM_PROMPT, SourceIndex, user_prompts};

/// The largest response body read; a chat completion with cards is far smaller.
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// The most notes sent in one request (about 12,000 tokens): well inside any current model's
/// context, and small enough for its answer (the cards) to fit its output limit and arrive
/// within the timeout. A large database is sent in several requests, page by page.
const MAX_NOTES_BYTES: usize = 48 * 1024;

/// Settings of the `openai` generator (`OPENAI_BASE_URL`, `OPENAI_API_KEY`, `OPENAI_MODEL`).
#[derive(Debug, Clone)]
pub struct OpenAiConfig {
    /// The API root including its version path, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    pub api_key: SecretString,
    pub model: String,
    /// Limit on each call, from connecting to the last byte of the answer.
    pub timeout: Duration,
}

impl OpenAiConfig {
    /// A generous default: a model writing dozens of cards can take a minute.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
}

/// A setting of [`OpenAiConfig`] that cannot work, named as the operator sets it.
#[derive(Debug, thiserror::Error)]
#[error("{setting}: {reason}")]
pub struct OpenAiConfigError {
    pub setting: &'static str,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct OpenAiGenerator {
    client: reqwest::Client,
    endpoint: Url,
    api_key: SecretString,
    model: String,
    timeout: Duration,
}

impl OpenAiGenerator {
    pub fn new(config: OpenAiConfig) -> Result<Self, OpenAiConfigError> {
        let error = |setting, reason: &str| OpenAiConfigError { setting, reason: reason.to_owned() };
        let base = Url::parse(config.base_url.trim())
            .map_err(|e| error("OPENAI_BASE_URL", &format!("not a URL ({e})")))?;
        if !matches!(base.scheme(), "http" | "https") || base.query().is_some() {
            return Err(error(
                "OPENAI_BASE_URL",
                "expected an http(s) URL without a query, e.g. https://api.openai.com/v1",
            ));
        }
        let endpoint = Url::parse(&format!("{}/chat/completions", base.as_str().trim_end_matches('/')))
            .map_err(|e| error("OPENAI_BASE_URL", &format!("not a URL ({e})")))?;
        if config.api_key.expose_secret().trim().is_empty() {
            return Err(error("OPENAI_API_KEY", "is empty"));
        }
        if config.model.trim().is_empty() {
            return Err(error("OPENAI_MODEL", "is empty"));
        }
        if config.timeout.is_zero() {
            return Err(error("OpenAI timeout", "must be more than zero"));
        }
        let client = reqwest::Client::builder()
            .user_agent(concat!("cognie-sync/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .timeout(config.timeout)
            .build()
            .map_err(|e| error("OpenAI HTTP client", &e.to_string()))?;
        Ok(Self {
            client,
            endpoint,
            api_key: config.api_key,
            model: config.model.trim().to_owned(),
            timeout: config.timeout,
        })
    }

    /// Goes on with a generation from `progress`: one request per part of the notes (at most
    /// [`MAX_NOTES_BYTES`] each, whole pages), in order, until every part is done (`true`) or
    /// `budget` has passed or `stop` is set (at least one part is made each time). On an error, `progress`
    /// holds the parts done before it. The cards are validated against the content; no
    /// request is made when it has no text (every page gone or empty).
    pub async fn generate_from(
        &self,
        content: &Content,
        progress: &mut PartialCards,
        budget: Duration,
        stop: &std::sync::atomic::AtomicBool,
    ) -> Result<bool, GenerateError> {
        let index = SourceIndex::build(content)?;
        let prompts = user_prompts(content, MAX_NOTES_BYTES);
        let fingerprint = self.fingerprint(&prompts);
        if progress.fingerprint != fingerprint
            || progress.parts != prompts.len()
            || progress.done > progress.parts
        {
            // New, or made from other parts (see [`PartialCards::fingerprint`]).
            *progress = PartialCards { fingerprint, parts: prompts.len(), done: 0, cards: Vec::new() };
        }
        let (started, first) = (std::time::Instant::now(), progress.done);
        while let Some(notes) = prompts.get(progress.done) {
            let out_of_time = started.elapsed() >= budget || stop.load(std::sync::atomic::Ordering::SeqCst);
            if progress.done > first && out_of_time {
                tracing::debug!(
                    done = progress.done,
                    parts = progress.parts,
                    "generation goes on in the next attempt"
                );
                return Ok(false);
            }
            let cards = self.complete(notes, &index).await?;
            progress.cards.extend(cards);
            progress.done += 1;
        }
        Ok(true)
    }

    /// The model, the instructions and every part's notes, hashed: what saved progress must
    /// have been made from (a deploy that rewords the instructions starts over too).
    fn fingerprint(&self, prompts: &[String]) -> String {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        hash.update(self.model.as_bytes());
        hash.update((SYSTEM_PROMPT.len() as u64).to_le_bytes());
        hash.update(SYSTEM_PROMPT.as_bytes());
        for prompt in prompts {
            hash.update((prompt.len() as u64).to_le_bytes());
            hash.update(prompt.as_bytes());
        }
        hex::encode(hash.finalize())
    }

    /// One request: the cards the model makes from one part of the notes.
    async fn complete(&self, notes: &str, index: &SourceIndex) -> Result<Vec<Card>, GenerateError> {
        let request = ChatRequest {
            model: &self.model,
            messages: [
                Message { role: "system", content: SYSTEM_PROMPT },
                Message { role: "user", content: notes },
            ],
            response_format: json!({"type": "json_object"}),
        };
        let response = self
            .client
            .post(self.endpoint.clone())
            .bearer_auth(self.api_key.expose_secret())
            .json(&request)
            .send()
            .await
            .map_err(|e| self.transport_error(e))?;
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let body = self.read_body(response).await?;
        if !status.is_success() {
            return Err(self.status_error(status, retry_after, &body));
        }
        let completion: ChatResponse = serde_json::from_slice(&body)
            .map_err(|e| GenerateError::InvalidOutput(format!("not a chat completion ({e})")))?;
        let choice = completion
            .choices
            .into_iter()
            .next()
            .ok_or_else(|| GenerateError::InvalidOutput("the completion has no choices".into()))?;
        if choice.finish_reason.as_deref() == Some("length") {
            return Err(GenerateError::InvalidOutput(
                "the answer was cut off (finish_reason `length`)".into(),
            ));
        }
        let answer = choice.message.content.filter(|c| !c.trim().is_empty()).ok_or_else(|| {
            GenerateError::InvalidOutput(match choice.message.refusal {
                Some(_) => "the model refused to answer".into(),
                None => "the answer is empty".into(),
            })
        })?;
        output::parse_cards(&answer, index)
    }

    /// The body, at most [`MAX_RESPONSE_BYTES`].
    async fn read_body(&self, mut response: reqwest::Response) -> Result<Vec<u8>, GenerateError> {
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.transport_error(e))? {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(GenerateError::Unavailable(format!(
                    "the response is larger than {MAX_RESPONSE_BYTES} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    fn transport_error(&self, error: reqwest::Error) -> GenerateError {
        if error.is_timeout() {
            return GenerateError::Timeout(self.timeout);
        }
        let what = if error.is_connect() { "could not connect" } else { "the request failed" };
        GenerateError::Unavailable(format!("{what}: {}", self.redact(&error_chain(&error.without_url()))))
    }

    fn status_error(&self, status: StatusCode, retry_after: Option<Duration>, body: &[u8]) -> GenerateError {
        let code = status.as_u16();
        match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => GenerateError::Unauthorized { status: code },
            // OpenAI answers 429 for an account out of credits too; waiting does not cure it.
            StatusCode::TOO_MANY_REQUESTS if error_code(body).as_deref() == Some("insufficient_quota") => {
                GenerateError::Rejected {
                    status: code,
                    message: format!(
                        "{}; the OpenAI account behind OPENAI_API_KEY has no quota left (check its plan and billing)",
                        self.provider_message(body)
                    ),
                }
            }
            StatusCode::TOO_MANY_REQUESTS => GenerateError::RateLimited { retry_after },
            StatusCode::REQUEST_TIMEOUT | StatusCode::CONFLICT => {
                GenerateError::Unavailable(format!("HTTP {code}: {}", self.provider_message(body)))
            }
            _ if status.is_server_error() => {
                GenerateError::Unavailable(format!("HTTP {code}: {}", self.provider_message(body)))
            }
            StatusCode::NOT_FOUND => GenerateError::Rejected {
                status: code,
                message: format!(
                    "{}; check OPENAI_MODEL, and OPENAI_BASE_URL (it includes the version path, e.g. /v1)",
                    self.provider_message(body)
                ),
            },
            _ => GenerateError::Rejected { status: code, message: self.provider_message(body) },
        }
    }

    /// The provider's error message (`error.message` in OpenAI's shape, else the start of the
    /// body), at most 300 characters, with the key redacted.
    fn provider_message(&self, body: &[u8]) -> String {
        let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
        let message = parsed
            .as_ref()
            .and_then(|v| v.pointer("/error/message").or_else(|| v.get("message")).or_else(|| v.get("error")))
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
        let message = self.redact(message.trim());
        let mut short: String = message.chars().take(300).collect();
        if short.len() < message.len() {
            short.push('…');
        }
        if short.is_empty() { "no message".to_owned() } else { short }
    }

    fn redact(&self, text: &str) -> String {
        let key = self.api_key.expose_secret();
        if key.is_empty() { text.to_owned() } else { text.replace(key, "[redacted]") }
    }
}

/// An error and its causes, without the URL (it is configuration, and may be long).
fn error_chain(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The provider's machine-readable error code (`error.code` in OpenAI's shape).
fn error_code(body: &[u8]) -> Option<String> {
    let parsed: serde_json::Value = serde_json::from_slice(body).ok()?;
    parsed.pointer("/error/code")?.as_str().map(str::to_owned)
}

/// `Retry-After` in seconds (integer or decimal); HTTP dates are ignored.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let seconds: f64 = headers.get(RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds.min(86_400.0)))
}

#[derive(Serialize)]
struct ChatRequest<'a> {
    model: &'a str,
    messages: [Message<'a>; 2],
    response_format: serde_json::Value,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Deserialize)]
struct ChatResponse {
    #[serde(default)]
    choices: Vec<Choice>,
}

#[derive(Deserialize)]
struct Choice {
    message: AssistantMessage,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct AssistantMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
}

#[cfg(test)]
mod tests;
