//! Webhook signatures: HMAC-SHA256 keyed with the bytes of the `signature_secret_key` string (not
//! hex-decoded) over the raw request body, sent as hex. Verification accepts either hex case and
//! compares in constant time (`Mac::verify_slice`).

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &str) -> HmacSha256 {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail here.
    HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length")
}

/// The lowercase hex signature Polar sends for `body`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut m = mac(secret);
    m.update(body);
    hex::encode(m.finalize().into_bytes())
}

/// Why a signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureError {
    /// The header is absent or empty.
    Missing,
    /// The header is not 64 hex digits.
    NotHex,
    /// Well-formed, but not the signature of this body with this secret.
    Mismatch,
}

impl SignatureError {
    pub fn reason(self) -> &'static str {
        match self {
            SignatureError::Missing => "missing Polar-Webhook-Signature header",
            SignatureError::NotHex => "Polar-Webhook-Signature is not 64 hex digits",
            SignatureError::Mismatch => "Polar-Webhook-Signature does not match the body",
        }
    }
}

/// Checks `header` (hex, either case, surrounding whitespace ignored) against `body`.
pub fn verify(secret: &str, body: &[u8], header: Option<&str>) -> Result<(), SignatureError> {
    let header = header.map(str::trim).filter(|h| !h.is_empty());
    let Some(header) = header else {
        return Err(SignatureError::Missing);
    };
    if header.len() != 64 {
        return Err(SignatureError::NotHex);
    }
    // `hex::decode` accepts upper and lower case digits.
    let expected = hex::decode(header).map_err(|_| SignatureError::NotHex)?;
    let mut m = mac(secret);
    m.update(body);
    m.verify_slice(&expected)
        .map_err(|_| SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "abe1f3ae-fd33-11e8-8eb2-f2801f1b9fd1";
    const EXERCISE: &str = r#"{"event":"EXERCISE","user_id":475,"entity_id":"aQlC83","timestamp":"2018-05-15T14:22:24Z","url":"https://www.polaraccesslink.com/v3/exercises/aQlC83"}"#;
    const PING: &str = r#"{"timestamp":"2019-01-11T08:25:10.02Z","event":"PING"}"#;

    #[test]
    fn polar_test_vectors() {
        assert_eq!(
            sign(SECRET, EXERCISE.as_bytes()),
            "443ec69698c1de6d326902d7d942be1e83f0395f685b8c040cee609660d006d6"
        );
        assert_eq!(
            sign(SECRET, PING.as_bytes()),
            "858ec6a4cd8f514eec0bb0072e0716a78a94cf1e19b7ff909766ef268a30cd8f"
        );
    }

    #[test]
    fn verification_accepts_either_case_and_refuses_the_rest() {
        let sig = sign(SECRET, EXERCISE.as_bytes());
        assert_eq!(verify(SECRET, EXERCISE.as_bytes(), Some(&sig)), Ok(()));
        assert_eq!(
            verify(SECRET, EXERCISE.as_bytes(), Some(&sig.to_uppercase())),
            Ok(())
        );
        assert_eq!(
            verify(SECRET, EXERCISE.as_bytes(), None),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify(SECRET, EXERCISE.as_bytes(), Some(&sig[..63])),
            Err(SignatureError::NotHex)
        );
        assert_eq!(
            verify("other-secret", EXERCISE.as_bytes(), Some(&sig)),
            Err(SignatureError::Mismatch)
        );
        let mut body = EXERCISE.as_bytes().to_vec();
        body[10] ^= 1;
        assert_eq!(
            verify(SECRET, &body, Some(&sig)),
            Err(SignatureError::Mismatch)
        );
    }
}
