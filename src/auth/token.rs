//! Client tokens: JWTs signed with a shared secret (HS256) or a private key whose public
//! half the nodes hold (RS256, EdDSA). The signature and `iss`/`aud` are checked by
//! `jsonwebtoken`; `exp` and `nbf` are checked here against the node's clock (`Env`), so
//! that expiry is deterministic in simulation and the connection can be closed at the very
//! moment its token runs out.

use std::collections::BTreeSet;
use std::path::Path;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::{Identity, MAX_ROLE_BYTES, MAX_ROLES, MAX_SUBJECT_BYTES};

/// Longest token taken (a token with a few roles is a few hundred bytes; this bounds the
/// base64 and JSON decoding an unauthenticated client can ask for).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Fewest bytes an HS256 secret may have (RFC 7518 §3.2: at least the hash's 256 bits).
pub const MIN_HMAC_SECRET_BYTES: usize = 32;

/// Largest key or secret file read: a PEM key is a few KiB; a larger file is the wrong file.
const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;

/// How far in the future a token's `nbf` may be (clock skew between the issuer and the node).
const NBF_LEEWAY_S: u64 = 60;

/// Why a token (or a key) cannot be used. The message is what a refused client is told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error(
        "no token: send it as `Authorization: Bearer <token>` on the WebSocket upgrade, or as \
         the `token` query parameter"
    )]
    Missing,
    #[error("the token has {len} bytes, over the limit of {MAX_TOKEN_BYTES}")]
    TooLong { len: usize },
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("the token expired at {exp} (now {now}, seconds since the epoch)")]
    Expired { exp: u64, now: u64 },
    #[error("the token is not valid before {nbf} (now {now})")]
    NotYetValid { nbf: u64, now: u64 },
    #[error("client `{0}` is not among allowed_clients")]
    NotAllowed(String),
    #[error("{path}: {reason}")]
    Key { path: String, reason: String },
}

/// The claims mpreg reads and writes. `roles` is mpreg's own claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    /// Expiry, seconds since the Unix epoch (required).
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// One audience (tokens minted by others may carry a list; `jsonwebtoken` checks
    /// either form, so this is read only when minting).
    #[serde(default, skip_serializing_if = "Option::is_none", skip_deserializing)]
    pub aud: Option<String>,
}

/// A verified token: who, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub identity: Identity,
    /// Seconds since the epoch at which the token, and the connection it opened, end.
    pub exp: u64,
}

/// Checks tokens for a node.
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
    /// `sub`s that may connect; empty: any holder of a valid token.
    allowed: BTreeSet<String>,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("algorithms", &self.validation.algorithms)
            .field("allowed", &self.allowed)
            .finish_non_exhaustive()
    }
}

/// Where a node's verification key comes from.
pub enum KeySource<'p> {
    /// HS256: the secret itself (the file's bytes, surrounding whitespace trimmed).
    SecretFile(&'p Path),
    /// RS256 or EdDSA: a PEM public key (`BEGIN PUBLIC KEY`; an RSA `BEGIN RSA PUBLIC KEY`
    /// too).
    PublicKeyFile(&'p Path),
}

/// Reads a key file, bounded.
fn read_key_file(path: &Path) -> Result<Vec<u8>, AuthError> {
    use crate::small_file::{SmallFileError, read_small_file};
    read_small_file(path, MAX_KEY_FILE_BYTES).map_err(|e| AuthError::Key {
        path: path.display().to_string(),
        reason: match e {
            SmallFileError::Io(e) => e.to_string(),
            SmallFileError::TooLarge => {
                format!("over {MAX_KEY_FILE_BYTES} bytes: not a key file")
            }
        },
    })
}

/// The secret in `bytes`, trimmed and long enough.
fn hmac_secret(bytes: &[u8], path: &Path) -> Result<Vec<u8>, AuthError> {
    let secret = bytes.trim_ascii();
    if secret.len() < MIN_HMAC_SECRET_BYTES {
        return Err(AuthError::Key {
            path: path.display().to_string(),
            reason: format!(
                "the secret has {} bytes, fewer than {MIN_HMAC_SECRET_BYTES}: use e.g. \
                 `openssl rand -hex 32 > jwt.secret`",
                secret.len()
            ),
        });
    }
    Ok(secret.to_vec())
}

impl TokenVerifier {
    /// A verifier of HS256 tokens signed with `secret` itself (embedding, fuzzing).
    pub fn with_hmac_secret(
        secret: &[u8],
        allowed: BTreeSet<String>,
    ) -> Result<TokenVerifier, AuthError> {
        let key =
            DecodingKey::from_secret(secret).map_err(|e| AuthError::Invalid(describe(e.kind())))?;
        Ok(TokenVerifier {
            key,
            validation: validation(Algorithm::HS256, None, None),
            allowed,
        })
    }

    /// A verifier for tokens signed with `source`'s key, optionally from `issuer` for
    /// `audience`, held by one of `allowed` (empty: anyone).
    pub fn new(
        source: KeySource<'_>,
        issuer: Option<&str>,
        audience: Option<&str>,
        allowed: BTreeSet<String>,
    ) -> Result<TokenVerifier, AuthError> {
        let (key, algorithm) = match source {
            KeySource::SecretFile(path) => {
                let secret = hmac_secret(&read_key_file(path)?, path)?;
                let key = DecodingKey::from_secret(&secret).map_err(|e| AuthError::Key {
                    path: path.display().to_string(),
                    reason: describe(e.kind()),
                })?;
                (key, Algorithm::HS256)
            }
            KeySource::PublicKeyFile(path) => {
                let pem = read_key_file(path)?;
                if let Ok(k) = DecodingKey::from_ed_pem(&pem) {
                    (k, Algorithm::EdDSA)
                } else if let Ok(k) = DecodingKey::from_rsa_pem(&pem) {
                    (k, Algorithm::RS256)
                } else {
                    return Err(AuthError::Key {
                        path: path.display().to_string(),
                        reason: "not a PEM Ed25519 or RSA public key".to_owned(),
                    });
                }
            }
        };
        Ok(TokenVerifier {
            key,
            validation: validation(algorithm, issuer, audience),
            allowed,
        })
    }

    /// Checks `token` at `now` (seconds since the epoch): signature, claims, expiry, and
    /// whether its holder is allowed.
    pub fn verify(&self, token: &str, now: u64) -> Result<Verified, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::TooLong { len: token.len() });
        }
        #[derive(Deserialize)]
        struct Presented {
            sub: String,
            exp: u64,
            #[serde(default)]
            roles: Option<Vec<String>>,
            #[serde(default)]
            nbf: Option<u64>,
        }
        let data = jsonwebtoken::decode::<Presented>(token, &self.key, &self.validation)
            .map_err(|e| AuthError::Invalid(describe(e.kind())))?;
        let c = data.claims;
        if now >= c.exp {
            return Err(AuthError::Expired { exp: c.exp, now });
        }
        if let Some(nbf) = c.nbf
            && nbf > now.saturating_add(NBF_LEEWAY_S)
        {
            return Err(AuthError::NotYetValid { nbf, now });
        }
        let roles = c.roles.unwrap_or_default();
        if c.sub.is_empty() || c.sub.len() > MAX_SUBJECT_BYTES {
            return Err(AuthError::Invalid(format!(
                "`sub` must have 1 to {MAX_SUBJECT_BYTES} bytes"
            )));
        }
        if roles.len() > MAX_ROLES
            || roles
                .iter()
                .any(|r| r.is_empty() || r.len() > MAX_ROLE_BYTES)
        {
            return Err(AuthError::Invalid(format!(
                "`roles` must be at most {MAX_ROLES} names of 1 to {MAX_ROLE_BYTES} bytes"
            )));
        }
        if !self.allowed.is_empty() && !self.allowed.contains(&c.sub) {
            return Err(AuthError::NotAllowed(c.sub));
        }
        Ok(Verified {
            identity: Identity {
                sub: c.sub,
                roles: roles.into_iter().collect(),
            },
            exp: c.exp,
        })
    }
}

/// What `jsonwebtoken` checks: the one algorithm of the node's key, `sub` and `exp`
/// present, and `iss`/`aud` when configured. Time is checked in `verify`, against the
/// node's clock.
fn validation(algorithm: Algorithm, issuer: Option<&str>, audience: Option<&str>) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.set_required_spec_claims(&["exp", "sub"]);
    validation.validate_aud = audience.is_some();
    if let Some(aud) = audience {
        validation.set_audience(&[aud]);
    }
    if let Some(iss) = issuer {
        validation.set_issuer(&[iss]);
        validation.required_spec_claims.insert("iss".to_owned());
    }
    validation
}

/// A short reason, without echoing the token.
fn describe(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::InvalidSignature => "bad signature".to_owned(),
        ErrorKind::InvalidAlgorithm => {
            "signed with another algorithm than the node's key".to_owned()
        }
        ErrorKind::MissingRequiredClaim(c) => format!("no `{c}` claim"),
        ErrorKind::InvalidClaimFormat(c) => format!("claim `{c}` has the wrong type"),
        ErrorKind::InvalidIssuer => "wrong issuer (`iss`)".to_owned(),
        ErrorKind::InvalidAudience => "wrong audience (`aud`)".to_owned(),
        ErrorKind::Json(e) => format!("claims: {}", crate::protocol::plain_error(e)),
        ErrorKind::Base64(_) | ErrorKind::Utf8(_) | ErrorKind::InvalidToken => {
            "not a JWT (three base64url parts)".to_owned()
        }
        other => format!("{other:?}"),
    }
}

/// Mints tokens (`mpreg token issue`; tests).
pub struct TokenIssuer {
    key: EncodingKey,
    algorithm: Algorithm,
}

impl TokenIssuer {
    /// HS256 with the secret in `path` (the file the nodes' `jwt_secret_file` names).
    pub fn from_secret_file(path: &Path) -> Result<TokenIssuer, AuthError> {
        let secret = hmac_secret(&read_key_file(path)?, path)?;
        TokenIssuer::from_secret(&secret)
    }

    /// EdDSA or RS256 with the PEM private key in `path` (PKCS#8; RSA's PKCS#1 too).
    pub fn from_private_key_file(path: &Path) -> Result<TokenIssuer, AuthError> {
        let pem = read_key_file(path)?;
        if let Ok(key) = EncodingKey::from_ed_pem(&pem) {
            return Ok(TokenIssuer {
                key,
                algorithm: Algorithm::EdDSA,
            });
        }
        match EncodingKey::from_rsa_pem(&pem) {
            Ok(key) => Ok(TokenIssuer {
                key,
                algorithm: Algorithm::RS256,
            }),
            Err(_) => Err(AuthError::Key {
                path: path.display().to_string(),
                reason: "not a PEM Ed25519 or RSA private key".to_owned(),
            }),
        }
    }

    /// HS256 with `secret` itself.
    pub fn from_secret(secret: &[u8]) -> Result<TokenIssuer, AuthError> {
        Ok(TokenIssuer {
            key: EncodingKey::from_secret(secret)
                .map_err(|e| AuthError::Invalid(describe(e.kind())))?,
            algorithm: Algorithm::HS256,
        })
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The signed token for `claims`.
    pub fn issue(&self, claims: &Claims) -> Result<String, AuthError> {
        jsonwebtoken::encode(&Header::new(self.algorithm), claims, &self.key)
            .map_err(|e| AuthError::Invalid(describe(e.kind())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "a jwt secret of at least 32 bytes, for tests";

    fn secret_file(dir: &Path, secret: &str) -> std::path::PathBuf {
        let p = dir.join("jwt.secret");
        std::fs::write(&p, format!("{secret}\n")).unwrap();
        p
    }

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("mpreg-token-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn claims(sub: &str, exp: u64, roles: &[&str]) -> Claims {
        Claims {
            sub: sub.to_owned(),
            exp,
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            iat: None,
            nbf: None,
            iss: None,
            aud: None,
        }
    }

    #[test]
    fn tokens_are_checked_for_signature_expiry_claims_and_holder() {
        let dir = temp_dir("checks");
        let path = secret_file(&dir, SECRET);
        let allowed = ["svc-a".to_owned(), "svc-b".to_owned()].into();
        let v = TokenVerifier::new(KeySource::SecretFile(&path), None, None, allowed).unwrap();
        let issuer = TokenIssuer::from_secret_file(&path).unwrap();
        let other = TokenIssuer::from_secret(b"another secret, also 32 bytes long......").unwrap();
        let now = 1_000_000;
        let good = issuer
            .issue(&claims("svc-a", now + 60, &["caller"]))
            .unwrap();
        let ok = v.verify(&good, now).unwrap();
        assert_eq!(ok.identity.sub, "svc-a");
        assert!(ok.identity.roles.contains("caller"));
        assert_eq!(ok.exp, now + 60);
        // (token, expected error) for each way a token fails.
        let cases = [
            (
                other.issue(&claims("svc-a", now + 60, &[])).unwrap(),
                AuthError::Invalid("bad signature".into()),
            ),
            (
                issuer.issue(&claims("svc-a", now, &[])).unwrap(),
                AuthError::Expired { exp: now, now },
            ),
            (
                issuer.issue(&claims("svc-c", now + 60, &[])).unwrap(),
                AuthError::NotAllowed("svc-c".into()),
            ),
            (
                "not.a.token".to_owned(),
                AuthError::Invalid("not a JWT (three base64url parts)".into()),
            ),
            (
                "x".repeat(MAX_TOKEN_BYTES + 1),
                AuthError::TooLong {
                    len: MAX_TOKEN_BYTES + 1,
                },
            ),
        ];
        for (token, want) in cases {
            assert_eq!(v.verify(&token, now), Err(want));
        }
        let mut later = claims("svc-a", now + 600, &[]);
        later.nbf = Some(now + 300);
        let t = issuer.issue(&later).unwrap();
        assert!(matches!(
            v.verify(&t, now),
            Err(AuthError::NotYetValid { .. })
        ));
        assert!(v.verify(&t, now + 300).is_ok());
        let many: Vec<String> = (0..=MAX_ROLES).map(|i| format!("r{i}")).collect();
        let mut c = claims("svc-a", now + 60, &[]);
        c.roles = many;
        assert!(matches!(
            v.verify(&issuer.issue(&c).unwrap(), now),
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn issuer_and_audience_are_enforced_when_configured() {
        let dir = temp_dir("iss");
        let path = secret_file(&dir, SECRET);
        let v = TokenVerifier::new(
            KeySource::SecretFile(&path),
            Some("mpreg-ca"),
            Some("cluster-a"),
            BTreeSet::new(),
        )
        .unwrap();
        let issuer = TokenIssuer::from_secret_file(&path).unwrap();
        let now = 5_000;
        let mut c = claims("anyone", now + 60, &[]);
        assert_eq!(
            v.verify(&issuer.issue(&c).unwrap(), now),
            Err(AuthError::Invalid("no `iss` claim".into()))
        );
        c.iss = Some("mpreg-ca".into());
        c.aud = Some("cluster-b".into());
        assert_eq!(
            v.verify(&issuer.issue(&c).unwrap(), now),
            Err(AuthError::Invalid("wrong audience (`aud`)".into()))
        );
        c.aud = Some("cluster-a".into());
        assert!(v.verify(&issuer.issue(&c).unwrap(), now).is_ok());
        c.iss = Some("someone-else".into());
        assert_eq!(
            v.verify(&issuer.issue(&c).unwrap(), now),
            Err(AuthError::Invalid("wrong issuer (`iss`)".into()))
        );
    }

    #[test]
    fn short_secrets_and_wrong_files_are_refused_with_the_path() {
        let dir = temp_dir("short");
        let path = secret_file(&dir, "too short");
        let e = TokenVerifier::new(KeySource::SecretFile(&path), None, None, BTreeSet::new())
            .unwrap_err();
        assert!(e.to_string().contains("fewer than 32"), "{e}");
        let e = TokenVerifier::new(KeySource::PublicKeyFile(&path), None, None, BTreeSet::new())
            .unwrap_err();
        assert!(e.to_string().contains("not a PEM"), "{e}");
        let missing = dir.join("absent");
        let e = TokenIssuer::from_secret_file(&missing).err().unwrap();
        assert!(e.to_string().contains("absent"), "{e}");
    }

    #[test]
    fn ed25519_keys_sign_and_verify() {
        let dir = temp_dir("ed");
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let private = dir.join("jwt.key");
        let public = dir.join("jwt.pub");
        std::fs::write(&private, key.serialize_pem()).unwrap();
        std::fs::write(&public, key.public_key_pem()).unwrap();
        let issuer = TokenIssuer::from_private_key_file(&private).unwrap();
        assert_eq!(issuer.algorithm(), Algorithm::EdDSA);
        let v = TokenVerifier::new(
            KeySource::PublicKeyFile(&public),
            None,
            None,
            BTreeSet::new(),
        )
        .unwrap();
        let t = issuer.issue(&claims("svc", 100, &["caller"])).unwrap();
        assert!(v.verify(&t, 99).is_ok());
        // An HS256 token made with the public key's bytes as its secret (the classic
        // algorithm-confusion attack) is refused.
        let confused = TokenIssuer::from_secret(key.public_key_pem().as_bytes()).unwrap();
        let t = confused.issue(&claims("svc", 100, &[])).unwrap();
        assert!(matches!(v.verify(&t, 99), Err(AuthError::Invalid(_))));
    }
}
