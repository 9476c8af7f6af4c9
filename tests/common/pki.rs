//! Certificates and token keys for the TLS and token tests, made fresh by each test in a
//! directory of its own (no key material is committed).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};

/// A directory under the system's temp dir, unique to this process and call.
pub fn temp_dir(label: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("mpreg-{label}-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A certificate authority whose certificate is in `ca.pem` of its directory.
pub struct Ca {
    pub dir: PathBuf,
    pub cert: PathBuf,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, as files.
#[derive(Clone)]
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let dir = temp_dir(name);
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let cert = dir.join("ca.pem");
        std::fs::write(&cert, issuer.pem()).unwrap();
        Ca { dir, cert, issuer }
    }

    /// A certificate for 127.0.0.1 and localhost, good for serving and for client auth.
    pub fn leaf(&self, name: &str) -> Leaf {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let leaf = Leaf {
            cert: self.dir.join(format!("{name}.pem")),
            key: self.dir.join(format!("{name}.key")),
        };
        std::fs::write(&leaf.cert, cert.pem()).unwrap();
        std::fs::write(&leaf.key, key.serialize_pem()).unwrap();
        leaf
    }
}

/// An HS256 secret file in `dir`.
pub fn jwt_secret(dir: &Path, secret: &str) -> PathBuf {
    let path = dir.join("jwt.secret");
    std::fs::write(&path, format!("{secret}\n")).unwrap();
    path
}

/// A token for `sub` with `roles`, valid `ttl_s` seconds from now (negative: expired).
pub fn token(secret_file: &Path, sub: &str, roles: &[&str], ttl_s: i64) -> String {
    let now = mpreg::Env::production().clock.wall_ms() / 1000;
    let claims = mpreg::auth::Claims {
        sub: sub.to_owned(),
        exp: now.saturating_add_signed(ttl_s),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        iat: Some(now),
        nbf: None,
        iss: None,
        aud: None,
    };
    mpreg::auth::TokenIssuer::from_secret_file(secret_file)
        .unwrap()
        .issue(&claims)
        .unwrap()
}
