//! Opening one PostgreSQL connection, with TLS as the URL asks.
//!
//! Every connection of the services, of migrations and of admin commands
//! goes through [`establish`], which honours libpq's `sslmode`,
//! `sslrootcert`, `sslcert` and `sslkey` URL parameters (tokio-postgres
//! itself knows neither `verify-ca`/`verify-full` nor certificate files, so
//! they are taken out of the URL here and the TLS is done with rustls):
//!
//! | `sslmode` | TLS | the server's certificate |
//! | --- | --- | --- |
//! | `disable` | never | — |
//! | `allow`, `prefer` (default, as libpq) | when the server offers it | not checked |
//! | `require` | always | not checked; with `sslrootcert`, checked as `verify-ca` (as libpq) |
//! | `verify-ca` | always | must chain to `sslrootcert` |
//! | `verify-full` | always | must chain to `sslrootcert` and name the host |
//!
//! | parameter | what it is |
//! | --- | --- |
//! | `sslrootcert` | PEM file of the CA certificates the server's certificate must chain to |
//! | `sslcert` | PEM file of the client certificate (leaf first, then any intermediates), presented when the server asks (`hostssl … cert` or `clientcert=verify-ca/verify-full` in `pg_hba.conf`) |
//! | `sslkey` | PEM file of that certificate's private key (PKCS#8, PKCS#1 or SEC1, unencrypted: `sslpassword` is not supported) |
//!
//! `sslcert` and `sslkey` go together; unlike libpq nothing is read from
//! `~/.postgresql/` when they are absent (no certificate is presented).
//! Every file is read at each connection, so rotated certificates need no
//! restart. Errors name the parameter and the file, never a key's contents
//! or the URL's password. Only URLs
//! (`postgres://user:password@host:port/db?sslmode=verify-full&sslrootcert=/etc/ca.pem&sslcert=/etc/pg/tls.crt&sslkey=/etc/pg/tls.key`)
//! are understood, not `key=value` strings.

use diesel::ConnectionError;
use diesel_async::AsyncPgConnection;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use std::str::FromStr;
use std::sync::Arc;

/// How much the connection checks the server, from `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// A URL's TLS settings, and the URL without them for tokio-postgres.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub mode: SslMode,
    pub root_cert: Option<String>,
    /// `sslcert` and `sslkey`: the client certificate presented to the server.
    pub client_cert: Option<ClientCert>,
    /// The URL minus the TLS parameters.
    pub url: String,
}

/// Files of the client certificate (`sslcert`) and its key (`sslkey`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    pub cert: String,
    pub key: String,
}

fn bad(reason: impl Into<String>) -> ConnectionError {
    ConnectionError::InvalidConnectionUrl(reason.into())
}

/// Splits the TLS parameters off a connection URL.
pub fn tls_settings(url: &str) -> Result<TlsSettings, ConnectionError> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut mode = None;
    let mut root_cert = None;
    let mut cert_file = None;
    let mut key_file = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "sslmode" => {
                mode = Some(match percent_decode(value).as_str() {
                    "disable" => SslMode::Disable,
                    "allow" | "prefer" => SslMode::Prefer,
                    "require" => SslMode::Require,
                    "verify-ca" => SslMode::VerifyCa,
                    "verify-full" => SslMode::VerifyFull,
                    _ => {
                        return Err(bad(
                            "sslmode must be disable, allow, prefer, require, verify-ca or verify-full",
                        ));
                    }
                });
            }
            "sslrootcert" => root_cert = Some(percent_decode(value)),
            "sslcert" => cert_file = Some(percent_decode(value)),
            "sslkey" => key_file = Some(percent_decode(value)),
            "sslpassword" | "sslcrl" => {
                return Err(bad(format!("{key} is not supported")));
            }
            _ => kept.push(pair),
        }
    }
    let mut mode = mode.unwrap_or(SslMode::Prefer);
    // libpq: `require` with a root certificate verifies the chain.
    if mode == SslMode::Require && root_cert.is_some() {
        mode = SslMode::VerifyCa;
    }
    if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) && root_cert.is_none() {
        return Err(bad(
            "sslmode=verify-ca and verify-full need sslrootcert=<CA file (PEM)>",
        ));
    }
    // libpq would fall back on ~/.postgresql/postgresql.{crt,key}; a service
    // presenting whatever sits in its home folder is a surprise, so both
    // are asked for explicitly.
    let client_cert = match (cert_file, key_file) {
        (Some(cert), Some(key)) => Some(ClientCert { cert, key }),
        (None, None) => None,
        (Some(_), None) => return Err(bad("sslcert needs sslkey=<its private key file (PEM)>")),
        (None, Some(_)) => return Err(bad("sslkey needs sslcert=<the certificate file (PEM)>")),
    };
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok(TlsSettings {
        mode,
        root_cert,
        client_cert,
        url,
    })
}

fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                let value = hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0);
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `url` with its password replaced by `***`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            let hidden = if userinfo.contains(':') { ":***" } else { "" };
            format!("{scheme}://{user}{hidden}@{host}{tail}")
        }
        None => url.to_owned(),
    }
}

/// Opens a connection to `url` with the TLS its `sslmode` asks for.
pub async fn establish(url: &str) -> Result<AsyncPgConnection, ConnectionError> {
    let settings = tls_settings(url)?;
    let mut config = tokio_postgres::Config::from_str(&settings.url)
        // tokio-postgres's message names the bad part, never the password.
        .map_err(|e| bad(format!("invalid database URL: {e}")))?;
    let failed = |error: tokio_postgres::Error| {
        ConnectionError::BadConnection(format!(
            "cannot connect to PostgreSQL (sslmode {:?}): {}{}",
            settings.mode,
            with_causes(&error),
            refused_client_cert(&settings, &error)
        ))
    };
    if settings.mode == SslMode::Disable {
        config.ssl_mode(tokio_postgres::config::SslMode::Disable);
        let (client, connection) = config
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(failed)?;
        return AsyncPgConnection::try_from_client_and_connection(client, connection).await;
    }
    config.ssl_mode(if settings.mode == SslMode::Prefer {
        tokio_postgres::config::SslMode::Prefer
    } else {
        tokio_postgres::config::SslMode::Require
    });
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(client_config(&settings)?);
    let (client, connection) = config.connect(tls).await.map_err(failed)?;
    AsyncPgConnection::try_from_client_and_connection(client, connection).await
}

/// An error and its causes: tokio-postgres says "error performing TLS
/// handshake" and leaves the reason (e.g. rustls's `UnknownIssuer`) to its
/// source.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The server answers a client certificate it does not accept with a bare
/// TLS alert ("received fatal alert: UnknownCA"), which does not say whose
/// certificate was wrong; this says so, naming the file (never its
/// contents). Empty when no certificate was sent or the alert is about
/// something else.
fn refused_client_cert(settings: &TlsSettings, error: &tokio_postgres::Error) -> String {
    use rustls::AlertDescription as Alert;
    let Some(files) = &settings.client_cert else {
        return String::new();
    };
    match alert_received(error) {
        Some(
            alert @ (Alert::UnknownCA
            | Alert::BadCertificate
            | Alert::UnsupportedCertificate
            | Alert::CertificateRevoked
            | Alert::CertificateExpired
            | Alert::CertificateUnknown
            | Alert::AccessDenied),
        ) => format!(
            " (the server refused the client certificate sslcert {} ({alert:?}): it must be \
             issued by a CA in the server's ssl_ca_file and be valid now)",
            files.cert
        ),
        _ => String::new(),
    }
}

/// The TLS alert the server sent, found among the error's causes. rustls's
/// error travels inside an `io::Error`, whose `source()` skips it, so each
/// `io::Error` is opened with `get_ref`.
fn alert_received(error: &(dyn std::error::Error + 'static)) -> Option<rustls::AlertDescription> {
    let mut next = Some(error);
    while let Some(cause) = next {
        let tls = cause.downcast_ref::<rustls::Error>().or_else(|| {
            cause
                .downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::get_ref)
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(rustls::Error::AlertReceived(alert)) = tls {
            return Some(*alert);
        }
        next = cause.source();
    }
    None
}

fn client_config(settings: &TlsSettings) -> Result<ClientConfig, ConnectionError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(format!("tls: {e}")))?;
    let verifier: Arc<dyn ServerCertVerifier> = match (&settings.root_cert, settings.mode) {
        (Some(path), SslMode::VerifyCa | SslMode::VerifyFull) => {
            let pem = std::fs::read(path)
                .map_err(|e| bad(format!("cannot read sslrootcert {path}: {e}")))?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| bad(format!("sslrootcert {path}: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| bad(format!("sslrootcert {path}: {e}")))?;
            }
            if roots.is_empty() {
                return Err(bad(format!("sslrootcert {path}: no certificate in it")));
            }
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| bad(format!("sslrootcert {path}: {e}")))?;
            if settings.mode == SslMode::VerifyFull {
                webpki
            } else {
                Arc::new(ChainOnly(webpki))
            }
        }
        _ => Arc::new(Unverified(provider)),
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match &settings.client_cert {
        None => Ok(builder.with_no_client_auth()),
        Some(files) => {
            let (chain, key) = client_certificate(files)?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                bad(format!(
                    "sslcert {} / sslkey {}: {e}",
                    files.cert, files.key
                ))
            })
        }
    }
}

/// The certificate chain and key named by `sslcert`/`sslkey`. Messages name
/// the files and what is wrong with them, never their contents.
fn client_certificate(
    files: &ClientCert,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), ConnectionError> {
    let pem = std::fs::read(&files.cert)
        .map_err(|e| bad(format!("cannot read sslcert {}: {e}", files.cert)))?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("sslcert {}: {e}", files.cert)))?;
    if chain.is_empty() {
        return Err(bad(format!("sslcert {}: no certificate in it", files.cert)));
    }
    let pem = std::fs::read(&files.key)
        .map_err(|e| bad(format!("cannot read sslkey {}: {e}", files.key)))?;
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        bad(format!(
            "sslkey {}: no usable private key ({})",
            files.key,
            pem_problem(&e)
        ))
    })?;
    Ok((chain, key))
}

/// What is wrong with a key file, in words that quote none of it (the PEM
/// errors' own messages may carry a line or a byte of the key).
fn pem_problem(error: &rustls_pki_types::pem::Error) -> &'static str {
    use rustls_pki_types::pem::Error;
    match error {
        Error::NoItemsFound => "no PRIVATE KEY section (PKCS#8, PKCS#1 or SEC1) in it",
        Error::MissingSectionEnd { .. } => "a PEM section without its END line",
        Error::IllegalSectionStart { .. } => "a malformed BEGIN line",
        Error::Base64Decode(_) => "not valid base64",
        Error::Io(_) => "unreadable",
        Error::SectionTooLarge => "a PEM section over 256 MB",
        _ => "not a PEM private key",
    }
}

/// `verify-ca`: the chain must lead to a trusted CA; the host name is not
/// compared (libpq's meaning).
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The name is checked only once the chain verified.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `prefer`/`require` without a root certificate: encrypted, but the
/// server is not authenticated (libpq's meaning). The handshake signatures
/// are still checked.
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn tls_parameters_are_taken_out_of_the_url() {
        let s = tls_settings(
            "postgres://u:p@db:5432/x?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=a",
        )
        .unwrap();
        assert_eq!(s.mode, SslMode::VerifyFull);
        assert_eq!(s.root_cert.as_deref(), Some("/etc/ca.pem"));
        assert_eq!(s.url, "postgres://u:p@db:5432/x?application_name=a");
        assert_eq!(
            tls_settings("postgres://db/x").unwrap().mode,
            SslMode::Prefer
        );
        let s = tls_settings("postgres://db/x?sslmode=require&sslrootcert=ca.pem").unwrap();
        assert_eq!(
            s.mode,
            SslMode::VerifyCa,
            "require + root cert verifies, as libpq"
        );
        assert!(tls_settings("postgres://db/x?sslmode=verify-ca").is_err());
        let s = tls_settings(
            "postgres://db/x?sslmode=verify-full&sslrootcert=ca.pem&sslcert=%2Fc.pem&sslkey=k.pem",
        )
        .unwrap();
        assert_eq!(
            s.client_cert,
            Some(ClientCert {
                cert: "/c.pem".into(),
                key: "k.pem".into()
            })
        );
        assert_eq!(s.url, "postgres://db/x");
        let error = tls_settings("postgres://db/x?sslcert=c.pem")
            .unwrap_err()
            .to_string();
        assert!(error.contains("sslkey"), "{error}");
        assert!(tls_settings("postgres://db/x?sslkey=k.pem").is_err());
        assert!(tls_settings("postgres://db/x?sslpassword=pw").is_err());
        assert!(tls_settings("postgres://db/x?sslmode=bogus").is_err());
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/x?sslmode=require"),
            "postgres://app:***@db:5432/x?sslmode=require"
        );
        assert_eq!(redact_url("postgres://app@db/x"), "postgres://app@db/x");
        assert_eq!(
            redact_url("redis://:pw@cache:6379/0"),
            "redis://:***@cache:6379/0"
        );
        assert_eq!(redact_url("postgres://db/x"), "postgres://db/x");
    }
}
