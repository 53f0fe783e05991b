//! Verified, durable webhook intake: the signature check over the raw body, the two accepted
//! body formats, the verification handshake, and the one-transaction store that must commit
//! before Notion gets its 200.

pub mod event;
pub mod intake;
pub mod signature;

pub use event::{EventKind, ParsedBody, WebhookEvent};
pub use intake::{Intake, IntakeError, IntakeResult};
