//! The schema registry client: writer schemas by id, and registration of output schemas.
//!
//! Speaks the Confluent-compatible REST API through `schema_registry_converter` (its async
//! `AvroDecoder` caches schemas by id and shares in-flight lookups; `post_schema` and
//! `is_compatible_schema` register and check). Any registry with that API works: Confluent
//! Schema Registry, Karapace, or Apicurio Registry under `/apis/ccompat/v7` (what
//! `scripts/registry.sh` runs for the tests).
//!
//! The registry's answers are classified once, here (`RegistryError::is_transient`):
//!
//! - unreachable, timed out, or a 5xx: **transient**; the replica driver retries with backoff
//!   and holds the batch back from the core. Never a dead letter.
//! - 404 for a schema id, or a schema that does not parse: **final** for that id; the events
//!   carrying it are dead-lettered with reason `schema`, saying only the id
//!   ([`RegistryError::on_the_log`]; the registry's reply goes to the dead letter's advisory
//!   detail). Register a schema before producing with it: a replica that already saw a 404
//!   keeps it, so an id registered later would make replicas disagree.
//! - any other refusal (401/403: unauthenticated or forbidden, a bad URL, a malformed
//!   request): the host's fault, never the input's. The lookup **waits** like an unreachable
//!   registry: the driver retries with backoff and logs why; never a dead letter.
//! - 409 on registration, still there when asked again: the new schema breaks the subject's
//!   compatibility setting.
//!
//! TLS and authentication come from the environment ([`RegistryAccess::from_env`]): a CA file
//! for an https registry, HTTP basic or bearer credentials, each from a variable or a file;
//! none of them is ever shown.
//!
//! Output schemas are registered under the subject `<transformer>-value` (the
//! TopicNameStrategy naming of a topic's value schemas, with the transformer's output
//! event-source key as the topic).

use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use apache_avro::Schema;
use schema_registry_converter::async_impl::avro::AvroDecoder;
use schema_registry_converter::async_impl::schema_registry::{is_compatible_schema, post_schema, SrSettings};
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{RawError, SchemaType, SuppliedSchema};

use crate::backoff::Backoff;
use competing_transformers::codec::{parse_schema, AvroOutput, SchemaCache, Unresolved};

/// The environment variable naming the registry's base URL (for Apicurio, ending in
/// `/apis/ccompat/v7`).
pub const SCHEMA_REGISTRY_URL_ENV: &str = "SCHEMA_REGISTRY_URL";
/// How long one registry request may take before it counts as unavailable.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// A PEM file of the CA(s) to trust for an https registry, besides the system's.
pub const SCHEMA_REGISTRY_CA_FILE_ENV: &str = "SCHEMA_REGISTRY_CA_FILE";
/// The user of HTTP basic authentication (with a password from the next two).
pub const SCHEMA_REGISTRY_USER_ENV: &str = "SCHEMA_REGISTRY_USER";
/// The basic-authentication password.
pub const SCHEMA_REGISTRY_PASSWORD_ENV: &str = "SCHEMA_REGISTRY_PASSWORD";
/// A file holding the basic-authentication password (wins over the variable).
pub const SCHEMA_REGISTRY_PASSWORD_FILE_ENV: &str = "SCHEMA_REGISTRY_PASSWORD_FILE";
/// A bearer token, for registries behind OAuth.
pub const SCHEMA_REGISTRY_TOKEN_ENV: &str = "SCHEMA_REGISTRY_TOKEN";
/// A file holding the bearer token (wins over the variable; re-read at each start).
pub const SCHEMA_REGISTRY_TOKEN_FILE_ENV: &str = "SCHEMA_REGISTRY_TOKEN_FILE";

/// Whom the client trusts and how it proves itself to the registry. `Debug` shows no secret.
#[derive(Clone, Default)]
pub struct RegistryAccess {
    /// PEM CA certificate(s) to trust besides the system's.
    pub ca_pem: Option<Vec<u8>>,
    /// HTTP basic authentication: user and password.
    pub basic: Option<(String, String)>,
    /// A bearer token.
    pub token: Option<String>,
}

impl std::fmt::Debug for RegistryAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAccess")
            .field("ca_pem", &self.ca_pem.as_ref().map(|_| "…"))
            .field("basic_user", &self.basic.as_ref().map(|(user, _)| user))
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

impl RegistryAccess {
    /// From the `SCHEMA_REGISTRY_*` variables (files win over values). An unreadable file
    /// is a refusal naming the variable, never its content.
    pub fn from_env(url: &str) -> Result<Self, RegistryError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let read = |name: &str| -> Result<Option<Vec<u8>>, RegistryError> {
            let Some(path) = var(name) else { return Ok(None) };
            std::fs::read(&path).map(Some).map_err(|error| RegistryError::Refused {
                url: without_credentials(url),
                status: None,
                error_code: None,
                message: format!("cannot read {path} named by {name} ({error})"),
                source: None,
            })
        };
        let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).trim().to_string();
        let password = read(SCHEMA_REGISTRY_PASSWORD_FILE_ENV)?.map(text).or_else(|| var(SCHEMA_REGISTRY_PASSWORD_ENV));
        let token = read(SCHEMA_REGISTRY_TOKEN_FILE_ENV)?.map(text).or_else(|| var(SCHEMA_REGISTRY_TOKEN_ENV));
        Ok(Self {
            ca_pem: read(SCHEMA_REGISTRY_CA_FILE_ENV)?,
            basic: var(SCHEMA_REGISTRY_USER_ENV).map(|user| (user, password.unwrap_or_default())),
            token,
        })
    }
}

/// The subject a transformer's output schema is registered under.
pub fn subject_for(transformer: &str) -> String {
    format!("{transformer}-value")
}

/// What went wrong asking the registry. Each is one sentence with the fix; the client's
/// [`SRCError`] stays the `source()`, boxed (downcast to `Box<SRCError>`).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// Unreachable, timed out or answering 5xx: retry later.
    #[error("the schema registry at {url} is unavailable ({message}); is it running and reachable? (`scripts/registry.sh start` runs one locally)")]
    Unavailable {
        /// The registry.
        url: String,
        /// What the client saw.
        message: String,
        /// The client's error (boxed: it is large, and this is the cold path).
        source: Box<SRCError>,
    },
    /// The registry has no schema with this id (404).
    #[error("schema id {id} is not in the schema registry at {url} ({message}); register the schema before producing with it")]
    UnknownSchema {
        /// The id asked for.
        id: u32,
        /// The registry.
        url: String,
        /// What the registry said.
        message: String,
        /// The client's error (boxed: it is large, and this is the cold path).
        source: Box<SRCError>,
    },
    /// The registry returned a schema that apache-avro cannot use.
    #[error("schema id {id} from the schema registry at {url} is not a usable Avro schema: {message}")]
    BadSchema {
        /// The id.
        id: u32,
        /// The registry.
        url: String,
        /// Why.
        message: String,
        /// The client's error (boxed: it is large, and this is the cold path).
        source: Box<SRCError>,
    },
    /// The schema breaks the compatibility setting of the subject (409).
    #[error("the schema breaks the compatibility setting (BACKWARD unless changed) of subject `{subject}` at the schema registry {url}: {reason}; make the change compatible (give an added field a default) or write under a new transformer name")]
    Incompatible {
        /// The subject.
        subject: String,
        /// The registry.
        url: String,
        /// The registry's explanation, when it gave one.
        reason: String,
        /// The client's error, when the registry answered with one (a compatibility check
        /// answers `false` instead).
        source: Option<Box<SRCError>>,
    },
    /// Any other refusal (a bad URL, unauthorized, a malformed request).
    #[error("the schema registry at {url} refused{}: {message}", refusal_hint(*status))]
    Refused {
        /// The registry.
        url: String,
        /// The HTTP status of its answer, when there was one.
        status: Option<u16>,
        /// The registry's own error code (`error_code`: 40101, 42201, ...), when it gave one.
        error_code: Option<u32>,
        /// What it said.
        message: String,
        /// The client's error; none for a URL refused before any request.
        source: Option<Box<SRCError>>,
    },
    /// A transformer's output schema is not valid Avro.
    #[error("the output schema of `{transformer}` does not parse: {source}; fix `Transform::output_schema`")]
    BadOutputSchema {
        /// The transformer.
        transformer: String,
        /// Why.
        source: Arc<apache_avro::Error>,
    },
}

impl RegistryError {
    /// What a dead letter says of this failure, when the failure is the input's (its schema id
    /// names no usable schema): a function of the schema id alone, never of the registry's
    /// address (which may carry credentials) or its reply, so replicas that reach the registry
    /// by different URLs write the same bytes. `None` for every other failure: the host's, which
    /// the input waits out and never becomes a dead letter.
    pub fn on_the_log(&self) -> Option<String> {
        match self {
            RegistryError::UnknownSchema { id, .. } => Some(format!(
                "schema id {id} is not in the schema registry; register the schema before producing with it"
            )),
            RegistryError::BadSchema { id, .. } => Some(format!("schema id {id} is not a usable Avro schema")),
            _ => None,
        }
    }

    /// What the registry said of a failure that is the input's, for the dead letter's advisory
    /// detail (outside its digest): the registry's reply, never its address.
    pub fn reply(&self) -> Option<String> {
        match self {
            RegistryError::UnknownSchema { message, .. } | RegistryError::BadSchema { message, .. } => {
                Some(message.clone())
            }
            _ => None,
        }
    }

    /// Whether asking again later may succeed: the driver retries these and never
    /// dead-letters because of them.
    pub fn is_transient(&self) -> bool {
        matches!(self, RegistryError::Unavailable { .. })
    }

    /// Whether the registry refused who asked (401 unauthenticated, 403 forbidden): the
    /// operator's to fix (credentials, permissions), never the input's fault.
    pub fn is_authorization(&self) -> bool {
        matches!(self, RegistryError::Refused { status: Some(401 | 403), .. })
    }

    /// The registry's own error code (Confluent's `error_code`: 40401 subject not found,
    /// 40403 schema not found, 409 conflict, 42201 invalid schema, ...), when it gave one.
    pub fn error_code(&self) -> Option<u32> {
        match self {
            RegistryError::Unavailable { source, .. }
            | RegistryError::UnknownSchema { source, .. }
            | RegistryError::BadSchema { source, .. } => registry_code(source),
            RegistryError::Incompatible { source, .. } | RegistryError::Refused { source, .. } => {
                source.as_deref().and_then(registry_code)
            }
            RegistryError::BadOutputSchema { .. } => None,
        }
    }
}

/// What a refusal with this HTTP status asks of the operator.
fn refusal_hint(status: Option<u16>) -> String {
    match status {
        Some(status @ (401 | 403)) => format!(
            " ({status}: check the credentials ({SCHEMA_REGISTRY_USER_ENV} with {SCHEMA_REGISTRY_PASSWORD_ENV} or {SCHEMA_REGISTRY_PASSWORD_FILE_ENV}, {SCHEMA_REGISTRY_TOKEN_ENV} or {SCHEMA_REGISTRY_TOKEN_FILE_ENV}, or a user in {SCHEMA_REGISTRY_URL_ENV}) and the registry's permissions; the inputs wait, none is dead-lettered)"
        ),
        Some(status) => format!(" ({status})"),
        None => String::new(),
    }
}

/// The registry's error answer, which the client keeps as its error's source.
fn answer_of(error: &SRCError) -> Option<&RawError> {
    error.source().and_then(|s| s.downcast_ref::<RawError>())
}

/// The registry's own error code, when its answer parsed and carried one (0 means neither).
fn registry_code(error: &SRCError) -> Option<u32> {
    answer_of(error).map(|answer| answer.error_code).filter(|code| *code != 0)
}

/// The HTTP status an error response carried, if it was one. The client keeps the status
/// only in its own message ("... failed with status 404 Not Found"); when that is missing,
/// the registry's code tells it (Confluent codes begin with the status: 40401 is a 404).
fn http_status(error: &SRCError) -> Option<u16> {
    let from_client = error.error.split_once("failed with status ").and_then(|(_, rest)| rest.get(..3)?.parse().ok());
    from_client.or_else(|| {
        let code = registry_code(error)?;
        let digits = code.checked_ilog10()? + 1;
        u16::try_from(code / 10u32.pow(digits.checked_sub(3)?)).ok()
    })
}

/// The registry's own message for an error response, else the client's.
fn message_of(error: &SRCError) -> String {
    if let Some(answer) = answer_of(error) {
        return answer.message.clone();
    }
    match &error.cause {
        Some(cause) => format!("{}: {cause}", error.error),
        None => error.error.clone(),
    }
}

/// A client of one Confluent-compatible schema registry.
pub struct SchemaRegistry {
    url: String,
    settings: SrSettings,
    decoder: AvroDecoder,
}

impl std::fmt::Debug for SchemaRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaRegistry").field("url", &self.url).finish()
    }
}

/// `url` with any `user:password@` replaced by `***@`: what errors and logs may show.
fn without_credentials(url: &str) -> String {
    let authority_start = url.find("://").map_or(0, |at| at + 3);
    let authority_end = url[authority_start..].find('/').map_or(url.len(), |at| authority_start + at);
    match url[authority_start..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..authority_start], &url[authority_start + at..]),
        None => url.to_string(),
    }
}

impl SchemaRegistry {
    /// A client of the registry at `url` (no request is made yet).
    pub fn new(url: &str) -> Result<Self, RegistryError> {
        let url = url.trim().trim_end_matches('/').to_string();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            let shown = without_credentials(&url);
            let message = format!(
                "`{shown}` is not an http(s) URL; give the registry's base URL, e.g. http://127.0.0.1:8081/apis/ccompat/v7"
            );
            return Err(RegistryError::Refused { url: shown, status: None, error_code: None, message, source: None });
        }
        let access = RegistryAccess::from_env(&url)?;
        Self::with_access(url, &access)
    }

    /// A client of the registry at `url` that trusts and authenticates as `access` says.
    pub fn with_access(url: String, access: &RegistryAccess) -> Result<Self, RegistryError> {
        let refused = |message: String, source: Option<SRCError>| RegistryError::Refused {
            url: without_credentials(&url),
            status: None,
            error_code: None,
            message,
            source: source.map(Box::new),
        };
        let mut client = reqwest::Client::builder();
        if let Some(pem) = &access.ca_pem {
            let not_pem = |why: String| {
                refused(format!("the CA file of {SCHEMA_REGISTRY_CA_FILE_ENV} is not PEM certificates ({why})"), None)
            };
            let certificates = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| not_pem(e.to_string()))?;
            if certificates.is_empty() {
                return Err(not_pem("no certificate in it".into()));
            }
            for certificate in certificates {
                client = client.add_root_certificate(certificate);
            }
        }
        let mut builder = SrSettings::new_builder(url.clone());
        // No proxy setting here: reqwest follows HTTPS_PROXY, HTTP_PROXY and NO_PROXY, as the
        // networks that require a proxy expect.
        builder.set_timeout(REQUEST_TIMEOUT);
        if let Some((user, password)) = &access.basic {
            builder.set_basic_authorization(user, Some(password));
        }
        if let Some(token) = &access.token {
            builder.set_token_authorization(token);
        }
        let settings = builder.build_with(client).map_err(|e| refused(message_of(&e), Some(e)))?;
        let decoder = AvroDecoder::new(settings.clone());
        // The client keeps the URL as given; errors and log lines only ever see it without
        // its user and password.
        Ok(Self { url: without_credentials(&url), settings, decoder })
    }

    /// The client of the registry named by `SCHEMA_REGISTRY_URL`, if it is set.
    pub fn from_env() -> Option<Result<Self, RegistryError>> {
        std::env::var(SCHEMA_REGISTRY_URL_ENV).ok().filter(|u| !u.trim().is_empty()).map(|u| Self::new(&u))
    }

    /// The registry's base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sorts the client's error by the client's `retriable` flag and the answer's HTTP
    /// status; `id` is the schema id asked for, if any.
    fn classify(&self, id: Option<u32>, error: SRCError) -> RegistryError {
        let url = self.url.clone();
        let message = message_of(&error);
        let status = http_status(&error);
        match (status, id) {
            _ if error.retriable => RegistryError::Unavailable { url, message, source: Box::new(error) },
            (Some(s), _) if s >= 500 => RegistryError::Unavailable { url, message, source: Box::new(error) },
            (Some(404), Some(id)) => RegistryError::UnknownSchema { id, url, message, source: Box::new(error) },
            (None, Some(id)) => RegistryError::BadSchema { id, url, message, source: Box::new(error) },
            _ => RegistryError::Refused {
                url,
                status,
                error_code: registry_code(&error),
                message,
                source: Some(Box::new(error)),
            },
        }
    }

    /// The writer schema with registry id `id`.
    pub async fn writer_schema(&self, id: u32) -> Result<Arc<Schema>, RegistryError> {
        match self.decoder.get_schema(id).await {
            Ok(schema) => Ok(Arc::new(schema.parsed.clone())),
            Err(error) => {
                let classified = self.classify(Some(id), error);
                if classified.on_the_log().is_none() {
                    // The client caches failures it deems final, a 500 and a 401 among them; a
                    // failure that is not the input's must be asked again once it is fixed.
                    self.decoder.remove_errors_from_cache();
                }
                Err(classified)
            }
        }
    }

    /// Resolves `ids` into `cache`: each becomes its schema, or the sentence saying why the
    /// registry has none (dead-lettered by the core). Stops at the first failure that is not
    /// the input's (unavailable, unauthorized, any other refusal), which the caller retries
    /// with backoff; what was resolved before it stays in the cache.
    pub async fn resolve(
        &self,
        ids: impl IntoIterator<Item = u32>,
        cache: &mut SchemaCache,
    ) -> Result<(), RegistryError> {
        for id in ids {
            if cache.contains(id) {
                continue;
            }
            let error = match self.writer_schema(id).await {
                Ok(schema) => {
                    cache.insert(id, schema);
                    continue;
                }
                Err(error) => error,
            };
            let Some(message) = error.on_the_log() else { return Err(error) };
            // The events that met it are dead-lettered with `on_the_log()`: the same on every
            // replica. The registry's reply goes to their advisory detail; its address stays in
            // this log line.
            tracing::warn!(%error, "schema id {id} cannot be resolved; its events become dead letters");
            cache.insert_unresolved(id, Unresolved { message, reply: error.reply() });
        }
        Ok(())
    }

    /// Registers `schema` (an `.avsc` text) under `subject` and returns its id; registering
    /// the same schema again returns the same id. Refused with
    /// [`RegistryError::Incompatible`] when it breaks the subject's compatibility setting.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        // Replicas starting together race to create a new subject, and Apicurio answers the
        // losers 409 "already exists": the same status and `error_code` (409) as an
        // incompatible schema, told apart only by the message. So every 409 is asked again
        // instead: a lost race then finds the subject made and gets the id, while an
        // incompatible schema is refused each time and reported after the last attempt.
        const ATTEMPTS: u32 = 3;
        let mut backoff = Backoff::for_retries();
        for attempt in 1..=ATTEMPTS {
            let supplied = SuppliedSchema::new(None, SchemaType::Avro, schema.to_string());
            match post_schema(&self.settings, subject.to_string(), supplied).await {
                Ok(registered) => return Ok(registered.id),
                Err(error) if http_status(&error) == Some(409) && attempt < ATTEMPTS => {
                    tokio::time::sleep(backoff.next_wait()).await;
                }
                Err(error) if http_status(&error) == Some(409) => {
                    return Err(RegistryError::Incompatible {
                        subject: subject.into(),
                        url: self.url.clone(),
                        reason: message_of(&error),
                        source: Some(Box::new(error)),
                    });
                }
                Err(error) => return Err(self.classify(None, error)),
            }
        }
        unreachable!("the last attempt returns")
    }

    /// Checks, without registering, that `schema` is compatible with what `subject` holds.
    /// A subject with no versions yet accepts anything.
    pub async fn check(&self, subject: &str, schema: &str) -> Result<(), RegistryError> {
        let supplied = SuppliedSchema::new(None, SchemaType::Avro, schema.to_string());
        match is_compatible_schema(&self.settings, subject.to_string(), supplied).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(RegistryError::Incompatible {
                subject: subject.into(),
                url: self.url.clone(),
                reason: "the registry's compatibility check answered false".into(),
                source: None,
            }),
            Err(error) if http_status(&error) == Some(404) => Ok(()),
            Err(error) => Err(self.classify(None, error)),
        }
    }

    /// Registers a transformer's output schema under `<transformer>-value` and returns the
    /// codec its outputs are written with.
    pub async fn output_codec(&self, transformer: &str, schema: &str) -> Result<AvroOutput, RegistryError> {
        let parsed = parse_schema(schema)
            .map_err(|e| RegistryError::BadOutputSchema { transformer: transformer.into(), source: Arc::new(e) })?;
        let schema_id = self.register(&subject_for(transformer), schema).await?;
        Ok(AvroOutput { schema_id, schema: Arc::new(parsed) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::registry_answering;

    #[test]
    fn statuses_are_read_from_the_clients_error() {
        let error = SRCError::new("HTTP request to schema registry failed with status 404 Not Found", None, false);
        assert_eq!(http_status(&error), Some(404));
        assert_eq!(http_status(&SRCError::new("could not parse", None, false)), None);
    }

    #[test]
    fn unreachable_and_5xx_are_transient_404_is_final() {
        let registry = SchemaRegistry::new("http://127.0.0.1:1/apis/ccompat/v7/").unwrap();
        assert_eq!(registry.url(), "http://127.0.0.1:1/apis/ccompat/v7");
        let down = SRCError::new("http call to schema registry failed", Some("connection refused".into()), true);
        assert!(registry.classify(Some(1), down).is_transient());
        let busy =
            SRCError::new("HTTP request to schema registry failed with status 500 Internal Server Error", None, false);
        assert!(registry.classify(Some(1), busy).is_transient());
        let missing = SRCError::new("HTTP request to schema registry failed with status 404 Not Found", None, false);
        assert!(matches!(registry.classify(Some(1), missing), RegistryError::UnknownSchema { id: 1, .. }));
        let unparsable = SRCError::new("failed to parse Avro schema", None, false);
        assert!(matches!(registry.classify(Some(2), unparsable), RegistryError::BadSchema { id: 2, .. }));
    }

    #[test]
    fn credentials_in_the_url_never_reach_errors_or_logs() {
        let registry = SchemaRegistry::new("https://user:secret@registry.example:443/apis/ccompat/v7").unwrap();
        assert_eq!(registry.url(), "https://***@registry.example:443/apis/ccompat/v7");
        assert_eq!(format!("{registry:?}").matches("secret").count(), 0);
        let refused = SchemaRegistry::new("user:secret@registry.example:8081").unwrap_err().to_string();
        assert!(!refused.contains("secret") && refused.contains("***@registry.example"), "{refused}");
        assert_eq!(without_credentials("http://127.0.0.1:8081/a@b"), "http://127.0.0.1:8081/a@b");
    }

    #[test]
    fn what_reaches_the_log_depends_on_the_schema_id_alone() {
        let answers = |url: &str| {
            let registry = SchemaRegistry::new(url).unwrap();
            let missing = answer("404 Not Found", r#"{"error_code":40403,"message":"No content with id 7"}"#);
            let unusable = SRCError::new("failed to parse Avro schema", None, false);
            [registry.classify(Some(7), missing).on_the_log(), registry.classify(Some(7), unusable).on_the_log()]
                .map(Option::unwrap)
        };
        let here = answers("http://registry-a:8081/apis/ccompat/v7");
        assert_eq!(here, answers("https://user:secret@registry-b.example:443/apis/ccompat/v7"));
        assert!(here.iter().all(|text| text.contains("schema id 7") && !text.contains("registry-a")), "{here:?}");
    }

    /// An error answer as the client makes it: the registry's JSON is the source.
    fn answer(status: &str, json: &str) -> SRCError {
        let raw: RawError = serde_json::from_str(json).unwrap();
        SRCError::non_retryable_with_cause(raw, &format!("HTTP request to schema registry failed with status {status}"))
    }

    #[test]
    fn the_registrys_code_and_message_travel_with_the_error() {
        let registry = SchemaRegistry::new("http://127.0.0.1:1").unwrap();
        let missing = answer("404 Not Found", r#"{"error_code":40403,"message":"No content with id 7"}"#);
        let error = registry.classify(Some(7), missing);
        assert!(
            matches!(&error, RegistryError::UnknownSchema { id: 7, message, .. } if message == "No content with id 7")
        );
        assert_eq!(error.error_code(), Some(40403));
        let source = std::error::Error::source(&error).expect("the client's error is the source");
        assert!(source.downcast_ref::<Box<SRCError>>().is_some());

        let denied = answer("401 Unauthorized", r#"{"error_code":401,"message":"Unauthorized"}"#);
        let error = registry.classify(None, denied);
        assert!(matches!(error, RegistryError::Refused { status: Some(401), error_code: Some(401), .. }), "{error:?}");
        assert!(error.is_authorization() && error.on_the_log().is_none(), "the host's fault, never a dead letter");
    }

    #[test]
    fn without_the_clients_status_the_registrys_code_gives_it() {
        let raw: RawError = serde_json::from_str(r#"{"error_code":40401,"message":"Subject not found"}"#).unwrap();
        assert_eq!(http_status(&SRCError::non_retryable_with_cause(raw, "request failed")), Some(404));
        let raw: RawError = serde_json::from_str(r#"{"error_code":409,"message":"conflict"}"#).unwrap();
        assert_eq!(http_status(&SRCError::non_retryable_with_cause(raw, "request failed")), Some(409));
        let raw: RawError = serde_json::from_str(r#"{"error_code":0,"message":"unparsable"}"#).unwrap();
        assert_eq!(http_status(&SRCError::non_retryable_with_cause(raw, "request failed")), None);
    }

    #[test]
    fn an_output_schema_that_does_not_parse_names_the_transformer() {
        let registry = SchemaRegistry::new("http://127.0.0.1:1").unwrap();
        let error = futures::executor::block_on(registry.output_codec("echo", "{not json")).unwrap_err();
        assert!(
            matches!(&error, RegistryError::BadOutputSchema { transformer, .. } if transformer == "echo"),
            "{error}"
        );
        assert!(!error.is_transient());
    }

    #[tokio::test]
    async fn basic_and_bearer_credentials_reach_the_registry_and_no_debug_output() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        for (access, expected) in [
            (RegistryAccess { basic: Some(("u".into(), "p".into())), ..Default::default() }, "basic dtpw"),
            (RegistryAccess { token: Some("planted-token".into()), ..Default::default() }, "bearer planted-token"),
        ] {
            assert!(!format!("{access:?}").contains("planted") && !format!("{access:?}").contains("\"p\""));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let server = tokio::spawn(async move {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut request = vec![0; 4096];
                let read = socket.read(&mut request).await.unwrap();
                let body = r#"{"schema":"\"string\""}"#;
                let answer =
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                socket.write_all(answer.as_bytes()).await.unwrap();
                String::from_utf8_lossy(&request[..read]).to_ascii_lowercase()
            });
            let registry = SchemaRegistry::with_access(url, &access).unwrap();
            registry.resolve([5], &mut SchemaCache::new()).await.unwrap();
            let request = server.await.unwrap();
            assert!(request.contains(&format!("authorization: {expected}")), "{request}");
        }
        let bad_ca = RegistryAccess { ca_pem: Some(b"planted".to_vec()), ..Default::default() };
        let error = SchemaRegistry::with_access("https://r:1".into(), &bad_ca).unwrap_err().to_string();
        assert!(error.contains(SCHEMA_REGISTRY_CA_FILE_ENV) && !error.contains("planted"), "{error}");
    }

    #[test]
    fn a_url_without_a_scheme_is_refused_with_an_example() {
        let error = SchemaRegistry::new("localhost:8081").unwrap_err().to_string();
        assert!(error.contains("not an http(s) URL") && error.contains("/apis/ccompat/v7"), "{error}");
    }

    #[tokio::test]
    async fn a_registry_refusing_who_asks_is_never_a_dead_letter_and_is_asked_again() {
        for status in ["401 Unauthorized", "403 Forbidden"] {
            let refusal = r#"{"error_code":40101,"message":"Unauthorized"}"#;
            let schema = r#"{"schema":"\"string\""}"#;
            let registry = registry_answering(vec![(status, refusal), (status, refusal), ("200 OK", schema)]).await;
            let mut cache = SchemaCache::new();
            for _ in 0..2 {
                let error = registry.resolve([5], &mut cache).await.unwrap_err();
                assert!(error.is_authorization() && !error.is_transient(), "{status}: {error:?}");
                assert!(error.to_string().contains(SCHEMA_REGISTRY_URL_ENV), "says what to check: {error}");
                assert!(cache.is_empty(), "{status}: nothing for the core to dead-letter");
            }
            // Once the registry lets the replica in, the same id resolves: the refusal was not cached.
            registry.resolve([5], &mut cache).await.unwrap();
            assert!(matches!(cache.get(5), Some(Ok(_))), "{status}");
        }
    }

    #[tokio::test]
    async fn an_unknown_id_keeps_the_registrys_reply_outside_the_dead_letters_words() {
        let reply = r#"{"error_code":40403,"message":"No content with id 5 (registry build 1.2)"}"#;
        let registry = registry_answering(vec![("404 Not Found", reply)]).await;
        let mut cache = SchemaCache::new();
        registry.resolve([5], &mut cache).await.unwrap();
        let Some(Err(unresolved)) = cache.get(5) else { panic!("a 404 is final for the id") };
        assert_eq!(
            unresolved.message,
            RegistryError::UnknownSchema {
                id: 5,
                url: String::new(),
                message: String::new(),
                source: Box::new(SRCError::new("", None, false)),
            }
            .on_the_log()
            .unwrap()
        );
        assert!(!unresolved.message.contains("1.2") && !unresolved.message.contains("127.0.0.1"));
        assert_eq!(unresolved.reply.as_deref(), Some("No content with id 5 (registry build 1.2)"));
    }

    #[tokio::test]
    async fn an_unreachable_registry_is_a_transient_error_and_resolves_nothing() {
        // Port 1 on loopback: nothing listens there, the connection is refused at once.
        let registry = SchemaRegistry::new("http://127.0.0.1:1").unwrap();
        let mut cache = SchemaCache::new();
        let error = registry.resolve([5], &mut cache).await.unwrap_err();
        assert!(error.is_transient(), "{error}");
        assert!(cache.is_empty());
    }
}
