//! The whole intake decision without a database: body, signature header and signing key in,
//! handshake / store / 401 / 400 out. Only the handshake passes unsigned; a correctly signed
//! body is never refused for its signature; a bad body is reported only to a verified sender;
//! what is stored is the exact body.
#![no_main]

use arbitrary::Arbitrary;
use cognie_sync::{
    ids::EventId,
    webhook::{
        IntakeError,
        event::{self, Disposition, ParsedBody},
        intake::{self, Decision},
        signature,
    },
};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum SignatureChoice<'a> {
    None,
    Valid,
    /// Signed, but with another key.
    OtherKey(&'a [u8]),
    Raw(&'a str),
}

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    body: &'a [u8],
    key: Option<&'a [u8]>,
    signature: SignatureChoice<'a>,
}

fuzz_target!(|input: Input| {
    let Input { body, key, signature: choice } = input;
    let header = match &choice {
        SignatureChoice::None => None,
        SignatureChoice::Valid => Some(signature::sign(key.unwrap_or(b"no key"), body)),
        SignatureChoice::OtherKey(other) => Some(signature::sign(other, body)),
        SignatureChoice::Raw(raw) => Some((*raw).to_owned()),
    };
    let verified = key.is_some_and(|k| signature::verify(k, body, header.as_deref()).is_ok());
    let is_handshake = body.len() <= intake::MAX_HANDSHAKE_BODY
        && matches!(event::parse(body), Ok(ParsedBody::Handshake { .. }));

    // As intake does: only a body small enough to be a handshake is parsed before verification.
    let parsed = (body.len() <= intake::MAX_HANDSHAKE_BODY).then(|| event::parse(body));
    match intake::decide(parsed, body, header.as_deref(), key) {
        Ok(Decision::Handshake { .. }) => assert!(is_handshake),
        Ok(Decision::Store(event)) => {
            assert!(verified, "only a verified body is stored");
            assert!(!is_handshake);
            assert_eq!(event.payload.as_bytes(), body, "the stored payload is the signed body");
            let row = event.new_event(EventId::new());
            assert_eq!(row.dedupe_key, event.event.dedupe_key(body));
            match &event.event.disposition {
                Disposition::Accept { kind, id } => {
                    assert!(row.ignore_reason.is_none());
                    assert_eq!(row.entity_id, Some(id.as_str()));
                    assert_eq!(row.entity_kind, Some(kind.as_str()));
                }
                Disposition::Ignore { reason } => assert_eq!(row.ignore_reason, Some(reason.as_str())),
            }
        }
        Err(IntakeError::Unauthorized(_)) => {
            assert!(!is_handshake, "the handshake needs no signature");
            assert!(!verified, "a correctly signed body is never refused for its signature");
            if matches!(choice, SignatureChoice::Valid) {
                assert!(key.is_none());
            }
        }
        Err(IntakeError::BadRequest(_)) => {
            assert!(verified, "only a verified sender learns why a body is bad")
        }
        Err(other) => panic!("the decision touches neither the store nor the cipher: {other}"),
    }
});
