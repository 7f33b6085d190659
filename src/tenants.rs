//! The `--tenants` file: one `[tenants.KEY]` table per customer tenant, read and resolved into
//! [`Tenant`]s before anything is sent, so that a bad entry is exit 2 and not a half-done run.
//!
//! ```toml
//! [tenants.contoso]
//! tenant_id = "contoso.onmicrosoft.com"
//! client_id = "00000000-0000-0000-0000-000000000000"
//! client_secret_env = "CONTOSO_SECRET"  # or client_secret_file, certificate, access_token_file
//! cloud = "global"                      # optional, like graph_url, authority_url and rate
//! ```
//!
//! Secrets are never in the file: it names an environment variable or a file that holds them,
//! so the file can be reviewed, versioned and shown in an error without leaking anything.
//! Relative paths are taken from the file's own folder, so the file means the same whatever
//! directory the scheduler starts in. Tenants keep the file's order.

use std::cell::RefCell;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use toml::{Spanned, Value};

use crate::config::{Cloud, Config, Credentials, RateSpec, Tenant, check_transport};

/// Why a tenants file was refused. Each message names the file, and the tenant and the key
/// when the problem has one; none holds a secret (not even one pasted into the file by mistake:
/// the offending line is never quoted).
#[derive(Debug, thiserror::Error)]
pub enum TenantsError {
    #[error("cannot read the tenants file {}: {reason}", path.display())]
    Read { path: PathBuf, reason: String },
    /// Not TOML, a key the format does not know, or a section of the wrong shape.
    #[error("tenants file {}{}: {message}", path.display(), Where(tenant.as_deref(), *at))]
    Format {
        path: PathBuf,
        tenant: Option<String>,
        at: Option<Position>,
        message: String,
    },
    #[error("tenants file {}: no tenant: add a [tenants.NAME] table for each tenant", path.display())]
    NoTenants { path: PathBuf },
    /// A tenant's key is missing, wrong, or does not go with another.
    #[error("tenants file {}: {} {key}{}: {reason}", path.display(), Table(tenant), Pos(*at))]
    Invalid {
        path: PathBuf,
        tenant: String,
        key: &'static str,
        at: Option<Position>,
        reason: String,
    },
    #[error(
        "tenants file {}: {} and {} differ only by case: tenant names are compared \
         case-insensitively, as the input's tenant column is",
        path.display(), Table(first), Table(second)
    )]
    DuplicateKey {
        path: PathBuf,
        first: String,
        second: String,
    },
    /// Two keys sign in to one tenant as one app: each would get its own throttle budget
    /// against the one Graph budget they share, and a device under both keys would be two rows.
    #[error(
        "tenants file {}: {} and {} are the same tenant ({tenant_id}) and app: Graph throttles \
         them as one, so they would overrun its budget and a device under both would be written \
         twice; keep one table",
        path.display(), Table(first), Table(second)
    )]
    SameTenant {
        path: PathBuf,
        first: String,
        second: String,
        tenant_id: String,
    },
}

/// Where in the file, 1-based, for a person opening it in an editor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

struct Pos(Option<Position>);

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(p) => write!(f, " (line {}, column {})", p.line, p.column),
            None => Ok(()),
        }
    }
}

/// `: [tenants.KEY] line L, column C`, each part when known.
struct Where<'a>(Option<&'a str>, Option<Position>);

impl fmt::Display for Where<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0, self.1) {
            (Some(key), Some(p)) => {
                write!(f, ": {} line {}, column {}", Table(key), p.line, p.column)
            }
            (Some(key), None) => write!(f, ": {}", Table(key)),
            (None, Some(p)) => write!(f, ": line {}, column {}", p.line, p.column),
            (None, None) => Ok(()),
        }
    }
}

/// `[tenants.KEY]` as the file would spell it: quoted when the key is not a bare TOML key.
struct Table<'a>(&'a str);

impl fmt::Display for Table<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bare = !self.0.is_empty()
            && self
                .0
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if bare {
            write!(f, "[tenants.{}]", self.0)
        } else {
            write!(f, "[tenants.\"{}\"]", self.0.escape_debug())
        }
    }
}

/// Whether a row's tenant name and a file's key mean the same tenant: case-insensitively and
/// ignoring surrounding spaces, the one rule for the file's duplicates and for routing rows.
pub fn same_key(a: &str, b: &str) -> bool {
    crate::input::same_tenant(a, b)
}

/// The tenant a row's `tenant` cell names, by [`same_key`].
pub fn find<'a>(tenants: &'a [Tenant], name: &str) -> Option<&'a Tenant> {
    tenants.iter().find(|t| same_key(&t.key, name))
}

/// Read and resolve the tenants file at `path`, secrets from the process environment.
/// Keys a tenant leaves out fall back to `base` (the command line's cloud, URLs and rate).
pub fn load(path: &Path, base: &Config) -> Result<Vec<Tenant>, TenantsError> {
    load_with(path, base, &|name| std::env::var(name).ok())
}

/// [`load`], with `env` answering for environment variables: tests need no process
/// environment, and `--emulator` can stand a placeholder in for a secret that is not set.
pub fn load_with(
    path: &Path,
    base: &Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<Tenant>, TenantsError> {
    let text = std::fs::read_to_string(path).map_err(|e| TenantsError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let raw = parse(path, &text)?;
    if raw.is_empty() {
        return Err(TenantsError::NoTenants {
            path: path.to_path_buf(),
        });
    }
    let ctx = Resolver {
        path,
        dir: path.parent().unwrap_or(Path::new("")),
        text: &text,
        base,
        env,
    };
    let mut tenants: Vec<Tenant> = Vec::with_capacity(raw.len());
    for (key, entry) in raw {
        if let Some(first) = tenants.iter().find(|t| same_key(&t.key, &key)) {
            return Err(TenantsError::DuplicateKey {
                path: path.to_path_buf(),
                first: first.key.clone(),
                second: key,
            });
        }
        let tenant = ctx.resolve(key, entry)?;
        if let Some(first) = tenants.iter().find(|t| same_tenant_and_app(t, &tenant)) {
            return Err(TenantsError::SameTenant {
                path: path.to_path_buf(),
                first: first.key.clone(),
                second: tenant.key,
                tenant_id: first
                    .credentials
                    .tenant_id()
                    .unwrap_or_default()
                    .to_string(),
            });
        }
        tenants.push(tenant);
    }
    Ok(tenants)
}

/// Whether two tenants sign in to the same tenant as the same app at the same authority (tenant
/// and app ids compared ignoring case, as Entra ID does).
fn same_tenant_and_app(a: &Tenant, b: &Tenant) -> bool {
    let same = |x: Option<&str>, y: Option<&str>| match (x, y) {
        (Some(x), Some(y)) => x.trim().eq_ignore_ascii_case(y.trim()),
        _ => false,
    };
    same(a.credentials.tenant_id(), b.credentials.tenant_id())
        && same(a.credentials.client_id(), b.credentials.client_id())
        && a.authority_url.trim_end_matches('/') == b.authority_url.trim_end_matches('/')
}

/// One `[tenants.KEY]` table as written. Values stay untyped TOML with their place in the file,
/// so that a wrong type is reported with its key and line, and never echoes a string value.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenant {
    tenant_id: Option<Spanned<Value>>,
    client_id: Option<Spanned<Value>>,
    client_secret_env: Option<Spanned<Value>>,
    client_secret_file: Option<Spanned<Value>>,
    certificate: Option<Spanned<Value>>,
    access_token_file: Option<Spanned<Value>>,
    cloud: Option<Spanned<Value>>,
    graph_url: Option<Spanned<Value>>,
    authority_url: Option<Spanned<Value>>,
    rate: Option<Spanned<Value>>,
}

/// The file's tenants in file order, or the error with the tenant it arose in.
fn parse(path: &Path, text: &str) -> Result<Vec<(String, RawTenant)>, TenantsError> {
    let current = RefCell::new(None);
    let result =
        toml::Deserializer::parse(text).and_then(|d| FileSeed { current: &current }.deserialize(d));
    result.map_err(|e| TenantsError::Format {
        path: path.to_path_buf(),
        tenant: current.take(),
        at: e.span().and_then(|s| position(text, s.start)),
        message: e.message().to_string(),
    })
}

/// The top level: `tenants` and nothing else. A seed, to carry `current`: the tenant being
/// read when an error stops the parse (serde's errors do not say which).
struct FileSeed<'a> {
    current: &'a RefCell<Option<String>>,
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum FileKey {
    Tenants,
}

impl<'de> DeserializeSeed<'de> for FileSeed<'_> {
    type Value = Vec<(String, RawTenant)>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FileSeed<'_> {
    type Value = Vec<(String, RawTenant)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[tenants.NAME] tables")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut tenants = Vec::new();
        // An unknown key fails in `next_key`, where toml knows its place in the file.
        while let Some(FileKey::Tenants) = map.next_key()? {
            tenants = map.next_value_seed(TenantsSeed {
                current: self.current,
            })?;
        }
        Ok(tenants)
    }
}

/// `[tenants]`: one table per tenant, in file order.
struct TenantsSeed<'a> {
    current: &'a RefCell<Option<String>>,
}

impl<'de> DeserializeSeed<'de> for TenantsSeed<'_> {
    type Value = Vec<(String, RawTenant)>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TenantsSeed<'_> {
    type Value = Vec<(String, RawTenant)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a table of tenants ([tenants.NAME])")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut tenants = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            self.current.replace(Some(key.clone()));
            let entry = map.next_value::<TenantTable>()?;
            self.current.replace(None);
            tenants.push((key, entry.0));
        }
        Ok(tenants)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Err(not_a_table(&self))
    }
}

/// A tenant's table. Anything else is refused without echoing it: a string here could be a
/// secret pasted as `name = "…"`.
struct TenantTable(RawTenant);

impl<'de> Deserialize<'de> for TenantTable {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TenantVisitor)
    }
}

struct TenantVisitor;

impl<'de> Visitor<'de> for TenantVisitor {
    type Value = TenantTable;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a table of the tenant's keys ([tenants.NAME] then tenant_id = …)")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        RawTenant::deserialize(de::value::MapAccessDeserializer::new(map)).map(TenantTable)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Err(not_a_table(&self))
    }
}

/// "expected …, found a string", without the string.
fn not_a_table<E: de::Error>(expected: &dyn de::Expected) -> E {
    E::custom(format_args!("expected {expected}, found a string"))
}

/// 1-based line and column (in characters) of byte `offset` of `text`.
fn position(text: &str, offset: usize) -> Option<Position> {
    let before = text.get(..offset)?;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    Some(Position {
        line: before.matches('\n').count() + 1,
        column: before[line_start..].chars().count() + 1,
    })
}

/// What resolving a tenant needs from around it.
struct Resolver<'a> {
    path: &'a Path,
    /// The tenants file's folder: relative paths in the file are taken from here.
    dir: &'a Path,
    text: &'a str,
    base: &'a Config,
    env: &'a dyn Fn(&str) -> Option<String>,
}

/// The credential keys, exactly one of which a tenant sets.
const CREDENTIAL_KEYS: &str =
    "client_secret_env, client_secret_file, certificate or access_token_file";

impl Resolver<'_> {
    fn resolve(&self, key: String, raw: RawTenant) -> Result<Tenant, TenantsError> {
        if key.trim().is_empty() || key.trim() != key {
            let reason = if key.trim().is_empty() {
                "the tenant name is empty"
            } else {
                "the tenant name has spaces around it"
            };
            return Err(self.invalid(&key, "name", None, reason.into()));
        }
        let t = TenantCtx { r: self, key: &key };
        let cloud = match t.text("cloud", &raw.cloud)? {
            Some((s, at)) => Some(
                <Cloud as clap::ValueEnum>::from_str(s.trim(), true).map_err(|_| {
                    t.invalid(
                        "cloud",
                        at,
                        format!("unknown cloud {s:?} (use global, usgov, usgov-dod or china)"),
                    )
                })?,
            ),
            None => None,
        };
        let rate = match t.text("rate", &raw.rate)? {
            Some((s, at)) => s
                .parse::<RateSpec>()
                .map_err(|e| t.invalid("rate", at, e.to_string()))?,
            None => self.base.rate,
        };
        let graph_url = match t.url("graph_url", &raw.graph_url)? {
            Some(url) => url,
            None => cloud.map_or_else(|| self.base.graph_url.clone(), Cloud::graph_url),
        };
        let authority_url = match t.url("authority_url", &raw.authority_url)? {
            Some(url) => url,
            None => cloud.map_or_else(
                || self.base.authority_url.clone(),
                |c| c.authority().to_string(),
            ),
        };
        let credentials = t.credentials(&raw)?;
        Ok(Tenant {
            key,
            credentials,
            cloud: cloud.unwrap_or(self.base.cloud),
            graph_url: graph_url.trim_end_matches('/').to_string(),
            authority_url: authority_url.trim_end_matches('/').to_string(),
            rate,
        })
    }

    fn invalid(
        &self,
        tenant: &str,
        key: &'static str,
        at: Option<Position>,
        reason: String,
    ) -> TenantsError {
        TenantsError::Invalid {
            path: self.path.to_path_buf(),
            tenant: tenant.to_string(),
            key,
            at,
            reason,
        }
    }
}

/// One tenant being resolved: errors name it.
struct TenantCtx<'a> {
    r: &'a Resolver<'a>,
    key: &'a str,
}

/// A tenant's ids, when set and not blank.
struct Ids {
    tenant_id: Option<String>,
    client_id: Option<String>,
}

/// The credential a tenant names, before it is read.
enum Source {
    SecretEnv(String),
    SecretFile(PathBuf),
    Certificate(PathBuf),
    TokenFile(PathBuf),
}

impl TenantCtx<'_> {
    fn invalid(&self, key: &'static str, at: Option<Position>, reason: String) -> TenantsError {
        self.r.invalid(self.key, key, at, reason)
    }

    /// A string value, with its place; a value of another type is an error naming the key.
    fn text(
        &self,
        key: &'static str,
        value: &Option<Spanned<Value>>,
    ) -> Result<Option<(String, Option<Position>)>, TenantsError> {
        let Some(value) = value else { return Ok(None) };
        let at = position(self.r.text, value.span().start);
        match value.get_ref() {
            Value::String(s) => Ok(Some((s.clone(), at))),
            other => Err(self.invalid(
                key,
                at,
                format!("expected a string, found {}", other.type_str()),
            )),
        }
    }

    /// A non-empty string, trimmed; empty counts as absent.
    fn word(
        &self,
        key: &'static str,
        value: &Option<Spanned<Value>>,
    ) -> Result<Option<(String, Option<Position>)>, TenantsError> {
        Ok(self
            .text(key, value)?
            .map(|(s, at)| (s.trim().to_string(), at))
            .filter(|(s, _)| !s.is_empty()))
    }

    /// A Graph or authority URL: https, or plain http to loopback only, as for the flags.
    fn url(
        &self,
        key: &'static str,
        value: &Option<Spanned<Value>>,
    ) -> Result<Option<String>, TenantsError> {
        let Some((url, at)) = self.text(key, value)? else {
            return Ok(None);
        };
        let url = url.trim().trim_end_matches('/').to_string();
        check_transport(&url, key).map_err(|e| self.invalid(key, at, e))?;
        Ok(Some(url))
    }

    /// A path from the file, taken from the file's folder when relative.
    fn path(
        &self,
        key: &'static str,
        value: &Option<Spanned<Value>>,
    ) -> Result<Option<PathBuf>, TenantsError> {
        Ok(self
            .word(key, value)?
            .map(|(p, _)| self.r.dir.join(Path::new(&p))))
    }

    /// Exactly one credential, read now so that a missing secret stops the run before it
    /// sends anything.
    fn credentials(&self, raw: &RawTenant) -> Result<Credentials, TenantsError> {
        // Read first, so that a wrong type is reported whatever else is missing.
        let ids = Ids {
            tenant_id: self.word("tenant_id", &raw.tenant_id)?.map(|(s, _)| s),
            client_id: self.word("client_id", &raw.client_id)?.map(|(s, _)| s),
        };
        let mut given: Vec<(&'static str, Source)> = Vec::new();
        if let Some((name, at)) = self.word("client_secret_env", &raw.client_secret_env)? {
            if name.contains(['=', '\0']) {
                return Err(self.invalid(
                    "client_secret_env",
                    at,
                    format!("{name:?} is not an environment variable name"),
                ));
            }
            given.push(("client_secret_env", Source::SecretEnv(name)));
        }
        if let Some(p) = self.path("client_secret_file", &raw.client_secret_file)? {
            given.push(("client_secret_file", Source::SecretFile(p)));
        }
        if let Some(p) = self.path("certificate", &raw.certificate)? {
            given.push(("certificate", Source::Certificate(p)));
        }
        if let Some(p) = self.path("access_token_file", &raw.access_token_file)? {
            given.push(("access_token_file", Source::TokenFile(p)));
        }
        let (key, source) = match given.len() {
            0 => {
                return Err(self.invalid(
                    "credential",
                    None,
                    format!("none set: set one of {CREDENTIAL_KEYS}"),
                ));
            }
            1 => given.remove(0),
            _ => {
                let keys: Vec<&str> = given.iter().map(|(k, _)| *k).collect();
                return Err(self.invalid(
                    given[1].0,
                    None,
                    format!(
                        "more than one credential is set ({}): keep only one",
                        keys.join(", ")
                    ),
                ));
            }
        };
        let secret = match source {
            Source::TokenFile(p) => return Ok(Credentials::StaticToken(self.read(key, &p)?)),
            Source::SecretEnv(name) => (self.r.env)(&name)
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| {
                    self.invalid(
                        key,
                        None,
                        format!("the environment variable {name} is not set or is empty"),
                    )
                })?,
            Source::SecretFile(p) => self.read(key, &p)?,
            Source::Certificate(p) => {
                let (tenant_id, client_id) = self.ids(key, ids)?;
                self.check_readable(key, &p)?;
                return Ok(Credentials::Certificate {
                    tenant_id,
                    client_id,
                    pem_path: p,
                });
            }
        };
        let (tenant_id, client_id) = self.ids(key, ids)?;
        Ok(Credentials::ClientSecret {
            tenant_id,
            client_id,
            secret,
        })
    }

    /// `tenant_id` and `client_id`, which a secret or a certificate needs (a token does not).
    fn ids(&self, with: &str, ids: Ids) -> Result<(String, String), TenantsError> {
        let missing = |key| self.invalid(key, None, format!("missing: required with {with}"));
        Ok((
            ids.tenant_id.ok_or_else(|| missing("tenant_id"))?,
            ids.client_id.ok_or_else(|| missing("client_id"))?,
        ))
    }

    /// A secret or token file, trimmed. The error names the file, never what it holds.
    fn read(&self, key: &'static str, path: &Path) -> Result<String, TenantsError> {
        let text = crate::auth::file::read_secret(path)
            .map_err(|e| self.invalid(key, None, e.describe(key, path)))?;
        if text.is_empty() {
            return Err(self.invalid(key, None, format!("{} is empty", path.display())));
        }
        Ok(text)
    }

    /// The certificate is read when the run starts; a path that is not a readable file is
    /// caught here already, with the other mistakes in the file.
    fn check_readable(&self, key: &'static str, path: &Path) -> Result<(), TenantsError> {
        crate::auth::file::read_capped(path, crate::auth::file::PEM_CAP)
            .map(drop)
            .map_err(|e| self.invalid(key, None, e.describe(key, path)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const ID: &str = "00000000-0000-0000-0000-000000000000";

    /// A tenants file in its own folder, with the environment the test gives.
    struct Case {
        dir: tempfile::TempDir,
        path: PathBuf,
    }

    fn case(text: &str) -> Case {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("tenants.toml");
        std::fs::write(&path, text).expect("write tenants file");
        Case { dir, path }
    }

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    fn load_text(text: &str, env: &[(&str, &str)]) -> Result<Vec<Tenant>, TenantsError> {
        let c = case(text);
        load_with(&c.path, &Config::new("in.csv", "out.csv"), &env_of(env))
    }

    /// The error's message, checked to name the file and never to hold `hunter2`.
    fn error(text: &str, env: &[(&str, &str)]) -> String {
        let e = match load_text(text, env) {
            Ok(t) => panic!("accepted: {t:?}"),
            Err(e) => e,
        };
        let message = e.to_string();
        assert!(
            message.contains("tenants.toml"),
            "file not named: {message}"
        );
        assert!(!message.contains("hunter2"), "secret in: {message}");
        assert!(!format!("{e:?}").contains("hunter2"), "secret in: {e:?}");
        message
    }

    fn contains_all(message: &str, parts: &[&str]) {
        for part in parts {
            assert!(message.contains(part), "{part:?} missing from: {message}");
        }
    }

    fn secret_tenant(name: &str, extra: &str) -> String {
        format!(
            "[tenants.{name}]\ntenant_id = \"{name}.onmicrosoft.com\"\nclient_id = \"{ID}\"\n\
             client_secret_env = \"SECRET_{name}\"\n{extra}"
        )
    }

    #[test]
    fn a_good_file_with_every_credential_kind_in_file_order() {
        let c = case(&format!(
            "{}\n\
             [tenants.fabrikam]\ntenant_id = \"f\"\nclient_id = \"{ID}\"\n\
             client_secret_file = \"secrets/fabrikam\"\ncloud = \"usgov\"\n\n\
             [tenants.adatum]\ntenant_id = \"a\"\nclient_id = \"{ID}\"\n\
             certificate = \"adatum.pem\"\ngraph_url = \"http://127.0.0.1:8080/beta/\"\n\
             authority_url = \"https://login.example.com/\"\n\n\
             [tenants.Tailspin]\naccess_token_file = \"token.txt\"\ncloud = \"USGOV-DOD\"\n",
            secret_tenant("contoso", "rate = \"50/10s\"\n")
        ));
        std::fs::create_dir(c.dir.path().join("secrets")).expect("mkdir");
        std::fs::write(c.dir.path().join("secrets/fabrikam"), "  hunter2-file\n").expect("w");
        std::fs::write(c.dir.path().join("adatum.pem"), "-----BEGIN-----").expect("w");
        std::fs::write(c.dir.path().join("token.txt"), "eyJ.hunter2.sig\n").expect("w");
        let mut base = Config::new("in.csv", "out.csv");
        base.graph_url = "https://proxy.example.com/beta".into();
        base.rate = RateSpec::new(7, Duration::from_secs(3));
        let tenants = load_with(
            &c.path,
            &base,
            &env_of(&[("SECRET_contoso", "hunter2-env")]),
        )
        .expect("loads");
        let keys: Vec<&str> = tenants.iter().map(|t| t.key.as_str()).collect();
        assert_eq!(keys, ["contoso", "fabrikam", "adatum", "Tailspin"]);

        let [contoso, fabrikam, adatum, tailspin] = &tenants[..] else {
            panic!("four tenants")
        };
        assert!(
            matches!(&contoso.credentials, Credentials::ClientSecret { tenant_id, client_id, secret }
            if tenant_id == "contoso.onmicrosoft.com" && client_id == ID && secret == "hunter2-env")
        );
        // Left out: the command line's cloud, URLs; its own rate.
        assert_eq!(contoso.cloud, Cloud::Global);
        assert_eq!(contoso.graph_url, "https://proxy.example.com/beta");
        assert_eq!(contoso.authority_url, base.authority_url);
        assert_eq!(contoso.rate, RateSpec::new(50, Duration::from_secs(10)));

        assert!(
            matches!(&fabrikam.credentials, Credentials::ClientSecret { secret, .. }
            if secret == "hunter2-file")
        );
        // A cloud without URLs takes that cloud's, not the command line's.
        assert_eq!(fabrikam.cloud, Cloud::Usgov);
        assert_eq!(fabrikam.graph_url, Cloud::Usgov.graph_url());
        assert_eq!(fabrikam.authority_url, Cloud::Usgov.authority());
        assert_eq!(fabrikam.rate, base.rate);

        assert!(
            matches!(&adatum.credentials, Credentials::Certificate { pem_path, .. }
            if *pem_path == c.dir.path().join("adatum.pem"))
        );
        assert_eq!(adatum.graph_url, "http://127.0.0.1:8080/beta");
        assert_eq!(adatum.authority_url, "https://login.example.com");
        assert_eq!(adatum.cloud, Cloud::Global);

        assert!(
            matches!(&tailspin.credentials, Credentials::StaticToken(t) if t == "eyJ.hunter2.sig")
        );
        assert_eq!(tailspin.cloud, Cloud::UsgovDod);
        assert_eq!(tailspin.graph_url, Cloud::UsgovDod.graph_url());

        assert!(!format!("{tenants:?}").contains("hunter2"));
        assert!(find(&tenants, " tailSPIN ").is_some_and(|t| t.key == "Tailspin"));
        assert!(find(&tenants, "northwind").is_none());
    }

    #[test]
    fn absolute_paths_are_kept() {
        let dir = tempfile::tempdir().expect("temp dir");
        let token = dir.path().join("token");
        std::fs::write(&token, "tok").expect("w");
        let text = format!(
            "[tenants.t]\naccess_token_file = {:?}\n",
            token.display().to_string()
        );
        let tenants = load_text(&text, &[]).expect("loads");
        assert!(matches!(&tenants[0].credentials, Credentials::StaticToken(t) if t == "tok"));
    }

    #[test]
    fn an_unreadable_file_is_named() {
        let e = load_with(
            Path::new("no/such/tenants.toml"),
            &Config::new("in.csv", "out.csv"),
            &env_of(&[]),
        )
        .expect_err("missing file");
        assert!(matches!(e, TenantsError::Read { .. }));
        contains_all(
            &e.to_string(),
            &["cannot read the tenants file", "no/such/tenants.toml"],
        );
    }

    #[test]
    fn malformed_toml_says_where() {
        let m = error("[tenants.contoso]\ntenant_id = \"x\nclient_id = 1\n", &[]);
        contains_all(&m, &["tenants.toml: line 2, column", "expected"]);
    }

    #[test]
    fn an_unknown_key_names_tenant_key_and_line_and_not_its_value() {
        let text = secret_tenant("contoso", "client_secret = \"hunter2\"\n");
        let m = error(&text, &[("SECRET_contoso", "x")]);
        contains_all(
            &m,
            &["tenants.toml: [tenants.contoso] line 5, column 1: unknown field `client_secret`"],
        );
        let m = error("[tenant.contoso]\ntenant_id = \"x\"\n", &[]);
        contains_all(&m, &["`tenant`", "line 1"]);
    }

    #[test]
    fn a_value_of_the_wrong_shape_is_not_echoed() {
        let m = error("[tenants]\ncontoso = \"hunter2\"\n", &[]);
        contains_all(&m, &["[tenants.contoso]", "found a string", "line 2"]);
        let m = error("tenants = \"hunter2\"\n", &[]);
        contains_all(&m, &["found a string", "line 1"]);
        let m = error("[tenants.contoso]\ntenant_id = 5\nclient_id = \"c\"\n", &[]);
        contains_all(
            &m,
            &[
                "[tenants.contoso] tenant_id (line 2, column 13)",
                "expected a string, found integer",
            ],
        );
    }

    #[test]
    fn a_file_without_tenants_is_refused() {
        for text in ["", "# nothing\n", "[tenants]\n"] {
            let m = error(text, &[]);
            contains_all(&m, &["no tenant", "[tenants.NAME]"]);
        }
    }

    #[test]
    fn two_keys_of_one_tenant_and_app_are_refused_naming_both() {
        let same = format!(
            "{}[tenants.second]\ntenant_id = \"CONTOSO.onmicrosoft.com\"\nclient_id = \"{ID}\"\n\
             client_secret_env = \"SECRET_second\"\n",
            secret_tenant("contoso", "")
        );
        // Secrets no temporary path can spell by chance (a temp dir `.tmpeAjbs1` holds "s1").
        let env = [
            ("SECRET_contoso", "first-secret-value"),
            ("SECRET_second", "second-secret-value"),
        ];
        let m = error(&same, &env);
        contains_all(
            &m,
            &[
                "[tenants.contoso]",
                "[tenants.second]",
                "contoso.onmicrosoft.com",
                "same tenant",
            ],
        );
        assert!(!m.contains("secret-value"), "{m}");
        // The same tenant as another app is another budget: accepted.
        let other_app = same.replacen(
            &format!("client_id = \"{ID}\"\nclient_secret_env = \"SECRET_second\""),
            "client_id = \"11111111-2222-4333-8444-555555555555\"\nclient_secret_env = \"SECRET_second\"",
            1,
        );
        assert_eq!(load_text(&other_app, &env).map(|t| t.len()).ok(), Some(2));
    }

    #[test]
    fn exactly_one_credential() {
        let m = error(
            "[tenants.contoso]\ntenant_id = \"t\"\nclient_id = \"c\"\n",
            &[],
        );
        contains_all(
            &m,
            &[
                "[tenants.contoso] credential",
                "client_secret_env",
                "access_token_file",
            ],
        );
        let text = secret_tenant("contoso", "access_token_file = \"t\"\n");
        let m = error(&text, &[("SECRET_contoso", "hunter2")]);
        contains_all(
            &m,
            &[
                "[tenants.contoso] access_token_file",
                "client_secret_env, access_token_file",
                "only one",
            ],
        );
    }

    #[test]
    fn a_secret_or_certificate_needs_both_ids() {
        let m = error(
            "[tenants.contoso]\nclient_id = \"c\"\nclient_secret_env = \"S\"\n",
            &[("S", "hunter2")],
        );
        contains_all(
            &m,
            &[
                "[tenants.contoso] tenant_id",
                "required with client_secret_env",
            ],
        );
        let c = case("[tenants.contoso]\ntenant_id = \"t\"\ncertificate = \"c.pem\"\n");
        std::fs::write(c.dir.path().join("c.pem"), "pem").expect("w");
        let e = load_with(&c.path, &Config::new("i", "o"), &env_of(&[])).expect_err("no client_id");
        contains_all(
            &e.to_string(),
            &["[tenants.contoso] client_id", "required with certificate"],
        );
        // A blank id is a missing one.
        let m = error(
            "[tenants.contoso]\ntenant_id = \" \"\nclient_id = \"c\"\nclient_secret_env = \"S\"\n",
            &[("S", "hunter2")],
        );
        contains_all(&m, &["[tenants.contoso] tenant_id", "missing"]);
    }

    #[test]
    fn bad_rate_cloud_and_urls_name_the_key() {
        let env = [("SECRET_contoso", "hunter2")];
        let m = error(&secret_tenant("contoso", "rate = \"100\"\n"), &env);
        contains_all(
            &m,
            &["[tenants.contoso] rate (line 5, column 8)", "invalid rate"],
        );
        let m = error(&secret_tenant("contoso", "cloud = \"mars\"\n"), &env);
        contains_all(&m, &["[tenants.contoso] cloud", "\"mars\"", "usgov-dod"]);
        let m = error(
            &secret_tenant("contoso", "graph_url = \"http://graph.example.com/beta\"\n"),
            &env,
        );
        contains_all(&m, &["[tenants.contoso] graph_url", "plain http"]);
        let m = error(
            &secret_tenant("contoso", "authority_url = \"ftp://login\"\n"),
            &env,
        );
        contains_all(
            &m,
            &["[tenants.contoso] authority_url", "unsupported scheme"],
        );
        let m = error(
            &secret_tenant("contoso", "graph_url = \"not a url\"\n"),
            &env,
        );
        contains_all(&m, &["[tenants.contoso] graph_url", "not a URL"]);
    }

    #[test]
    fn a_tenant_name_must_be_something() {
        let m = error("[tenants.\"\"]\naccess_token_file = \"t\"\n", &[]);
        contains_all(&m, &["[tenants.\"\"] name", "empty"]);
        let m = error("[tenants.\" a \"]\naccess_token_file = \"t\"\n", &[]);
        contains_all(&m, &["[tenants.\" a \"] name", "spaces"]);
    }

    #[test]
    fn names_differing_only_by_case_are_one_tenant_twice() {
        let text = format!(
            "{}\n{}",
            secret_tenant("contoso", ""),
            secret_tenant("Contoso", "")
        );
        let m = error(
            &text,
            &[("SECRET_contoso", "hunter2"), ("SECRET_Contoso", "hunter2")],
        );
        contains_all(
            &m,
            &["[tenants.contoso] and [tenants.Contoso] differ only by case"],
        );
    }

    #[test]
    fn a_missing_or_empty_secret_variable_names_it() {
        for env in [&[][..], &[("SECRET_contoso", "  ")][..]] {
            let m = error(&secret_tenant("contoso", ""), env);
            contains_all(
                &m,
                &[
                    "[tenants.contoso] client_secret_env",
                    "SECRET_contoso",
                    "not set or is empty",
                ],
            );
        }
        let m = error(
            "[tenants.contoso]\ntenant_id = \"t\"\nclient_id = \"c\"\nclient_secret_env = \"A=B\"\n",
            &[],
        );
        contains_all(
            &m,
            &[
                "client_secret_env (line 4",
                "not an environment variable name",
            ],
        );
    }

    #[test]
    fn secret_token_and_certificate_files_must_be_readable() {
        let ids = "tenant_id = \"t\"\nclient_id = \"c\"\n";
        let m = error(
            &format!("[tenants.c]\n{ids}client_secret_file = \"nope\"\n"),
            &[],
        );
        contains_all(
            &m,
            &[
                "[tenants.c] client_secret_file",
                "cannot read",
                "no such file",
            ],
        );
        let m = error("[tenants.c]\naccess_token_file = \"nope\"\n", &[]);
        contains_all(&m, &["[tenants.c] access_token_file", "cannot read"]);
        let m = error(
            &format!("[tenants.c]\n{ids}certificate = \"nope.pem\"\n"),
            &[],
        );
        contains_all(&m, &["[tenants.c] certificate", "no such file"]);
        assert!(
            !m.contains("nope.pem"),
            "a path naming nothing is echoed: {m}"
        );

        let c = case(&format!(
            "[tenants.c]\n{ids}client_secret_file = \"empty\"\n"
        ));
        std::fs::write(c.dir.path().join("empty"), " \n").expect("w");
        let e = load_with(&c.path, &Config::new("i", "o"), &env_of(&[])).expect_err("empty");
        contains_all(
            &e.to_string(),
            &["[tenants.c] client_secret_file", "is empty"],
        );

        let c = case(&format!("[tenants.c]\n{ids}certificate = \"certs\"\n"));
        std::fs::create_dir(c.dir.path().join("certs")).expect("mkdir");
        let e = load_with(&c.path, &Config::new("i", "o"), &env_of(&[])).expect_err("a folder");
        contains_all(
            &e.to_string(),
            &["[tenants.c] certificate", "not a regular file"],
        );
    }

    #[test]
    fn positions_count_lines_and_characters() {
        assert_eq!(
            position("ab\ncé d", 7),
            Some(Position { line: 2, column: 4 })
        );
        assert_eq!(position("x", 0), Some(Position { line: 1, column: 1 }));
        assert_eq!(position("x", 9), None);
    }
}
