//! Standard Webhooks signatures (https://www.standardwebhooks.com): an endpoint that
//! knows the secret can tell a callback really came from this delayqs, unchanged and
//! recent. Several secrets may be configured during a rotation; each signs.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::hmac;

/// A signing secret: its bytes, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Secret {
    /// Reads the spec's `whsec_<base64>` form. The error never repeats the secret.
    pub fn parse(text: &str) -> Result<Secret, String> {
        let Some(encoded) = text.strip_prefix("whsec_") else {
            return Err("must be in the form whsec_<base64 of 24 to 64 random bytes>".into());
        };
        let bytes = STANDARD
            .decode(encoded)
            .map_err(|_| "the part after whsec_ is not valid base64".to_string())?;
        if !(24..=64).contains(&bytes.len()) {
            return Err(format!(
                "decodes to {} bytes; use 24 to 64 random bytes (e.g. openssl rand -base64 32)",
                bytes.len()
            ));
        }
        Ok(Secret(bytes))
    }
}

/// The three headers of the spec for one attempt: `webhook-id`, `webhook-timestamp`,
/// `webhook-signature` (`v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, one per
/// secret, space-separated).
pub fn headers(
    secrets: &[Secret],
    id: &str,
    timestamp: u64,
    body: &[u8],
) -> [(&'static str, String); 3] {
    let mut signed = Vec::with_capacity(id.len() + body.len() + 24);
    signed.extend_from_slice(id.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(timestamp.to_string().as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(body);
    let signatures: Vec<String> = secrets
        .iter()
        .map(|s| {
            let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &s.0), &signed);
            format!("v1,{}", STANDARD.encode(tag.as_ref()))
        })
        .collect();
    [
        ("webhook-id", id.to_string()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", signatures.join(" ")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_spec_example() {
        // The example of the Standard Webhooks reference libraries' tests.
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let [id, ts, sig] = headers(
            &[secret],
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(id.1, "msg_p5jXN8AQM9LWM0D4loKWxJek");
        assert_eq!(ts.1, "1614265330");
        assert_eq!(sig.1, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn bad_secrets_are_refused_without_echo() {
        for bad in [
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "whsec_!!!",
            "whsec_c2hvcnQ=",
        ] {
            let e = Secret::parse(bad).unwrap_err();
            assert!(!e.contains(bad.trim_start_matches("whsec_")), "{e}");
        }
        assert_eq!(format!("{:?}", Secret(vec![1, 2])), "Secret(***)");
    }
}
