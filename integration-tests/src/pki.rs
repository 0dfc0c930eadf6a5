//! Certificates for TLS tests, generated per test with rcgen: a CA, server
//! certificates for `localhost`/127.0.0.1 and client certificates, written
//! as PEM files into a temporary folder.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

/// A certificate authority that signs test certificates.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    pub pem: String,
}

/// A certificate and its key, as PEM.
#[derive(Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new())
            .unwrap_or_else(|e| panic!("ca params: {e}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("ca key: {e}"));
        let issuer =
            CertifiedIssuer::self_signed(params, key).unwrap_or_else(|e| panic!("ca cert: {e}"));
        let pem = issuer.as_ref().pem();
        Self { issuer, pem }
    }

    fn issue(&self, common_name: &str, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Issued {
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .unwrap_or_else(|e| panic!("params: {e}"));
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("key: {e}"));
        let cert = params
            .signed_by(&key, &self.issuer)
            .unwrap_or_else(|e| panic!("sign: {e}"));
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// A server certificate valid for `names` (DNS names or IP addresses).
    pub fn server(&self, names: &[&str]) -> Issued {
        self.issue(
            names.first().copied().unwrap_or("server"),
            names,
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate with subject CN `name`.
    pub fn client(&self, name: &str) -> Issued {
        self.issue(name, &[name], ExtendedKeyUsagePurpose::ClientAuth)
    }
}

/// Writes `contents` to `dir/name` atomically (a reloading server never
/// sees half a file) and returns the path.
pub fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, contents).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
    std::fs::rename(&tmp, &path).unwrap_or_else(|e| panic!("rename {}: {e}", path.display()));
    path
}
