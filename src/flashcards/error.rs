//! Why generating cards failed, classified where it happens: retryable or fatal.

use std::time::Duration;

/// A failed generation. Messages never contain the API key or a provider's answer to a rejected
/// key; they may contain a provider's error message for other statuses (key redacted).
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// The content breaks the input contract (e.g. a page or a card block without an id).
    /// Fatal: retrying the same content cannot help.
    #[error("the content cannot be turned into cards: {0}")]
    InvalidContent(String),
    /// The model answered, but not with valid cards: not JSON, a card without front or back,
    /// or citing a block id that is not in the content. Retryable: models are not deterministic.
    #[error("the model's answer is not valid flashcards: {0}")]
    InvalidOutput(String),
    /// HTTP 429. Retryable, after `retry_after` if the provider said.
    #[error("the flashcard model is rate limited (HTTP 429){}", match .retry_after {
        Some(after) => format!("; retry after {} s", after.as_secs_f64()),
        None => String::new(),
    })]
    RateLimited { retry_after: Option<Duration> },
    /// A 5xx (or 408 / 409), a connection error, or a broken response. Retryable.
    #[error("the flashcard model is unavailable: {0}")]
    Unavailable(String),
    /// No complete answer within the configured timeout. Retryable.
    #[error("the flashcard model did not answer within {} s", .0.as_secs_f64())]
    Timeout(Duration),
    /// HTTP 401 / 403: the API key is missing, wrong or not allowed this model. Fatal.
    #[error("the flashcard model refused the API key (HTTP {status}); check OPENAI_API_KEY")]
    Unauthorized { status: u16 },
    /// Another 4xx (400, 404, 413, 422…): wrong model name, base URL or a request the provider
    /// will never accept. Fatal.
    #[error("the flashcard model rejected the request (HTTP {status}): {message}")]
    Rejected { status: u16, message: String },
}

impl GenerateError {
    /// Whether the step should be retried (with backoff) rather than fail the run.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::InvalidOutput(_) | Self::RateLimited { .. } | Self::Unavailable(_) | Self::Timeout(_) => {
                true
            }
            Self::InvalidContent(_) | Self::Unauthorized { .. } | Self::Rejected { .. } => false,
        }
    }

    /// The run's `error_kind` when this error fails (or delays) the generate step.
    pub fn error_kind(&self) -> &'static str {
        match self {
            Self::InvalidContent(_) => "generator_invalid_content",
            Self::InvalidOutput(_) => "generator_invalid_output",
            Self::RateLimited { .. } => "generator_rate_limited",
            Self::Unavailable(_) => "generator_unavailable",
            Self::Timeout(_) => "generator_timeout",
            Self::Unauthorized { .. } => "generator_unauthorized",
            Self::Rejected { .. } => "generator_rejected",
        }
    }

    /// How long the provider asked us to wait (`Retry-After` on a 429), if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after } => *retry_after,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_and_availability_problems_are_retryable_and_refusals_are_fatal() {
        let retryable = [
            GenerateError::InvalidOutput("x".into()),
            GenerateError::RateLimited { retry_after: None },
            GenerateError::Unavailable("x".into()),
            GenerateError::Timeout(Duration::from_secs(1)),
        ];
        let fatal = [
            GenerateError::InvalidContent("x".into()),
            GenerateError::Unauthorized { status: 401 },
            GenerateError::Rejected { status: 400, message: "x".into() },
        ];
        assert!(retryable.iter().all(GenerateError::is_retryable));
        assert!(!fatal.iter().any(GenerateError::is_retryable));
    }

    #[test]
    fn rate_limits_carry_the_providers_wait() {
        let err = GenerateError::RateLimited { retry_after: Some(Duration::from_secs(17)) };
        assert_eq!(err.retry_after(), Some(Duration::from_secs(17)));
        assert_eq!(err.error_kind(), "generator_rate_limited");
        assert_eq!(err.to_string(), "the flashcard model is rate limited (HTTP 429); retry after 17 s");
    }
}
