//! What a certificate credential needs: the app certificate and key from a PEM file, the
//! signed JWT client assertion that stands in for a secret, and reading a JWT's `exp`.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::{digest, rand::SystemRandom, signature};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;

use super::{AuthError, CredentialError};

/// An app certificate ready to sign client assertions: the RSA key and the certificate's
/// thumbprints, which tell Entra which of the app's certificates to verify with.
pub struct ClientCertificate {
    key: signature::RsaKeyPair,
    /// base64url SHA-1 of the DER certificate (`x5t`, what Entra has always read).
    x5t: String,
    /// base64url SHA-256 of the DER certificate (`x5t#S256`, the newer header).
    x5t_s256: String,
}

impl std::fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCertificate")
            .field("x5t", &self.x5t)
            .finish_non_exhaustive()
    }
}

impl ClientCertificate {
    pub fn from_pem_file(path: &Path) -> Result<Self, CredentialError> {
        let pem = super::file::read_capped(path, super::file::PEM_CAP)
            .map_err(|e| CredentialError::Read(e.describe("the certificate", path)))?;
        Self::from_pem(&pem).map_err(|why| CredentialError::Certificate {
            path: path.to_path_buf(),
            why,
        })
    }

    /// A PEM holding the certificate (the first CERTIFICATE block) and its RSA private key,
    /// PKCS#8 (`PRIVATE KEY`) or PKCS#1 (`RSA PRIVATE KEY`). Encrypted keys are refused with
    /// a hint: aws-lc-rs does not decrypt them, and a password crate is not worth its weight.
    pub fn from_pem(pem: &[u8]) -> Result<Self, String> {
        use rustls_pki_types::pem::PemObject as _;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let cert = CertificateDer::pem_slice_iter(pem)
            .next()
            .ok_or("no CERTIFICATE block (the file must hold the certificate and its key)")?
            .map_err(|e| format!("unreadable CERTIFICATE block: {e:?}"))?;
        let parsed = webpki::EndEntityCert::try_from(&cert)
            .map_err(|e| format!("the certificate does not parse: {e:?}"))?;
        if pem
            .windows(b"ENCRYPTED PRIVATE KEY".len())
            .any(|w| w == b"ENCRYPTED PRIVATE KEY")
            || pem
                .windows(b"Proc-Type: 4,ENCRYPTED".len())
                .any(|w| w == b"Proc-Type: 4,ENCRYPTED")
        {
            return Err("the private key is encrypted, which is not supported \
                 (AZURE_CLIENT_CERTIFICATE_PASSWORD is not read); export it unencrypted, e.g. \
                 `openssl pkcs8 -topk8 -nocrypt -in key.pem`, and keep the file readable only \
                 by the account that runs autopilot-bulk"
                .into());
        }
        let key = match PrivateKeyDer::from_pem_slice(pem) {
            Ok(PrivateKeyDer::Pkcs8(k)) => signature::RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
            Ok(PrivateKeyDer::Pkcs1(k)) => signature::RsaKeyPair::from_der(k.secret_pkcs1_der()),
            Ok(_) => return Err("the private key is not an RSA key (Entra needs RSA)".into()),
            Err(_) => return Err("no PRIVATE KEY or RSA PRIVATE KEY block".into()),
        }
        .map_err(|e| format!("the private key is not a usable RSA key: {e}"))?;

        // Sign and verify a probe, so that a key from another certificate is a clear error
        // at start rather than an AADSTS700027 from the service.
        let probe = b"autopilot-bulk key check";
        let signature = sign(&key, probe).map_err(|_| "cannot sign with the private key")?;
        parsed
            .verify_signature(
                webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA256,
                probe,
                &signature,
            )
            .map_err(|_| "the private key does not belong to the certificate".to_string())?;

        let thumbprint = |alg| B64URL.encode(digest::digest(alg, cert.as_ref()));
        Ok(Self {
            key,
            x5t: thumbprint(&digest::SHA1_FOR_LEGACY_USE_ONLY),
            x5t_s256: thumbprint(&digest::SHA256),
        })
    }

    /// A client assertion for one token request: RS256, both thumbprints, `aud` = token URL,
    /// `iss` = `sub` = client id, a fresh `jti` (Entra refuses a replayed one), valid for
    /// 10 minutes.
    pub fn assertion(
        &self,
        client_id: &str,
        token_url: &str,
        now: SystemTime,
    ) -> Result<String, AuthError> {
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let header = serde_json::json!({
            "alg": "RS256",
            "typ": "JWT",
            "x5t": self.x5t,
            "x5t#S256": self.x5t_s256,
        });
        let claims = serde_json::json!({
            "aud": token_url,
            "iss": client_id,
            "sub": client_id,
            "jti": uuid::Uuid::new_v4().to_string(),
            "nbf": now,
            "iat": now,
            "exp": now + 600,
        });
        let signing_input = format!(
            "{}.{}",
            B64URL.encode(header.to_string()),
            B64URL.encode(claims.to_string())
        );
        let signature = sign(&self.key, signing_input.as_bytes())?;
        Ok(format!("{signing_input}.{}", B64URL.encode(signature)))
    }
}

fn sign(key: &signature::RsaKeyPair, message: &[u8]) -> Result<Vec<u8>, AuthError> {
    let mut out = vec![0; key.public_modulus_len()];
    key.sign(
        &signature::RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        message,
        &mut out,
    )
    .map_err(|_| AuthError::Signing)?;
    Ok(out)
}

/// The `exp` claim of a JWT access token; `None` for opaque tokens.
pub fn jwt_expiry(token: &str) -> Option<SystemTime> {
    let mut parts = token.split('.');
    let (Some(_), Some(claims), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let bytes = B64URL.decode(claims.trim_end_matches('=')).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?.as_f64()?;
    // Up to year 9999: beyond, Duration and RFC 3339 formatting would fail on our own data.
    const LAST_SECOND: f64 = 253_402_300_799.0;
    (0.0..=LAST_SECOND)
        .contains(&exp)
        .then(|| UNIX_EPOCH + Duration::from_secs_f64(exp))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// An unsigned JWT-shaped token carrying `claims`.
    pub(in crate::auth) fn jwt_with(claims: serde_json::Value) -> String {
        format!(
            "{}.{}.sig",
            B64URL.encode(r#"{"alg":"RS256","typ":"JWT"}"#),
            B64URL.encode(claims.to_string())
        )
    }

    #[test]
    fn reads_exp_of_jwts_only() {
        let t = jwt_with(serde_json::json!({"exp": 1_700_000_000u64, "aud": "x"}));
        assert_eq!(
            jwt_expiry(&t),
            Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
        assert_eq!(jwt_expiry("0123456789abcdef"), None);
        assert_eq!(jwt_expiry("a.b.c"), None);
        assert_eq!(jwt_expiry(&jwt_with(serde_json::json!({"aud": "x"}))), None);
        for absurd in [
            serde_json::json!(-1),
            serde_json::json!(1e300),
            serde_json::json!("x"),
        ] {
            assert_eq!(
                jwt_expiry(&jwt_with(serde_json::json!({"exp": absurd}))),
                None
            );
        }
    }

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures")
                .join(name),
        )
        .unwrap()
    }

    #[test]
    fn certificate_pem_with_pkcs8_or_pkcs1_key_signs_assertions() {
        let cert = fixture("emulator-client.crt");
        for key in ["emulator-client.key", "emulator-client.pkcs1.key"] {
            let pem = [cert.clone(), fixture(key)].concat();
            let c = ClientCertificate::from_pem(&pem).unwrap_or_else(|e| panic!("{key}: {e}"));
            let jwt = c
                .assertion(
                    "app",
                    "https://login/t/oauth2/v2.0/token",
                    SystemTime::now(),
                )
                .unwrap();
            let parts: Vec<&str> = jwt.split('.').collect();
            assert_eq!(parts.len(), 3);
            let header: serde_json::Value =
                serde_json::from_slice(&B64URL.decode(parts[0]).unwrap()).unwrap();
            let claims: serde_json::Value =
                serde_json::from_slice(&B64URL.decode(parts[1]).unwrap()).unwrap();
            assert_eq!(header["alg"], "RS256");
            assert_eq!(header["x5t"].as_str().unwrap().len(), 27); // 20 bytes, base64url
            assert_eq!(claims["iss"], "app");
            assert_eq!(claims["sub"], "app");
            assert_eq!(claims["aud"], "https://login/t/oauth2/v2.0/token");
            assert_eq!(
                claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
                600
            );
            let again = c.assertion("app", "x", SystemTime::now()).unwrap();
            let jti = |j: &str| {
                let c = j.split('.').nth(1).unwrap();
                serde_json::from_slice::<serde_json::Value>(&B64URL.decode(c).unwrap()).unwrap()
                    ["jti"]
                    .clone()
            };
            assert_ne!(jti(&jwt), jti(&again), "jti must be fresh");
        }
    }

    #[test]
    fn certificate_pem_problems_are_named() {
        let cert = fixture("emulator-client.crt");
        let err = |pem: &[u8]| ClientCertificate::from_pem(pem).unwrap_err();
        assert!(err(b"").contains("CERTIFICATE"));
        assert!(err(&cert).contains("PRIVATE KEY"));
        let encrypted = [
            cert.clone(),
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"
                .to_vec(),
        ]
        .concat();
        assert!(err(&encrypted).contains("encrypted"));
        // other.crt is a different certificate: its key is not the fixture key.
        let mismatched = [fixture("other.crt"), fixture("emulator-client.key")].concat();
        assert!(err(&mismatched).contains("does not belong"));
    }
}
