//! Who is calling, and may they call this method.
//!
//! A caller is identified by a bearer token (`authorization: Bearer …`) or,
//! on a mutual-TLS connection, by its verified client certificate. Tokens
//! are configured as SHA-256 hashes only (`role name sha256hex` lines in
//! `AUDIT_AUTH_TOKENS_FILE`): the server never holds a token in clear. A
//! presented token is hashed and compared with every configured hash in
//! constant time, so neither timing nor the order of the file says how
//! close a guess was. Certificates map to callers through
//! `AUDIT_AUTH_CLIENT_CERTS_FILE` (`role name` lines, `name` being the
//! certificate's subject CN or one of its DNS names).
//!
//! Each service states what every method needs in a [`Policy`] (its method
//! → role table); [`AuthLayer`] enforces it before the call reaches a
//! handler: no or unknown credentials → UNAUTHENTICATED, a caller whose role
//! is not enough → PERMISSION_DENIED. The caller rides in the request's
//! extensions ([`caller`]), so handlers can record who wrote what. Neither
//! tokens nor their hashes are ever logged.

use crate::tls::ConnInfo;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::task::{Context, Poll};
use subtle::ConstantTimeEq;

/// What a caller may do. `admin` may call everything, including the admin
/// RPCs of the future (any method a policy does not list needs admin);
/// `writer` and `reader` only their own side, so a producer's token cannot
/// bulk-read and a dashboard's cannot write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Reader,
    Writer,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
            Role::Admin => "admin",
        }
    }

    fn parse(word: &str) -> Option<Self> {
        match word {
            "reader" => Some(Role::Reader),
            "writer" => Some(Role::Writer),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// Whether a caller with this role may call a method that needs `needed`.
    pub fn allows(self, needed: Role) -> bool {
        self == Role::Admin || self == needed
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An authenticated caller, as handlers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The configured name (from the tokens or client-certificates file);
    /// this is what the audit trail records as `recorded_by`.
    pub name: String,
    pub role: Role,
}

/// What one method needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, no credentials (health and reflection by default).
    Open,
    /// Any authenticated caller, whatever its role.
    Authenticated,
    Role(Role),
}

/// A service's method → access table, given the gRPC path
/// (`/signal_audit.v1.SignalWriterService/RecordSignal`). Health and
/// reflection are decided by [`AuthArgs`], not by the policy.
pub type Policy = fn(&str) -> Access;

/// The caller of this request, when auth is on and the call got through.
pub fn caller<T>(request: &tonic::Request<T>) -> Option<&Caller> {
    request.extensions().get::<Caller>()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// Every call needs a bearer token or a mapped client certificate.
    On,
    /// No authentication (local development only): every caller may call
    /// everything and nothing is recorded as `recorded_by`.
    Off,
}

/// Authentication options both services take; flatten into `ServeArgs`.
#[derive(Debug, Clone, clap::Args)]
pub struct AuthArgs {
    /// Caller authentication and authorisation.
    #[arg(long, env = "AUDIT_AUTH", value_enum, default_value = "on")]
    pub auth: AuthMode,
    /// Bearer tokens: one `role name sha256hex` line per token (role
    /// writer, reader or admin; the hex SHA-256 of the token, e.g. from
    /// `printf %s TOKEN | sha256sum`); `#` starts a comment.
    #[arg(long, env = "AUDIT_AUTH_TOKENS_FILE")]
    pub auth_tokens_file: Option<PathBuf>,
    /// Client certificates (mutual TLS): one `role name` line per caller,
    /// `name` matching the verified certificate's subject CN or a DNS name.
    #[arg(long, env = "AUDIT_AUTH_CLIENT_CERTS_FILE")]
    pub auth_client_certs_file: Option<PathBuf>,
    /// Health checks need no credentials (probes and load balancers).
    #[arg(long, env = "AUDIT_AUTH_OPEN_HEALTH", default_value_t = true, action = clap::ArgAction::Set)]
    pub auth_open_health: bool,
    /// Reflection (grpcurl list/describe) needs no credentials; it reveals
    /// the contract, which is no secret, but no data.
    #[arg(long, env = "AUDIT_AUTH_OPEN_REFLECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub auth_open_reflection: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error("cannot read {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    // Line numbers only: a line of the tokens file holds a hash.
    #[error("{path} line {line}: {reason}")]
    Line {
        path: PathBuf,
        line: usize,
        reason: &'static str,
    },
    #[error(
        "AUDIT_AUTH=on but neither AUDIT_AUTH_TOKENS_FILE nor AUDIT_AUTH_CLIENT_CERTS_FILE is set: no caller could ever be admitted"
    )]
    NoCredentials,
}

struct TokenEntry {
    hash: [u8; 32],
    caller: Caller,
}

/// The loaded configuration: the [`AuthLayer`] of one server.
#[derive(Clone)]
pub struct Auth {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    tokens: Vec<TokenEntry>,
    certs: HashMap<String, Caller>,
    open_health: bool,
    open_reflection: bool,
    policy: Policy,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the hashes.
        match &self.inner {
            None => f.write_str("Auth(off)"),
            Some(inner) => write!(
                f,
                "Auth(on, {} tokens, {} certificates)",
                inner.tokens.len(),
                inner.certs.len()
            ),
        }
    }
}

impl Auth {
    /// No authentication: every call passes, no caller is recorded.
    pub fn off() -> Self {
        Self { inner: None }
    }

    /// Loads the files named by `args` and enforces `policy`.
    pub fn from_args(args: &AuthArgs, policy: Policy) -> Result<Self, AuthConfigError> {
        if args.auth == AuthMode::Off {
            return Ok(Self::off());
        }
        if args.auth_tokens_file.is_none() && args.auth_client_certs_file.is_none() {
            return Err(AuthConfigError::NoCredentials);
        }
        let tokens = match &args.auth_tokens_file {
            Some(path) => parse_tokens(path, &read(path)?)?,
            None => Vec::new(),
        };
        let certs = match &args.auth_client_certs_file {
            Some(path) => parse_certs(path, &read(path)?)?,
            None => HashMap::new(),
        };
        tracing::info!(
            tokens = tokens.len(),
            certificates = certs.len(),
            "caller authentication on"
        );
        Ok(Self {
            inner: Some(Arc::new(Inner {
                tokens,
                certs,
                open_health: args.auth_open_health,
                open_reflection: args.auth_open_reflection,
                policy,
            })),
        })
    }

    pub fn is_on(&self) -> bool {
        self.inner.is_some()
    }

    /// Admits or refuses one call: the caller, `None` when no identity is
    /// needed (open method or auth off), or the status to answer with.
    pub fn check(
        &self,
        path: &str,
        headers: &http::HeaderMap,
        conn: Option<&ConnInfo>,
    ) -> Result<Option<Caller>, tonic::Status> {
        let Some(inner) = &self.inner else {
            return Ok(None);
        };
        let access = if path.starts_with("/grpc.health.v1.Health/") {
            if inner.open_health {
                Access::Open
            } else {
                Access::Authenticated
            }
        } else if path.starts_with("/grpc.reflection.") {
            if inner.open_reflection {
                Access::Open
            } else {
                Access::Authenticated
            }
        } else {
            (inner.policy)(path)
        };
        if access == Access::Open {
            return Ok(None);
        }
        let caller = inner.identify(headers, conn)?;
        match access {
            Access::Role(needed) if !caller.role.allows(needed) => {
                Err(tonic::Status::permission_denied(format!(
                    "caller {} has role {}; {path} needs role {needed}",
                    caller.name, caller.role
                )))
            }
            _ => Ok(Some(caller)),
        }
    }
}

impl Inner {
    fn identify(
        &self,
        headers: &http::HeaderMap,
        conn: Option<&ConnInfo>,
    ) -> Result<Caller, tonic::Status> {
        if let Some(value) = headers.get(http::header::AUTHORIZATION) {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| {
                    v.strip_prefix("Bearer ")
                        .or_else(|| v.strip_prefix("bearer "))
                })
                .map(str::trim)
                .ok_or_else(|| {
                    tonic::Status::unauthenticated("authorization must be `Bearer <token>`")
                })?;
            return self
                .token_caller(token)
                .ok_or_else(|| tonic::Status::unauthenticated("unknown bearer token"));
        }
        if let Some(names) = conn.and_then(|c| c.client_names.as_deref()) {
            return names
                .iter()
                .find_map(|name| self.certs.get(name).cloned())
                .ok_or_else(|| {
                    tonic::Status::unauthenticated(format!(
                        "client certificate {} is not mapped to a caller",
                        names.first().map(String::as_str).unwrap_or("(no name)")
                    ))
                });
        }
        Err(tonic::Status::unauthenticated(
            "credentials required: a bearer token or a client certificate",
        ))
    }

    /// Looks at every entry whatever matches, comparing in constant time.
    fn token_caller(&self, token: &str) -> Option<Caller> {
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found: Option<&Caller> = None;
        for entry in &self.tokens {
            if bool::from(entry.hash.ct_eq(&presented)) {
                found = Some(&entry.caller);
            }
        }
        found.cloned()
    }
}

fn read(path: &Path) -> Result<String, AuthConfigError> {
    std::fs::read_to_string(path).map_err(|error| AuthConfigError::Read {
        path: path.to_owned(),
        error,
    })
}

/// Meaningful lines with their 1-based numbers, comments and blanks skipped.
fn lines(text: &str) -> impl Iterator<Item = (usize, Vec<&str>)> {
    text.lines().enumerate().filter_map(|(i, line)| {
        let line = line.split('#').next().unwrap_or("").trim();
        (!line.is_empty()).then(|| (i + 1, line.split_whitespace().collect()))
    })
}

fn parse_tokens(path: &Path, text: &str) -> Result<Vec<TokenEntry>, AuthConfigError> {
    let bad = |line, reason| AuthConfigError::Line {
        path: path.to_owned(),
        line,
        reason,
    };
    lines(text)
        .map(|(line, words)| {
            let [role, name, hash] = words[..] else {
                return Err(bad(line, "expected `role name sha256hex`"));
            };
            let role = Role::parse(role)
                .ok_or_else(|| bad(line, "role must be writer, reader or admin"))?;
            let hash = parse_sha256(hash)
                .ok_or_else(|| bad(line, "the hash must be 64 hexadecimal digits (SHA-256)"))?;
            Ok(TokenEntry {
                hash,
                caller: Caller {
                    name: name.to_owned(),
                    role,
                },
            })
        })
        .collect()
}

fn parse_certs(path: &Path, text: &str) -> Result<HashMap<String, Caller>, AuthConfigError> {
    lines(text)
        .map(|(line, words)| {
            let bad = |reason| AuthConfigError::Line {
                path: path.to_owned(),
                line,
                reason,
            };
            let [role, name] = words[..] else {
                return Err(bad("expected `role name`"));
            };
            let role =
                Role::parse(role).ok_or_else(|| bad("role must be writer, reader or admin"))?;
            Ok((
                name.to_owned(),
                Caller {
                    name: name.to_owned(),
                    role,
                },
            ))
        })
        .collect()
}

fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let digit = |b: u8| (b as char).to_digit(16).and_then(|d| u8::try_from(d).ok());
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

/// The hex SHA-256 of a token, as the tokens file wants it.
pub fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Tower layer enforcing an [`Auth`] on every call of a tonic server.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    auth: Auth,
}

impl AuthLayer {
    pub fn new(auth: Auth) -> Self {
        Self { auth }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            auth: self.auth.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    auth: Auth,
}

impl<S, B> tower::Service<http::Request<B>> for AuthService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::Either<
        S::Future,
        futures::future::Ready<Result<Self::Response, Self::Error>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let verdict = self.auth.check(
            request.uri().path(),
            request.headers(),
            request.extensions().get::<ConnInfo>(),
        );
        match verdict {
            Ok(caller) => {
                if let Some(caller) = caller {
                    request.extensions_mut().insert(caller);
                }
                futures::future::Either::Left(self.inner.call(request))
            }
            Err(status) => {
                tracing::info!(
                    method = request.uri().path(),
                    code = ?status.code(),
                    reason = status.message(),
                    "call refused"
                );
                futures::future::Either::Right(futures::future::ready(Ok(status.into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    fn policy(path: &str) -> Access {
        if path.starts_with("/w/") {
            Access::Role(Role::Writer)
        } else {
            Access::Role(Role::Admin)
        }
    }

    fn auth(tokens: &str) -> Auth {
        let tokens = parse_tokens(Path::new("tokens"), tokens).unwrap();
        Auth {
            inner: Some(Arc::new(Inner {
                tokens,
                certs: HashMap::new(),
                open_health: true,
                open_reflection: false,
                policy,
            })),
        }
    }

    fn bearer(token: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        headers
    }

    #[test]
    fn tokens_map_to_callers_and_roles_are_enforced() {
        let auth = auth(&format!(
            "# producers\nwriter ingest {}\nreader dash {}\n",
            token_hash("w-secret"),
            token_hash("r-secret")
        ));
        let caller = auth.check("/w/Record", &bearer("w-secret"), None).unwrap();
        assert_eq!(caller.unwrap().name, "ingest");
        let denied = auth
            .check("/w/Record", &bearer("r-secret"), None)
            .unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        let unknown = auth.check("/w/Record", &bearer("guess"), None).unwrap_err();
        assert_eq!(unknown.code(), tonic::Code::Unauthenticated);
        assert!(!unknown.message().contains("guess"));
        let missing = auth
            .check("/w/Record", &http::HeaderMap::new(), None)
            .unwrap_err();
        assert_eq!(missing.code(), tonic::Code::Unauthenticated);
        // Unlisted methods need admin.
        let admin_only = auth
            .check("/x/Purge", &bearer("w-secret"), None)
            .unwrap_err();
        assert_eq!(admin_only.code(), tonic::Code::PermissionDenied);
        // Health open, reflection not (as configured here).
        assert_eq!(
            auth.check(
                "/grpc.health.v1.Health/Check",
                &http::HeaderMap::new(),
                None
            )
            .unwrap(),
            None
        );
        assert_eq!(
            auth.check(
                "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                &http::HeaderMap::new(),
                None
            )
            .unwrap_err()
            .code(),
            tonic::Code::Unauthenticated
        );
    }

    #[test]
    fn admin_may_call_everything() {
        assert!(Role::Admin.allows(Role::Writer));
        assert!(Role::Admin.allows(Role::Reader));
        assert!(!Role::Writer.allows(Role::Reader));
        assert!(!Role::Reader.allows(Role::Writer));
    }

    #[test]
    fn bad_lines_are_refused_without_echoing_them() {
        let error = parse_tokens(Path::new("t"), "writer bot deadbeef\n")
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("line 1"), "{error}");
        assert!(!error.contains("deadbeef"), "{error}");
        assert!(parse_tokens(Path::new("t"), "boss bot 00\n").is_err());
        assert_eq!(
            parse_sha256(&token_hash("x")).unwrap().to_vec(),
            Sha256::digest(b"x").to_vec()
        );
    }
}
