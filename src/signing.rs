//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>): the
//! secrets of `--signing-secret` and the three headers each webhook call
//! carries when any is set. The secrets live only here, in memory: they
//! are never logged (`Debug` shows how many there are) and never written
//! to the log.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::hmac;

/// The prefix of a secret in the Standard Webhooks form, `whsec_<base64>`.
pub const SECRET_PREFIX: &str = "whsec_";

/// Why a `--signing-secret` value was refused. The value itself is never
/// part of the message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("a signing secret is {SECRET_PREFIX}<base64 key>")]
    NoPrefix,
    #[error("the key after {SECRET_PREFIX} is not base64")]
    NotBase64,
    #[error("the key after {SECRET_PREFIX} is empty")]
    Empty,
}

/// One signing key, as `--signing-secret` gives it.
#[derive(Clone)]
pub struct SigningSecret(Vec<u8>);

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(..)")
    }
}

impl std::str::FromStr for SigningSecret {
    type Err = SecretError;

    fn from_str(text: &str) -> Result<Self, SecretError> {
        let key = text
            .trim()
            .strip_prefix(SECRET_PREFIX)
            .ok_or(SecretError::NoPrefix)?;
        let key = BASE64.decode(key).map_err(|_| SecretError::NotBase64)?;
        if key.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(SigningSecret(key))
    }
}

/// Every configured key; empty when calls are not signed.
#[derive(Clone, Default)]
pub struct SigningKeys(Vec<hmac::Key>);

impl std::fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKeys({} secrets)", self.0.len())
    }
}

impl SigningKeys {
    pub fn new(secrets: &[SigningSecret]) -> SigningKeys {
        SigningKeys(
            secrets
                .iter()
                .map(|s| hmac::Key::new(hmac::HMAC_SHA256, &s.0))
                .collect(),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `webhook-signature` value of a call: `v1,<base64 HMAC-SHA256 of
    /// "id.timestamp.body">` for each key, space-separated, so that a
    /// receiver holding any one of them verifies (a key rotation lists
    /// the old and the new). `body` must be exactly the bytes sent.
    pub fn signature(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut signed = Vec::with_capacity(id.len() + 22 + body.len());
        signed.extend_from_slice(id.as_bytes());
        signed.push(b'.');
        signed.extend_from_slice(timestamp.to_string().as_bytes());
        signed.push(b'.');
        signed.extend_from_slice(body);
        self.0
            .iter()
            .map(|key| format!("v1,{}", BASE64.encode(hmac::sign(key, &signed).as_ref())))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification
    /// (spec/standard-webhooks.md, "Signature scheme").
    #[test]
    fn the_specifications_example_signs_as_published() {
        let secret: SigningSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".parse().unwrap();
        let keys = SigningKeys::new(&[secret]);
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            keys.signature("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn each_key_signs_and_bad_secrets_are_refused_without_their_value() {
        let a: SigningSecret = "whsec_YWFhYQ==".parse().unwrap();
        let b: SigningSecret = "whsec_YmJiYg==".parse().unwrap();
        let both = SigningKeys::new(&[a.clone(), b.clone()]).signature("id", 1, b"{}");
        let one = SigningKeys::new(&[a]).signature("id", 1, b"{}");
        let other = SigningKeys::new(&[b]).signature("id", 1, b"{}");
        assert_eq!(both, format!("{one} {other}"));
        assert_ne!(one, other);
        assert_eq!(
            "YWFhYQ==".parse::<SigningSecret>().unwrap_err(),
            SecretError::NoPrefix
        );
        assert_eq!(
            "whsec_%%%".parse::<SigningSecret>().unwrap_err(),
            SecretError::NotBase64
        );
        assert_eq!(
            "whsec_".parse::<SigningSecret>().unwrap_err(),
            SecretError::Empty
        );
        assert_eq!(
            format!("{:?}", SigningKeys::new(&[])),
            "SigningKeys(0 secrets)"
        );
    }
}
