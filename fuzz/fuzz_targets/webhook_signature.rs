//! `X-Notion-Signature` parsing and verification: any header is answered without panicking;
//! the real signature always verifies (any hex case, surrounding whitespace); no other header
//! does; and changing one hex digit, the body or the key makes it fail.
#![no_main]

use arbitrary::Arbitrary;
use cognie_sync::webhook::signature::{self, SignatureError};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    key: &'a [u8],
    body: &'a [u8],
    header: Option<&'a str>,
    /// Which hex digit of the real signature to change, and to what.
    flip: (u8, u8),
    other_body: &'a [u8],
}

fuzz_target!(|input: Input| {
    let Input { key, body, header, flip, other_body } = input;

    // Whatever arrives, an answer and no panic; a header that verifies is the real signature.
    let good = signature::sign(key, body);
    if signature::verify(key, body, header).is_ok() {
        let header = header.expect("no header never verifies");
        assert_eq!(header.trim().to_ascii_lowercase(), good, "only the real signature verifies");
    }

    assert_eq!(signature::verify(key, body, Some(&good)), Ok(()));
    assert_eq!(signature::verify(key, body, Some(&format!(" {good}\t"))), Ok(()));
    let upper = format!("sha256={}", good["sha256=".len()..].to_uppercase());
    assert_eq!(signature::verify(key, body, Some(&upper)), Ok(()));
    assert_eq!(signature::verify(key, body, None), Err(SignatureError::Missing));

    // One hex digit changed: a mismatch, never a pass.
    let hex_digits = b"0123456789abcdef";
    let pos = "sha256=".len() + flip.0 as usize % 64;
    let mut tampered = good.clone().into_bytes();
    let replacement = hex_digits[flip.1 as usize % 16];
    if tampered[pos] != replacement {
        tampered[pos] = replacement;
        let tampered = String::from_utf8(tampered).expect("ascii");
        assert_eq!(signature::verify(key, body, Some(&tampered)), Err(SignatureError::Mismatch));
    }
    // The signature of another body, or under another key, does not carry over.
    if other_body != body {
        assert_eq!(signature::verify(key, other_body, Some(&good)), Err(SignatureError::Mismatch));
    }
    let mut other_key = key.to_vec();
    other_key.push(0x5a);
    assert_eq!(signature::verify(&other_key, body, Some(&good)), Err(SignatureError::Mismatch));
});
