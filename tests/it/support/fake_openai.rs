//! A fake OpenAI-compatible chat-completions server for tests: a real HTTP server on a local
//! port that checks the bearer key, answers from a script (a queue of replies) and records every
//! request, so tests can assert what the prompt held.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use cognie_sync::flashcards::OpenAiConfig;
use poem::{
    EndpointExt, IntoResponse, Response, Route, Server, handler,
    http::{HeaderMap, StatusCode, header},
    listener::TcpAcceptor,
    post,
    web::{Data, Json},
};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// The key the fake accepts.
pub const API_KEY: &str = "sk-fake-openai-test-key";
pub const MODEL: &str = "fake-model";

/// One scripted answer, used by one request, in order.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A completion whose assistant message is `{"cards": <cards>}`.
    Cards(Value),
    /// A completion whose assistant message is this text, verbatim (e.g. not JSON).
    Content(String),
    /// An error status with an OpenAI-style body `{"error": {"message", "type", "code"}}`.
    Error { status: u16, message: String },
    /// 429 with `Retry-After: <seconds>`.
    RateLimited { retry_after_seconds: u64 },
    /// `reply`, after waiting `delay`.
    Delayed { delay: Duration, reply: Box<Reply> },
}

impl Reply {
    pub fn error(status: u16, message: &str) -> Self {
        Self::Error { status, message: message.to_owned() }
    }

    pub fn delayed(delay: Duration, reply: Reply) -> Self {
        Self::Delayed { delay, reply: Box::new(reply) }
    }
}

/// A request as the fake received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub path: String,
    pub authorization: Option<String>,
    pub body: Value,
}

impl RecordedRequest {
    /// The content of the first message with `role`.
    pub fn message(&self, role: &str) -> &str {
        self.body["messages"]
            .as_array()
            .and_then(|messages| messages.iter().find(|m| m["role"] == role))
            .and_then(|m| m["content"].as_str())
            .unwrap_or_else(|| panic!("the request has no {role} message: {}", self.body))
    }
}

#[derive(Default)]
struct Script {
    replies: VecDeque<Reply>,
    requests: Vec<RecordedRequest>,
}

#[derive(Clone)]
struct State {
    script: Arc<Mutex<Script>>,
}

pub struct FakeOpenAi {
    pub addr: SocketAddr,
    state: State,
    server: JoinHandle<std::io::Result<()>>,
}

impl FakeOpenAi {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the fake OpenAI");
        let addr = listener.local_addr().expect("fake OpenAI address");
        let acceptor = TcpAcceptor::from_tokio(listener).expect("fake OpenAI acceptor");
        let state = State { script: Arc::default() };
        let app = Route::new().at("/v1/chat/completions", post(chat_completions)).data(state.clone());
        let server = tokio::spawn(Server::new_with_acceptor(acceptor).run(app));
        Self { addr, state, server }
    }

    /// The API root to configure, `/v1` included.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// A generator configuration pointing here, with the right key and a 5 s timeout.
    pub fn config(&self) -> OpenAiConfig {
        OpenAiConfig {
            base_url: self.base_url(),
            api_key: API_KEY.to_owned().into(),
            model: MODEL.to_owned(),
            timeout: Duration::from_secs(5),
        }
    }

    /// Queues `reply` for the next request that has none yet.
    pub fn push(&self, reply: Reply) {
        self.state.script.lock().unwrap().replies.push_back(reply);
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.script.lock().unwrap().requests.clone()
    }
}

impl Drop for FakeOpenAi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

#[handler]
async fn chat_completions(
    headers: &HeaderMap,
    Json(body): Json<Value>,
    Data(state): Data<&State>,
) -> Response {
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let authorized = authorization.as_deref() == Some(&format!("Bearer {API_KEY}"));
    let reply = {
        let mut script = state.script.lock().unwrap();
        script.requests.push(RecordedRequest {
            path: "/v1/chat/completions".to_owned(),
            authorization,
            body: body.clone(),
        });
        if authorized { script.replies.pop_front() } else { None }
    };
    if !authorized {
        // OpenAI's wording echoes part of the key; the client must not repeat it.
        let masked = "Incorrect API key provided: sk-fak***-key. You can find your API key at ...";
        return error_response(401, masked, "invalid_api_key");
    }
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    let mut reply = reply.unwrap_or_else(|| Reply::error(500, "fake OpenAI: no reply scripted"));
    while let Reply::Delayed { delay, reply: inner } = reply {
        tokio::time::sleep(delay).await;
        reply = *inner;
    }
    match reply {
        Reply::Cards(cards) => completion(&model, json!({"cards": cards}).to_string()),
        Reply::Content(content) => completion(&model, content),
        Reply::Error { status, message } => error_response(status, &message, "fake_error"),
        Reply::RateLimited { retry_after_seconds } => {
            let mut response = error_response(429, "Rate limit reached", "rate_limit_exceeded");
            response.headers_mut().insert("retry-after", retry_after_seconds.into());
            response
        }
        Reply::Delayed { .. } => unreachable!("delays are waited out above"),
    }
}

/// A `chat.completion` whose one choice is an assistant message holding `content`.
fn completion(model: &str, content: String) -> Response {
    let created = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
    let completion_tokens = content.len() / 4;
    Json(json!({
        "id": format!("chatcmpl-fake-{created}"),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content, "refusal": null},
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": {"prompt_tokens": 100, "completion_tokens": completion_tokens,
                  "total_tokens": 100 + completion_tokens}
    }))
    .into_response()
}

fn error_response(status: u16, message: &str, code: &str) -> Response {
    let body =
        json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": code}});
    let mut response = Json(body).into_response();
    response.set_status(StatusCode::from_u16(status).expect("a valid status"));
    response
}
