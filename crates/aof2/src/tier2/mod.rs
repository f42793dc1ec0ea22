//! Tier 2: object storage through `object_store` (S3 and S3-compatible servers, a local
//! directory, or memory).
//!
//! Every request goes through one path ([`Tier2::call`]): a time limit per attempt, retries of
//! transient failures with exponential backoff and full jitter, and a circuit breaker that makes
//! callers fail fast with `Unavailable` while the store is down (see [`breaker`]). Answers that
//! are definite ("not found", "already exists", a range past the end of an object) are not
//! retried and count as the store being up.
//!
//! A refusal only the configuration can fix ([`Misconfig`]: no such bucket, credentials rejected
//! or not allowed, a clock the store rejects) is neither: it fails the call at once with
//! `Error::Tier2Misconfigured` naming the bucket, the endpoint and what to change, is logged
//! once (when it starts and when it ends), shows in [`Tier2Stats::problem`], and counts as a
//! failure for the breaker, so background work backs off as for an outage instead of asking
//! again and again. A missing *object* is an ordinary "not found"; S3 tells the two apart by the
//! error code in the answer (`NoSuchKey`, `NoSuchBucket`).
//!
//! Segment objects are never held whole in memory: reads take ranges (a frame at a time), and a
//! whole-object download (restore, fetch back into Tier 1) streams into its temporary file
//! through a buffer of `limits::DOWNLOAD_CHUNK_BYTES`, checked against the object's length and
//! CRC before the file is kept ([`Tier2Copy::download_to`]). Catalogs and claims are small and
//! are read whole.
//!
//! Key layout under the URL's prefix (spec in `docs/format.md`):
//!
//! ```text
//! aof2/logs/<name>/writer/<epoch:020>                          writer claims (created only if absent)
//! aof2/logs/<name>/catalog/<epoch:020>-<generation:020>       each publication of a catalog
//! aof2/logs/<name>/<log_id:032x>/<segment_id:016x>-<tier1 footer crc:08x>.t1   Tier 1 file copies
//! ```
//!
//! Every publication of a catalog is a new object named by its writer epoch and generation, and
//! readers take the highest: a PUT that lands late (its attempt timed out, the retry and newer
//! publications went through) adds an old generation beside the newest, and can never replace it
//! as an overwrite of one key per epoch would. The writer deletes generations older than its
//! previous one after each publication.
//!
//! Segment objects are named by their content (the Tier 1 footer CRC covers the frame index, so
//! two different compressions of a segment get two names): an upload retried after an unknown
//! outcome writes the same bytes to the same key, never a second live object.

pub mod breaker;

use std::future::Future;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use parking_lot::Mutex;

use crate::config::Tier2Config;
use crate::error::{Error, IoContext, Result, Tier};
use crate::format::catalog::{Catalog, CatalogSegment, Claim};
use crate::format::manifest::Tier2Info;
use crate::format::{Crc32cDigest, crc32c};
use crate::limits::DOWNLOAD_CHUNK_BYTES;
use crate::sys;
use crate::tier1::RangeRead;
use crate::tiering::{FrameCache, Tier1Segment};
use breaker::{Breaker, BreakerState};

/// How often a request in flight looks whether the manager is closing (see `Tier2::exec`).
const STOP_POLL: Duration = Duration::from_millis(50);

/// How long `AofManager::open` waits for its check of the store (`Tier2::check_access`).
pub(crate) const ACCESS_CHECK_WAIT: Duration = Duration::from_secs(2);

/// A definite answer from the store that is not success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    NotFound,
    Exists,
}

/// Why the store refuses aof2's requests when only its configuration can fix it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Misconfig {
    /// 404 `NoSuchBucket`.
    NoSuchBucket,
    /// 401, or 403 `InvalidAccessKeyId`, `SignatureDoesNotMatch`, `ExpiredToken`, ...: the store
    /// does not accept the credentials.
    BadCredentials,
    /// 403 `AccessDenied` (or a 403 without a body, as HEAD answers): the credentials are not
    /// allowed to do this.
    AccessDenied,
    /// 403 `RequestTimeTooSkewed`: the signature's time is too far from the store's.
    ClockSkew,
}

impl Misconfig {
    /// The problem an S3 error code names, if it is one.
    fn of_code(code: &str) -> Option<Misconfig> {
        Some(match code {
            "NoSuchBucket" => Misconfig::NoSuchBucket,
            "InvalidAccessKeyId"
            | "SignatureDoesNotMatch"
            | "NotSignedUp"
            | "InvalidToken"
            | "ExpiredToken"
            | "TokenRefreshRequired"
            | "InvalidSecurity" => Misconfig::BadCredentials,
            "AccessDenied" | "AllAccessDisabled" | "AccountProblem" => Misconfig::AccessDenied,
            "RequestTimeTooSkewed" => Misconfig::ClockSkew,
            _ => return None,
        })
    }
}

/// One answer of the store (or its absence), classified.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    /// A definite refusal of this request (the store is up).
    Refused(Refusal),
    /// A request this store does not support, or a bad key: the store is up.
    Unsupported,
    /// A configuration problem; the string is what the store said (an S3 code or an HTTP
    /// status).
    Misconfigured(Misconfig, String),
    /// A failure that may pass: retry.
    Failed,
}

/// The S3 error code in an error's text (`<Code>NoSuchBucket</Code>` of the answer's body,
/// which object_store keeps in the error it returns), if any.
fn s3_error_code(text: &str) -> Option<&str> {
    let start = text.find("<Code>")? + "<Code>".len();
    let len = text[start..].find("</Code>")?;
    Some(&text[start..start + len])
}

/// The HTTP status object_store reports in an error's text ("... status code: 403 Forbidden").
fn http_status(text: &str) -> Option<u16> {
    let at = text.find("status code: ")? + "status code: ".len();
    text.get(at..at + 3)?.parse().ok()
}

/// Classify a failed request. object_store turns 404, 403 and 401 answers into `NotFound`,
/// `PermissionDenied` and `Unauthenticated`, except for LIST (a `Generic` error whose text holds
/// the status and body); S3 tells a missing bucket from a missing object only by the error code
/// in the body (none for HEAD).
fn classify(e: &object_store::Error) -> Answer {
    use object_store::Error as E;
    let text = e.to_string();
    if let Some(code) = s3_error_code(&text)
        && let Some(problem) = Misconfig::of_code(code)
    {
        return Answer::Misconfigured(problem, code.to_string());
    }
    let status = match e {
        E::NotFound { .. } => return Answer::Refused(Refusal::NotFound),
        E::AlreadyExists { .. } | E::Precondition { .. } => {
            return Answer::Refused(Refusal::Exists);
        }
        E::NotImplemented { .. }
        | E::NotSupported { .. }
        | E::InvalidPath { .. }
        | E::UnknownConfigurationKey { .. } => return Answer::Unsupported,
        E::PermissionDenied { .. } => Some(403),
        E::Unauthenticated { .. } => Some(401),
        _ => http_status(&text),
    };
    match status {
        Some(401) => Answer::Misconfigured(Misconfig::BadCredentials, "HTTP 401".into()),
        Some(403) => Answer::Misconfigured(Misconfig::AccessDenied, "HTTP 403".into()),
        _ => Answer::Failed,
    }
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    failures: AtomicU64,
    retries: AtomicU64,
    fast_failures: AtomicU64,
    uploads: AtomicU64,
    upload_bytes: AtomicU64,
    upload_ns: AtomicU64,
    ranged_gets: AtomicU64,
    download_bytes: AtomicU64,
    catalogs_published: AtomicU64,
}

/// Tier 2 figures, cheap to read.
#[derive(Debug, Clone, PartialEq)]
pub struct Tier2Stats {
    /// The store URL (without options).
    pub url: String,
    /// Circuit breaker state: "closed", "open" or "half-open".
    pub breaker: &'static str,
    /// Why the store refuses aof2, while its last answer was a refusal only the configuration
    /// can fix (the bucket does not exist, the credentials are rejected or not allowed), and
    /// what to change, e.g. "access denied by the store at ... (AccessDenied): check the
    /// credentials ...". `None` while the store accepts aof2's requests, or is only down.
    pub problem: Option<String>,
    pub breaker_opened: u64,
    /// Requests sent (each attempt counts).
    pub requests: u64,
    /// Attempts that failed (error response, timeout, connection failure).
    pub request_failures: u64,
    pub retries: u64,
    /// Calls refused at once because the breaker was open.
    pub fast_failures: u64,
    pub segments_uploaded: u64,
    pub upload_bytes: u64,
    pub upload_seconds: f64,
    /// Sealed segments with a Tier 1 copy waiting for their upload.
    pub upload_backlog: u64,
    pub ranged_gets: u64,
    pub download_bytes: u64,
    pub catalogs_published: u64,
    /// Local Tier 1 copies released because Tier 2 holds them.
    pub tier1_evictions: u64,
    /// Segments downloaded back into Tier 1 because they were read repeatedly.
    pub fetches: u64,
}

impl Tier2Stats {
    /// Upload throughput while uploads ran (summed over concurrent uploads' time).
    pub fn upload_mb_per_sec(&self) -> f64 {
        if self.upload_seconds > 0.0 {
            self.upload_bytes as f64 / 1e6 / self.upload_seconds
        } else {
            0.0
        }
    }
}

/// One manager's Tier 2 store.
pub(crate) struct Tier2 {
    store: Arc<dyn ObjectStore>,
    /// Key prefix from the URL ("" or "a/b/").
    prefix: String,
    url: String,
    /// Always `Some` until dropped (see the `Drop` impl).
    runtime: Option<tokio::runtime::Runtime>,
    config: Tier2Config,
    breaker: Breaker,
    counters: Counters,
    rng: AtomicU64,
    /// Set when the manager closes: calls stop retrying.
    stopping: AtomicBool,
    /// Whether the store keeps object metadata (the checksum goes there too).
    metadata: bool,
    /// The bucket of an S3 URL ("" for other stores).
    bucket: String,
    /// Where the store is, for messages: the S3 endpoint (or "AWS S3, region ...").
    endpoint: String,
    /// The configuration problem the store's last answer showed, with its message.
    problem: Mutex<Option<(Misconfig, String)>>,
    /// S3's paginated listing, for the access check (`None` for other stores).
    lister: Option<Arc<dyn object_store::list::PaginatedListStore>>,
}

impl Drop for Tier2 {
    /// Dropping a runtime waits for its threads, which tokio refuses (with a panic) inside an
    /// async context, and the last handle of a manager or `RemoteReader` may well be dropped in
    /// one. Nothing waits on the I/O threads at this point: let them wind down on their own.
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// User metadata key of a segment object's CRC-32C (hex), e.g. `x-amz-meta-aof2-crc32c`.
const CRC_METADATA: &str = "aof2-crc32c";

impl std::fmt::Debug for Tier2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tier2")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// Whether background Tier 2 work that failed with `e` should try again later: the store is
/// unavailable, or refuses aof2 for a reason the operator may fix while the process runs.
pub(crate) fn retry_later(e: &Error) -> bool {
    e.kind() == crate::ErrorKind::Unavailable || matches!(e, Error::Tier2Misconfigured { .. })
}

fn unavailable(detail: String) -> Error {
    Error::Unavailable {
        tier: Tier::Tier2,
        detail,
    }
}

/// Split `scheme://bucket/prefix` into (bucket, "prefix/").
fn split_url(url: &str, scheme_len: usize) -> (String, String) {
    let rest = &url[scheme_len..];
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let prefix = prefix.trim_matches('/');
    let prefix = if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    };
    (bucket.to_string(), prefix)
}

/// A store built from a URL: the client, its key prefix, and for S3 the bucket, the endpoint
/// and the paginated listing.
struct Built {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    bucket: String,
    endpoint: String,
    lister: Option<Arc<dyn object_store::list::PaginatedListStore>>,
}

impl Built {
    fn other(store: Arc<dyn ObjectStore>, url: &str) -> Built {
        Built {
            store,
            prefix: String::new(),
            bucket: String::new(),
            endpoint: url.to_string(),
            lister: None,
        }
    }
}

fn build_store(config: &Tier2Config) -> Result<Built> {
    let url = config.url.as_str();
    if let Some(path) = url.strip_prefix("file://") {
        let dir = Path::new(path);
        if !dir.is_absolute() {
            return Err(Error::InvalidConfig(format!(
                "tier 2 URL {url:?}: a file:// URL needs an absolute path (file:///dir)"
            )));
        }
        std::fs::create_dir_all(dir).context(|| format!("create {}", dir.display()))?;
        // An acknowledged PUT must be as durable as an S3 one: the local Tier 1 copy may be
        // deleted once it is recorded. `LocalFileSystem` writes without fsync unless asked.
        let store = object_store::local::LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| Error::InvalidConfig(format!("tier 2 URL {url:?}: {e}")))?
            .with_automatic_cleanup(true)
            .with_fsync(true);
        return Ok(Built::other(Arc::new(store), url));
    }
    if url.starts_with("memory://") {
        return Ok(Built::other(
            Arc::new(object_store::memory::InMemory::new()),
            url,
        ));
    }
    let scheme_len = if url.starts_with("s3a://") { 6 } else { 5 };
    let (bucket, prefix) = split_url(url, scheme_len);
    if bucket.is_empty() {
        return Err(Error::InvalidConfig(format!(
            "tier 2 URL {url:?} names no bucket (s3://bucket/prefix)"
        )));
    }
    // aof2 retries (with the circuit breaker) itself; the client makes one attempt per call.
    // Client options first: setting them later would reset options such as allow_http.
    let retry = object_store::RetryConfig {
        max_retries: 0,
        ..Default::default()
    };
    // No overall time limit in the client: it would be one limit for every request, and a
    // transfer's limit grows with its size (`Tier2::transfer_timeout`). aof2 bounds each attempt
    // itself (`Tier2::exec`), and each wait for a response or a body chunk within it. Nor the
    // client's read timeout: it runs from the request's start to the response's head, so it
    // would bound a PUT's whole body too.
    let client = object_store::ClientOptions::new()
        .with_timeout_disabled()
        .with_connect_timeout(config.request_timeout.min(Duration::from_secs(5)));
    let mut builder = object_store::aws::AmazonS3Builder::from_env()
        .with_client_options(client)
        .with_retry(retry)
        .with_bucket_name(&bucket);
    for (key, value) in &config.options {
        let key: object_store::aws::AmazonS3ConfigKey = key.parse().map_err(|e| {
            Error::InvalidConfig(format!("tier 2 option {key:?} is not an S3 setting: {e}"))
        })?;
        builder = builder.with_config(key, value);
    }
    use object_store::aws::AmazonS3ConfigKey;
    let endpoint = builder
        .get_config_value(&AmazonS3ConfigKey::Endpoint)
        .unwrap_or_else(|| {
            let region = builder
                .get_config_value(&AmazonS3ConfigKey::Region)
                .unwrap_or_else(|| "us-east-1".into());
            format!("AWS S3 (region {region})")
        });
    let store = Arc::new(
        builder
            .build()
            .map_err(|e| Error::InvalidConfig(format!("tier 2 URL {url:?}: {e}")))?,
    );
    Ok(Built {
        store: store.clone(),
        prefix,
        bucket,
        endpoint,
        lister: Some(store),
    })
}

/// The epoch a claim key ends with.
fn epoch_of(key: &str) -> Option<u64> {
    key.rsplit('/').next()?.parse().ok()
}

/// The (epoch, generation) a catalog key ends with.
fn catalog_version_of(key: &str) -> Option<(u64, u64)> {
    let (epoch, generation) = key.rsplit('/').next()?.split_once('-')?;
    Some((epoch.parse().ok()?, generation.parse().ok()?))
}

/// The error of a request step that ran out of time inside an attempt (retried like a timeout).
fn timed_out(what: &str, limit: Duration) -> object_store::Error {
    object_store::Error::Generic {
        store: "aof2",
        source: format!("{what}: no answer within {limit:?}").into(),
    }
}

/// Parts of a multipart upload in flight at once.
const PARTS_IN_FLIGHT: usize = 2;

/// Send `body` as the parts of `upload` (slices of it, no copies), [`PARTS_IN_FLIGHT`] at once,
/// then complete it. Each part has `request_timeout` per part in flight (the parts in flight
/// share the link: together they get one request's time limit per part, as the whole upload
/// does), the completion one `request_timeout`.
async fn send_parts(
    upload: &mut dyn object_store::MultipartUpload,
    body: &bytes::Bytes,
    part: usize,
    request_timeout: Duration,
) -> object_store::Result<()> {
    let part_timeout = request_timeout.saturating_mul(PARTS_IN_FLIGHT as u32);
    let mut in_flight = tokio::task::JoinSet::new();
    for offset in (0..body.len()).step_by(part) {
        if in_flight.len() >= PARTS_IN_FLIGHT
            && let Some(done) = in_flight.join_next().await
        {
            done.map_err(|e| object_store::Error::Generic {
                store: "aof2",
                source: Box::new(e),
            })??;
        }
        let slice = body.slice(offset..(offset + part).min(body.len()));
        let sent = upload.put_part(PutPayload::from(slice));
        in_flight.spawn(async move {
            tokio::time::timeout(part_timeout, sent)
                .await
                .map_err(|_| timed_out("UploadPart", part_timeout))?
        });
    }
    while let Some(done) = in_flight.join_next().await {
        done.map_err(|e| object_store::Error::Generic {
            store: "aof2",
            source: Box::new(e),
        })??;
    }
    tokio::time::timeout(request_timeout, upload.complete())
        .await
        .map_err(|_| timed_out("CompleteMultipartUpload", request_timeout))?
        .map(|_| ())
}

/// What streaming an object into a file found (see [`Tier2::get_into`]).
#[derive(Debug)]
pub(crate) enum Streamed {
    /// The file holds the object, exactly the expected length, whose CRC-32C is `crc`.
    Whole { crc: u32 },
    /// The object is this many bytes (at least, if more than expected), not the expected
    /// length: the store's answer, not a failed request.
    WrongLength(u64),
    /// Writing the file failed (not the store's fault: no retry, the breaker stays as it is).
    Local(std::io::Error),
}

/// One attempt of [`Tier2::get_into`]. The response and each piece of its body must come within
/// `idle_timeout` (a stalled transfer is given up without waiting out the attempt's limit).
async fn stream_into(
    store: Arc<dyn ObjectStore>,
    path: ObjectPath,
    file: Arc<std::fs::File>,
    len: u64,
    idle_timeout: Duration,
    abandoned: Arc<AtomicBool>,
) -> object_store::Result<Streamed> {
    use futures::StreamExt;
    use std::os::unix::fs::FileExt;
    let got = tokio::time::timeout(idle_timeout, store.get(&path))
        .await
        .map_err(|_| timed_out("GET", idle_timeout))??;
    if got.meta.size != len {
        return Ok(Streamed::WrongLength(got.meta.size));
    }
    let mut stream = got.into_stream();
    let chunk_bytes = usize::try_from(len)
        .unwrap_or(usize::MAX)
        .clamp(1, DOWNLOAD_CHUNK_BYTES);
    let mut buffer = Vec::with_capacity(chunk_bytes);
    let mut digest = Crc32cDigest::new();
    let mut received = 0u64;
    let mut written = 0u64;
    // Synchronous writes inside the attempt (`block_in_place` lets the runtime's other tasks
    // move to another thread meanwhile): none outlives it to land in the next attempt's bytes.
    let mut flush = |buffer: &mut Vec<u8>| -> std::io::Result<()> {
        tokio::task::block_in_place(|| file.write_all_at(buffer, written))?;
        written += buffer.len() as u64;
        buffer.clear();
        Ok(())
    };
    while let Some(piece) = tokio::time::timeout(idle_timeout, stream.next())
        .await
        .map_err(|_| timed_out("GET body (no bytes)", idle_timeout))?
    {
        let piece = piece?;
        if abandoned.load(Ordering::Acquire) {
            return Err(object_store::Error::Generic {
                store: "aof2",
                source: "the download was given up".into(),
            });
        }
        received += piece.len() as u64;
        if received > len {
            return Ok(Streamed::WrongLength(received));
        }
        digest.update(&piece);
        let mut rest = &piece[..];
        while !rest.is_empty() {
            let take = rest.len().min(chunk_bytes - buffer.len());
            buffer.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if buffer.len() == chunk_bytes
                && let Err(e) = flush(&mut buffer)
            {
                return Ok(Streamed::Local(e));
            }
        }
    }
    if !buffer.is_empty()
        && let Err(e) = flush(&mut buffer)
    {
        return Ok(Streamed::Local(e));
    }
    if received != len {
        return Ok(Streamed::WrongLength(received));
    }
    Ok(Streamed::Whole {
        crc: digest.finish(),
    })
}

/// Outcome of one attempt.
enum Attempt<T> {
    Done(object_store::Result<T>),
    TimedOut,
}

/// An attempt after `Tier2::settle` accounted for it.
enum Settled<T> {
    Done(T),
    Refused(Refusal),
    /// The store does not support the request (its error).
    Unsupported(String),
    /// The store refuses aof2 (the message saying what to change).
    Misconfigured(String),
    /// May pass (its error).
    Failed(String),
}

impl Tier2 {
    pub(crate) fn open(config: &Tier2Config) -> Result<Arc<Tier2>> {
        config.validate()?;
        let built = build_store(config)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("aof2-tier2-io")
            .on_thread_start(|| {
                crate::sys::lower_thread_priority(crate::tiering::BACKGROUND_NICE);
            })
            .enable_all()
            .build()
            .map_err(|e| Error::io("start the Tier 2 I/O runtime", e))?;
        Ok(Arc::new(Tier2 {
            store: built.store,
            prefix: built.prefix,
            bucket: built.bucket,
            endpoint: built.endpoint,
            problem: Mutex::new(None),
            lister: built.lister,
            url: config.url.clone(),
            runtime: Some(runtime),
            config: config.clone(),
            breaker: Breaker::new(config.breaker_failures, config.breaker_open_for),
            counters: Counters::default(),
            rng: AtomicU64::new(sys::random_u128() as u64 | 1),
            stopping: AtomicBool::new(false),
            metadata: !config.url.starts_with("file://"),
        }))
    }

    /// The manager is closing: calls in flight give up instead of retrying.
    pub(crate) fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    pub(crate) fn config(&self) -> &Tier2Config {
        &self.config
    }

    pub(crate) fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    pub(crate) fn stats(
        &self,
        upload_backlog: u64,
        tier1_evictions: u64,
        fetches: u64,
    ) -> Tier2Stats {
        let c = &self.counters;
        Tier2Stats {
            url: self.url.clone(),
            breaker: self.breaker.state().as_str(),
            problem: self.problem().map(|(_, detail)| detail),
            breaker_opened: self.breaker.times_opened(),
            requests: c.requests.load(Ordering::Relaxed),
            request_failures: c.failures.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            fast_failures: c.fast_failures.load(Ordering::Relaxed),
            segments_uploaded: c.uploads.load(Ordering::Relaxed),
            upload_bytes: c.upload_bytes.load(Ordering::Relaxed),
            upload_seconds: c.upload_ns.load(Ordering::Relaxed) as f64 / 1e9,
            upload_backlog,
            ranged_gets: c.ranged_gets.load(Ordering::Relaxed),
            download_bytes: c.download_bytes.load(Ordering::Relaxed),
            catalogs_published: c.catalogs_published.load(Ordering::Relaxed),
            tier1_evictions,
            fetches,
        }
    }

    // ------------------------------------------------------------------ keys

    fn log_prefix(&self, name: &str) -> String {
        format!("{}aof2/logs/{name}/", self.prefix)
    }

    fn claims_prefix(&self, name: &str) -> String {
        format!("{}writer/", self.log_prefix(name))
    }

    fn claim_key(&self, name: &str, epoch: u64) -> String {
        format!("{}{epoch:020}", self.claims_prefix(name))
    }

    fn catalogs_prefix(&self, name: &str) -> String {
        format!("{}catalog/", self.log_prefix(name))
    }

    fn catalog_key(&self, name: &str, epoch: u64, generation: u64) -> String {
        format!("{}{epoch:020}-{generation:020}", self.catalogs_prefix(name))
    }

    /// Key of a segment's Tier 1 file copy.
    pub(crate) fn segment_key(&self, name: &str, log_id: u128, info: &Tier2Info) -> String {
        self.segment_key_parts(name, log_id, info.tier1.segment_id, info.tier1.footer_crc)
    }

    /// Prefix of every segment object of a log.
    pub(crate) fn segments_prefix(&self, name: &str, log_id: u128) -> String {
        format!("{}{log_id:032x}/", self.log_prefix(name))
    }

    pub(crate) fn segment_key_parts(
        &self,
        name: &str,
        log_id: u128,
        segment_id: u64,
        footer_crc: u32,
    ) -> String {
        format!(
            "{}{log_id:032x}/{segment_id:016x}-{footer_crc:08x}.t1",
            self.log_prefix(name)
        )
    }

    // ------------------------------------------------------------------ requests

    fn jitter(&self, attempt: u32) -> Duration {
        let cap = self
            .config
            .backoff_base
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.config.backoff_max);
        // xorshift64*: full jitter, uniform in [0, cap].
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.store(x, Ordering::Relaxed);
        let nanos = cap.as_nanos() as u64;
        Duration::from_nanos(if nanos == 0 { 0 } else { x % (nanos + 1) })
    }

    /// Run one attempt on the I/O runtime and wait for it (from any thread, including threads of
    /// another tokio runtime: the wait is a plain channel receive).
    fn exec<T, Fut>(&self, fut: Fut, timeout: Duration) -> Attempt<T>
    where
        T: Send + 'static,
        Fut: Future<Output = object_store::Result<T>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let runtime = self.runtime.as_ref().expect("runtime lives until drop");
        runtime.spawn(async move {
            let outcome = tokio::time::timeout(timeout, fut).await;
            let _ = tx.send(outcome);
        });
        // Waited for in slices: a manager that is closing (`stop`) gives up a request the
        // store does not answer instead of waiting out its time limit (minutes, with a hung
        // store); the request counts as timed out, as it would a little later.
        loop {
            match rx.recv_timeout(STOP_POLL) {
                Ok(Ok(result)) => return Attempt::Done(result),
                Ok(Err(_)) | Err(RecvTimeoutError::Disconnected) => return Attempt::TimedOut,
                Err(RecvTimeoutError::Timeout) if self.stopping.load(Ordering::Acquire) => {
                    return Attempt::TimedOut;
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }

    /// One operation with timeouts, retries and the breaker. The outer `Err` is the failure
    /// callers see (`Unavailable` naming Tier 2, `Tier2Misconfigured`, or another configuration
    /// problem); the inner one a definite refusal from the store.
    fn call<T, F, Fut>(
        &self,
        what: &str,
        key: &str,
        timeout: Duration,
        mut op: F,
    ) -> Result<std::result::Result<T, Refusal>>
    where
        T: Send + 'static,
        F: FnMut(Arc<dyn ObjectStore>) -> Fut,
        Fut: Future<Output = object_store::Result<T>> + Send + 'static,
    {
        let mut last = String::new();
        for attempt in 0..=self.config.max_retries {
            let probe = match self.breaker.admit() {
                Ok(probe) => probe,
                Err(rejected) => {
                    self.counters.fast_failures.fetch_add(1, Ordering::Relaxed);
                    // Open because the store refuses aof2: say why, as the refusal itself did.
                    if let Some((_, detail)) = self.problem() {
                        return Err(self.misconfigured(detail));
                    }
                    let when = match rejected.probe_at {
                        Some(at) => format!(
                            "next probe in {} ms",
                            at.saturating_duration_since(Instant::now()).as_millis()
                        ),
                        None => "a probe is in flight".to_string(),
                    };
                    let cause = if last.is_empty() {
                        String::new()
                    } else {
                        format!("; last error: {last}")
                    };
                    return Err(unavailable(format!(
                        "{what} {key}: circuit breaker is open after repeated failures of {} \
                     ({when}){cause}",
                        self.url
                    )));
                }
            };
            if attempt > 0 {
                self.counters.retries.fetch_add(1, Ordering::Relaxed);
            }
            last = 'attempt: {
                if probe && timeout > self.timeout() {
                    // A long operation (a multipart upload, a whole-object download) as the
                    // probe would keep the breaker half-open for its whole time limit, every
                    // other request failing fast meanwhile although the store may be back: a
                    // short request probes first, and closes the breaker if the store answers.
                    if let Some(probe) = self.list_one(self.timeout()) {
                        self.counters.requests.fetch_add(1, Ordering::Relaxed);
                        match self.settle(probe, self.timeout()) {
                            Settled::Misconfigured(detail) => {
                                return Err(self.misconfigured(detail));
                            }
                            Settled::Failed(error) => break 'attempt error,
                            Settled::Done(()) | Settled::Refused(_) | Settled::Unsupported(_) => {}
                        }
                    }
                }
                self.counters.requests.fetch_add(1, Ordering::Relaxed);
                match self.settle(self.exec(op(self.store.clone()), timeout), timeout) {
                    Settled::Done(v) => return Ok(Ok(v)),
                    Settled::Refused(refusal) => return Ok(Err(refusal)),
                    Settled::Unsupported(e) => {
                        return Err(unavailable(format!(
                            "{what} {key} on {}: refused: {e}",
                            self.url
                        )));
                    }
                    Settled::Misconfigured(detail) => return Err(self.misconfigured(detail)),
                    Settled::Failed(error) => error,
                }
            };
            if self.stopping.load(Ordering::Acquire) {
                return Err(unavailable(format!(
                    "{what} {key}: the manager is closing; last error: {last}"
                )));
            }
            if attempt < self.config.max_retries {
                std::thread::sleep(self.jitter(attempt));
            }
        }
        Err(unavailable(format!(
            "{what} {key} on {} failed {} times; last error: {last}",
            self.url,
            self.config.max_retries + 1
        )))
    }

    /// The breaker, the counters and the recorded problem after one attempt.
    fn settle<T>(&self, attempt: Attempt<T>, timeout: Duration) -> Settled<T> {
        let answer = match attempt {
            Attempt::Done(Ok(v)) => {
                self.breaker.success();
                self.clear_problem(true);
                return Settled::Done(v);
            }
            Attempt::Done(Err(e)) => (classify(&e), e.to_string()),
            Attempt::TimedOut => (Answer::Failed, format!("no answer within {timeout:?}")),
        };
        match answer {
            (Answer::Refused(refusal), _) => {
                self.breaker.success();
                // "Already exists" proves the bucket and the credentials; a HEAD's "not found"
                // (no body) may be a missing bucket.
                if refusal == Refusal::Exists {
                    self.clear_problem(true);
                }
                Settled::Refused(refusal)
            }
            (Answer::Unsupported, error) => {
                self.breaker.success();
                Settled::Unsupported(error)
            }
            (Answer::Misconfigured(problem, said), _) => {
                // Asking again will not help until someone changes the store or the
                // configuration: count it as a failure, so that the breaker makes background
                // work back off as it does for an outage.
                self.counters.failures.fetch_add(1, Ordering::Relaxed);
                self.breaker.failure();
                Settled::Misconfigured(self.note_problem(problem, &said))
            }
            (Answer::Failed, error) => {
                self.counters.failures.fetch_add(1, Ordering::Relaxed);
                self.breaker.failure();
                self.clear_problem(false);
                Settled::Failed(error)
            }
        }
    }

    fn misconfigured(&self, detail: String) -> Error {
        Error::Tier2Misconfigured {
            url: self.url.clone(),
            detail,
        }
    }

    /// The configuration problem the store's last answer showed, with its message.
    pub(crate) fn problem(&self) -> Option<(Misconfig, String)> {
        self.problem.lock().clone()
    }

    /// Record that the store refused aof2 (`said`: its error code or status) and return the
    /// message: what is wrong and what to change. Logged when the problem starts, not at every
    /// request.
    fn note_problem(&self, problem: Misconfig, said: &str) -> String {
        let endpoint = &self.endpoint;
        let bucket = &self.bucket;
        let detail = match problem {
            Misconfig::NoSuchBucket => format!(
                "bucket {bucket:?} does not exist at {endpoint} ({said}): create it, or correct \
                 the bucket name in the Tier 2 URL"
            ),
            Misconfig::BadCredentials => format!(
                "credentials rejected by the store at {endpoint} ({said}): check the access key \
                 id and secret key (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or the \
                 aws_access_key_id and aws_secret_access_key options)"
            ),
            Misconfig::AccessDenied => format!(
                "access denied by the store at {endpoint} ({said}): check the credentials, and \
                 that they may list, read, write and delete objects in bucket {bucket:?} \
                 (s3:ListBucket, s3:GetObject, s3:PutObject, s3:DeleteObject)"
            ),
            Misconfig::ClockSkew => format!(
                "request time rejected by the store at {endpoint} ({said}): this machine's clock \
                 is off; correct it (NTP)"
            ),
        };
        let mut recorded = self.problem.lock();
        if recorded.as_ref().map(|(p, _)| *p) != Some(problem) {
            tracing::error!(url = %self.url, problem = %detail, "Tier 2 store refuses aof2; appends go on in Tier 0 and Tier 1, and uploads try again (backing off) until the store or the configuration is fixed");
        }
        *recorded = Some((problem, detail.clone()));
        detail
    }

    /// The store's last answer was not a refusal of the configuration (`accepted`: it was a
    /// success).
    fn clear_problem(&self, accepted: bool) {
        let mut recorded = self.problem.lock();
        if recorded.take().is_some() && accepted {
            tracing::info!(url = %self.url, "Tier 2 store accepts aof2's requests again");
        }
    }

    /// One request that checks the bucket exists and takes the credentials (a LIST of at most
    /// one key under the prefix), waiting at most `wait`. `Err(Tier2Misconfigured)` if the store
    /// refuses aof2; an outage (no answer in time, a connection refused, a 5xx) is only logged:
    /// Tier 2 catches up once the store is back. Only S3 stores are checked.
    pub(crate) fn check_access(&self, wait: Duration) -> Result<()> {
        if self.lister.is_none() || self.breaker.admit().is_err() {
            return Ok(());
        }
        let timeout = self.timeout().min(wait);
        let Some(attempt) = self.list_one(timeout) else {
            return Ok(());
        };
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        match self.settle(attempt, timeout) {
            Settled::Misconfigured(detail) => Err(self.misconfigured(detail)),
            Settled::Failed(error) => {
                tracing::warn!(url = %self.url, %error, "Tier 2 store not reachable; opening without it (uploads catch up once it answers)");
                Ok(())
            }
            Settled::Done(()) | Settled::Refused(_) | Settled::Unsupported(_) => Ok(()),
        }
    }

    /// A LIST of at most one key under the store's `aof2/` prefix, within `timeout`: the
    /// cheapest request that proves the bucket and the credentials. `None` for stores without a
    /// paginated listing (local ones).
    fn list_one(&self, timeout: Duration) -> Option<Attempt<()>> {
        let lister = self.lister.clone()?;
        let prefix = format!("{}aof2/", self.prefix);
        Some(self.exec(
            async move {
                let options = object_store::list::PaginatedListOptions {
                    max_keys: Some(1),
                    ..Default::default()
                };
                lister
                    .list_paginated(Some(&prefix), options)
                    .await
                    .map(|_| ())
            },
            timeout,
        ))
    }

    /// The time limit of one request.
    fn timeout(&self) -> Duration {
        self.config.request_timeout
    }

    /// The time limit of a transfer of `bytes` (an object uploaded or downloaded whole, or the
    /// parts of a multipart upload): one request's per `part_bytes`, at least one. The time a
    /// transfer takes grows with its size: with one request's limit, an object too big to cross
    /// the link within it would fail every attempt, forever.
    fn transfer_timeout(&self, bytes: u64) -> Duration {
        let parts = bytes.div_ceil(self.config.part_bytes as u64).max(1);
        self.timeout()
            .saturating_mul(u32::try_from(parts).unwrap_or(u32::MAX))
    }

    /// PUT `bytes` at `key`; with `create`, only if the key is absent (`Err(Refusal::Exists)`
    /// otherwise).
    pub(crate) fn put(
        &self,
        key: &str,
        bytes: Vec<u8>,
        create: bool,
    ) -> Result<std::result::Result<(), Refusal>> {
        self.put_with(key, bytes, create, None)
    }

    /// Object metadata holding the object's CRC-32C, where the store keeps metadata (S3,
    /// memory; a local directory cannot).
    fn checksum_attributes(&self, crc: Option<u32>) -> object_store::Attributes {
        match crc {
            Some(crc) if self.metadata => [(
                object_store::Attribute::Metadata(CRC_METADATA.into()),
                format!("{crc:08x}"),
            )]
            .into_iter()
            .collect(),
            _ => object_store::Attributes::new(),
        }
    }

    fn put_with(
        &self,
        key: &str,
        bytes: Vec<u8>,
        create: bool,
        crc: Option<u32>,
    ) -> Result<std::result::Result<(), Refusal>> {
        self.put_body(key, PutPayload::from(bytes), create, crc)
    }

    fn put_body(
        &self,
        key: &str,
        payload: PutPayload,
        create: bool,
        crc: Option<u32>,
    ) -> Result<std::result::Result<(), Refusal>> {
        let attributes = self.checksum_attributes(crc);
        let path = ObjectPath::from(key);
        let mode = if create {
            PutMode::Create
        } else {
            PutMode::Overwrite
        };
        let timeout = self.transfer_timeout(payload.content_length() as u64);
        self.call("PUT", key, timeout, move |store| {
            let path = path.clone();
            let payload = payload.clone();
            let opts = PutOptions {
                mode: mode.clone(),
                attributes: attributes.clone(),
                ..Default::default()
            };
            async move { store.put_opts(&path, payload, opts).await.map(|_| ()) }
        })
    }

    /// GET a whole small object (a catalog, a writer claim) into memory. Segment objects are
    /// streamed into files instead ([`Self::get_into`]).
    pub(crate) fn get(&self, key: &str) -> Result<std::result::Result<Vec<u8>, Refusal>> {
        let path = ObjectPath::from(key);
        let got = self.call("GET", key, self.timeout(), move |store| {
            let path = path.clone();
            async move {
                let r = store.get(&path).await?;
                r.bytes().await.map(|b| b.to_vec())
            }
        })?;
        if let Ok(bytes) = &got {
            self.counters
                .download_bytes
                .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        }
        Ok(got)
    }

    /// GET the whole object at `key`, `len` bytes by the caller's record, into `file` from
    /// offset 0, without holding it in memory: the bytes go through a buffer of
    /// `DOWNLOAD_CHUNK_BYTES` into the file as they arrive, and their CRC-32C is computed on the
    /// way. An attempt's time limit covers the whole transfer and grows with `len`
    /// ([`Self::transfer_timeout`]); an attempt that receives nothing for a request's time limit
    /// is given up before it. An attempt cut off mid-stream (a dropped connection, a time limit)
    /// is retried from offset 0 like any failed request: writes are made inside the attempt, so
    /// none of an attempt that was cut off lands among the next one's. A manager that closes
    /// gives the download up as any request (see `exec`); the attempt then stops at its next
    /// chunk. The file is neither synced nor truncated: the caller checks what
    /// came back before it keeps the file.
    pub(crate) fn get_into(
        &self,
        key: &str,
        file: Arc<std::fs::File>,
        len: u64,
    ) -> Result<std::result::Result<Streamed, Refusal>> {
        let path = ObjectPath::from(key);
        // Set once this call returns: an attempt the caller gave up on (the manager closing)
        // stops at its next chunk instead of streaming on until its time limit.
        let abandoned = Arc::new(AtomicBool::new(false));
        let given_up = abandoned.clone();
        let idle_timeout = self.timeout();
        let got = self.call("GET", key, self.transfer_timeout(len), move |store| {
            stream_into(
                store,
                path.clone(),
                file.clone(),
                len,
                idle_timeout,
                given_up.clone(),
            )
        });
        abandoned.store(true, Ordering::Release);
        if let Ok(Ok(Streamed::Whole { .. })) = &got {
            self.counters
                .download_bytes
                .fetch_add(len, Ordering::Relaxed);
        }
        got
    }

    /// GET a byte range of an object; exactly `range` comes back or the call fails.
    pub(crate) fn get_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>> {
        let path = ObjectPath::from(key);
        let want = range.end - range.start;
        let r = range.clone();
        let got = self.call("GET range of", key, self.timeout(), move |store| {
            let path = path.clone();
            let r = r.clone();
            async move {
                match store.get_range(&path, r.clone()).await {
                    Ok(bytes) => Ok(Ranged::Bytes(bytes.to_vec())),
                    // A range that starts past the end of the object is refused (HTTP 416, a
                    // local store's "invalid range"), not answered short. If the object does end
                    // before the range, the store has answered: the object was cut short. Not a
                    // failed request to retry (nor one that opens the breaker).
                    Err(e) if !matches!(e, object_store::Error::NotFound { .. }) => {
                        match store.head(&path).await {
                            Ok(meta) if meta.size < r.end => Ok(Ranged::PastEnd(meta.size)),
                            _ => Err(e),
                        }
                    }
                    Err(e) => Err(e),
                }
            }
        })?;
        self.counters.ranged_gets.fetch_add(1, Ordering::Relaxed);
        let at = || format!("{}/{key} bytes {}..{}", self.url, range.start, range.end);
        match got {
            Ok(Ranged::Bytes(bytes)) if bytes.len() as u64 == want => {
                self.counters
                    .download_bytes
                    .fetch_add(want, Ordering::Relaxed);
                Ok(bytes)
            }
            Ok(Ranged::Bytes(bytes)) => Err(Error::corruption(
                at(),
                format!("the store returned {} bytes", bytes.len()),
            )),
            Ok(Ranged::PastEnd(size)) => Err(Error::corruption(
                at(),
                format!("the object is {size} bytes: it ends before the range"),
            )),
            Err(_) => Err(Error::NotFound(format!(
                "Tier 2 object {key} in {} (a segment the manifest says is there)",
                self.url
            ))),
        }
    }

    /// HEAD an object: its size, and the CRC-32C in its metadata where the store keeps one.
    pub(crate) fn head(
        &self,
        key: &str,
    ) -> Result<std::result::Result<(u64, Option<u32>), Refusal>> {
        let path = ObjectPath::from(key);
        self.call("HEAD", key, self.timeout(), move |store| {
            let path = path.clone();
            async move {
                let options = object_store::GetOptions {
                    head: true,
                    ..Default::default()
                };
                let got = store.get_opts(&path, options).await?;
                let crc = got
                    .attributes
                    .get(&object_store::Attribute::Metadata(CRC_METADATA.into()))
                    .and_then(|v| u32::from_str_radix(v, 16).ok());
                Ok((got.meta.size, crc))
            }
        })
    }

    /// DELETE `key` (absent is fine).
    pub(crate) fn delete(&self, key: &str) -> Result<()> {
        let path = ObjectPath::from(key);
        self.call("DELETE", key, self.timeout(), move |store| {
            let path = path.clone();
            async move { store.delete(&path).await }
        })?
        .or_else(|refusal| match refusal {
            Refusal::NotFound => Ok(()),
            Refusal::Exists => Ok(()),
        })
    }

    /// Keys under `prefix` (a "directory" ending in '/').
    pub(crate) fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let path = ObjectPath::from(prefix.trim_end_matches('/'));
        let got = self.call("LIST", prefix, self.timeout(), move |store| {
            let path = path.clone();
            async move {
                use futures::TryStreamExt;
                let metas: Vec<object_store::ObjectMeta> =
                    store.list(Some(&path)).try_collect().await?;
                Ok(metas.into_iter().map(|m| m.location.to_string()).collect())
            }
        })?;
        Ok(got.unwrap_or_default())
    }

    /// Upload the file at `path` (`len` bytes) to `key`: one PUT below the multipart threshold,
    /// parts above it. Returns the CRC-32C of the object.
    pub(crate) fn upload_file(&self, key: &str, path: &Path, len: u64) -> Result<u32> {
        let started = Instant::now();
        let file = std::fs::File::open(path).context(|| format!("open {}", path.display()))?;
        let actual = file
            .metadata()
            .context(|| format!("stat {}", path.display()))?
            .len();
        if actual != len {
            return Err(Error::corruption(
                path.display().to_string(),
                format!("file is {actual} bytes, the manifest says {len}"),
            ));
        }
        // The body is the file's pages, mapped (no copy into fresh memory): a Tier 1 file is
        // never written after its rename, and an unlink leaves the mapping valid.
        let mapping = crate::segment::mmap::Mapping::map_read(&file, path, len)
            .context(|| format!("map {}", path.display()))?;
        let body = bytes::Bytes::from_owner(MappedFile { mapping, len });
        let crc = crc32c(&body);
        if len < self.config.multipart_threshold {
            self.put_body(key, PutPayload::from(body), false, Some(crc))?
                .map_err(|_| unavailable(format!("PUT {key}: refused")))?;
        } else {
            self.upload_parts(key, body, crc)?;
        }
        let c = &self.counters;
        c.uploads.fetch_add(1, Ordering::Relaxed);
        c.upload_bytes.fetch_add(len, Ordering::Relaxed);
        c.upload_ns
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        Ok(crc)
    }

    /// Upload `body` in parts of `part_bytes`, two in flight.
    ///
    /// An upload that fails or runs out of time is aborted before the attempt ends (S3 keeps,
    /// and bills, the parts of an upload that is neither completed nor aborted, forever): the
    /// parts and the completion run under the attempt's time limit, the abort after it with a
    /// request's time limit of its own.
    fn upload_parts(&self, key: &str, body: bytes::Bytes, crc: u32) -> Result<()> {
        let part = self.config.part_bytes;
        // The checksum goes with the object's metadata.
        let attributes = self.checksum_attributes(Some(crc));
        let request_timeout = self.timeout();
        // The time limit covers the whole upload: the transfer's (one request's worth per part)
        // and one request's for the creation, then one for an abort.
        let upload_timeout = self
            .transfer_timeout(body.len() as u64)
            .saturating_add(request_timeout);
        let attempt_timeout = upload_timeout.saturating_add(request_timeout);
        let object = ObjectPath::from(key);
        let what = key.to_string();
        self.call("multipart PUT", key, attempt_timeout, move |store| {
            let object = object.clone();
            let body = body.clone();
            let what = what.clone();
            let opts = object_store::PutMultipartOptions {
                attributes: attributes.clone(),
                ..Default::default()
            };
            async move {
                let mut upload =
                    tokio::time::timeout(request_timeout, store.put_multipart_opts(&object, opts))
                        .await
                        .map_err(|_| timed_out("CreateMultipartUpload", request_timeout))??;
                let sent = tokio::time::timeout(
                    upload_timeout.saturating_sub(request_timeout),
                    send_parts(upload.as_mut(), &body, part, request_timeout),
                )
                .await;
                let error = match sent {
                    Ok(Ok(())) => return Ok(()),
                    Ok(Err(e)) => e,
                    Err(_) => timed_out("multipart upload", upload_timeout),
                };
                // The parts in flight were dropped with the timed-out future (their requests
                // cancelled); an UploadPart that still lands is refused after the abort.
                match tokio::time::timeout(request_timeout, upload.abort()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(abort)) => tracing::warn!(key = %what, error = %abort, "aborting a failed multipart upload failed; its parts stay in the bucket until a lifecycle rule removes them"),
                    Err(_) => tracing::warn!(key = %what, "aborting a failed multipart upload timed out; its parts may stay in the bucket until a lifecycle rule removes them"),
                }
                Err(error)
            }
        })?
        .map_err(|_| unavailable(format!("multipart PUT {key}: refused")))
    }

    // ------------------------------------------------------------------ logs

    /// Claim the writer epoch of log `claim.name` for the root `root_id` (see the module docs).
    pub(crate) fn claim(&self, claim: &LogClaim, root_id: u128, take_over: bool) -> Result<u64> {
        // One claim per log handle at a time (the open and the uploader may both try).
        let _one = claim.claiming.lock();
        if claim.epoch() > 0 {
            return Ok(claim.epoch());
        }
        // A create can lose to a request of this same root that landed late (a process killed
        // while claiming): then claim the next epoch.
        for _ in 0..3 {
            if let Some(epoch) = self.claim_once(claim, root_id, take_over)? {
                return Ok(epoch);
            }
        }
        Err(Error::Fenced {
            log: claim.name.clone(),
            detail: "the writer claim keeps losing races; retry the open".into(),
        })
    }

    /// One claim attempt: `Ok(None)` if the create lost to a claim of this same root.
    fn claim_once(&self, claim: &LogClaim, root_id: u128, take_over: bool) -> Result<Option<u64>> {
        let name = claim.name.as_str();
        let latest = self.newest_claim(name)?;
        if latest.is_none() && claim.in_tier2 {
            // A writer never deletes its own newest claim: this is not the store the log's
            // segments went to. Claiming here would publish a catalog listing objects this store
            // does not hold, and split the log's segments between two stores.
            return Err(Error::InvalidConfig(format!(
                "log {name:?} has segments in Tier 2, but {} holds no writer claim of it: they \
                 were uploaded to another store or prefix; open the log with that one",
                self.url
            )));
        }
        if let Some(epoch) = latest {
            let key = self.claim_key(name, epoch);
            let bytes = self.get(&key)?.map_err(|_| Error::Fenced {
                log: name.to_string(),
                detail: format!("writer claim {key} vanished while it was read; retry the open"),
            })?;
            let holder = Claim::decode(&bytes).map_err(|e| {
                Error::corruption(format!("{}/{key}", self.url), format!("writer claim: {e}"))
            })?;
            if holder.log_id != claim.log_id {
                return Err(Error::Fenced {
                    log: name.to_string(),
                    detail: format!(
                        "{} holds a different log named {name:?} (log id {:032x}, this one is \
                         {:032x}); restore that log or use another Tier 2 prefix",
                        self.url, holder.log_id, claim.log_id
                    ),
                });
            }
            if holder.root_id != root_id && take_over {
                self.check_no_fork(claim)?;
            }
            if holder.root_id != root_id && !take_over {
                return Err(Error::Fenced {
                    log: name.to_string(),
                    detail: format!(
                        "root {:032x} holds the writer claim (epoch {epoch}, claimed at unix ms \
                         {}); a second writer is refused. If that writer is gone for good, open \
                         with take-over",
                        holder.root_id, holder.claimed_ms
                    ),
                });
            }
        }
        let epoch = latest.unwrap_or(0) + 1;
        let mine = Claim {
            epoch,
            root_id,
            log_id: claim.log_id,
            claimed_ms: sys::now_ms(),
        };
        let key = self.claim_key(name, epoch);
        match self.put(&key, mine.encode().to_vec(), true)? {
            Ok(()) => {
                claim.epoch.store(epoch, Ordering::Release);
                tracing::info!(log = name, epoch, "claimed the Tier 2 writer epoch");
                // Keep the previous claim (who held the log before); older ones only lengthen
                // the listing every publication reads.
                for old in self.list(&self.claims_prefix(name)).unwrap_or_default() {
                    if epoch_of(&old).is_some_and(|e| e + 1 < epoch) {
                        let _ = self.delete(&old);
                    }
                }
                Ok(Some(epoch))
            }
            Err(_) => {
                let winner = self
                    .get(&key)?
                    .ok()
                    .and_then(|bytes| Claim::decode(&bytes).ok());
                match winner {
                    Some(w) if w.root_id == root_id && w.log_id == claim.log_id => Ok(None),
                    _ => Err(Error::Fenced {
                        log: name.to_string(),
                        detail: format!("another writer claimed epoch {epoch} at the same time"),
                    }),
                }
            }
        }
    }

    /// Before a root takes a log over from another root: refuse if the store's newest catalog
    /// holds records this root's copy of the log does not (the writer uploaded more after this
    /// copy was restored). Continuing from here would publish different records under sequences
    /// readers of that catalog have seen.
    fn check_no_fork(&self, claim: &LogClaim) -> Result<()> {
        let Some(catalog) = self.latest_catalog(&claim.name)? else {
            return Ok(());
        };
        let local = &claim.local;
        let end = |s: &CatalogSegment| s.sealed.base_seq + s.sealed.record_count;
        let unknown = catalog
            .segments
            .iter()
            .any(|s| end(s) > local.retired_below && !local.segments.contains(s));
        let local_end = local
            .segments
            .iter()
            .map(end)
            .max()
            .unwrap_or(0)
            .max(local.retired_below);
        if unknown || catalog.end_seq() > local_end {
            return Err(Error::Fenced {
                log: claim.name.clone(),
                detail: format!(
                    "{} holds records {}..{} of this log (catalog of epoch {}), and this root's \
                     copy, which holds Tier 2's records up to {local_end}, does not hold them \
                     all: the writer uploaded more after this copy was restored. Taking the log \
                     over would publish different records under the same sequences; restore the \
                     log again (into a root without it)",
                    self.url,
                    catalog.first_seq(),
                    catalog.end_seq(),
                    catalog.epoch
                ),
            });
        }
        Ok(())
    }

    /// The highest writer epoch claimed for log `name`.
    fn newest_claim(&self, name: &str) -> Result<Option<u64>> {
        Ok(self
            .list(&self.claims_prefix(name))?
            .iter()
            .filter_map(|k| epoch_of(k))
            .max())
    }

    /// The newest catalog of log `name` (highest epoch, then generation), if any.
    pub(crate) fn latest_catalog(&self, name: &str) -> Result<Option<Catalog>> {
        for _ in 0..3 {
            let Some((epoch, generation)) = self
                .list(&self.catalogs_prefix(name))?
                .iter()
                .filter_map(|k| catalog_version_of(k))
                .max()
            else {
                return Ok(None);
            };
            let key = self.catalog_key(name, epoch, generation);
            match self.get(&key)? {
                Ok(bytes) => {
                    let at = || format!("{}/{key}", self.url);
                    let catalog = Catalog::decode(&bytes)
                        .map_err(|e| Error::corruption(at(), format!("catalog: {e}")))?;
                    if catalog.name != name {
                        return Err(Error::corruption(
                            at(),
                            format!("catalog of log {:?} under {name:?}", catalog.name),
                        ));
                    }
                    if (catalog.epoch, catalog.generation) != (epoch, generation) {
                        return Err(Error::corruption(
                            at(),
                            format!(
                                "catalog of epoch {} generation {} under the key of epoch \
                                 {epoch} generation {generation}",
                                catalog.epoch, catalog.generation
                            ),
                        ));
                    }
                    return Ok(Some(catalog));
                }
                // Deleted by its writer between the list and the get (it keeps the previous
                // generation, so this takes two publications in between): list again.
                Err(_) => continue,
            }
        }
        Err(unavailable(format!(
            "the catalog of log {name:?} in {} keeps changing; retry",
            self.url
        )))
    }

    /// Publish `segments` as the catalog of `claim`'s epoch, unless a newer writer claimed the
    /// log (then the claim is marked fenced and `Error::Fenced` returned).
    /// `build` gives what the catalog says; it runs under the claim's publication lock, so of
    /// two concurrent publications the later-built catalog is the one left in the store. The
    /// caller sets `claim.dirty` first and `build` clears it: a publication that finds it clear
    /// once it holds the lock has nothing new to publish.
    pub(crate) fn publish_catalog(
        &self,
        claim: &LogClaim,
        build: impl FnOnce() -> CatalogContent,
    ) -> Result<()> {
        let epoch = claim.epoch();
        if epoch == 0 {
            return Err(unavailable(format!(
                "log {:?} has no Tier 2 writer claim yet",
                claim.name
            )));
        }
        let mut generation = claim.generation.lock();
        if !claim.dirty.load(Ordering::Acquire) {
            // A publication that started while this one waited already covers it (uploads
            // finishing together publish once).
            return Ok(());
        }
        let newest = self.newest_claim(&claim.name)?.unwrap_or(0);
        if newest > epoch {
            let detail = format!(
                "another writer claimed epoch {newest} of this log in {} (this writer holds \
                 epoch {epoch}); this writer stops",
                self.url
            );
            claim.fence(detail.clone());
            return Err(Error::Fenced {
                log: claim.name.clone(),
                detail,
            });
        }
        *generation += 1;
        let content = build();
        let catalog = Catalog {
            epoch,
            generation: *generation,
            log_id: claim.log_id,
            name: claim.name.clone(),
            created_ms: content.created_ms,
            next_seq: content.next_seq,
            last_timestamp_ms: content.last_timestamp_ms,
            segments: content.segments,
        };
        let key = self.catalog_key(&claim.name, epoch, *generation);
        let stored = self
            .put(&key, catalog.encode(), false)
            .and_then(|put| put.map_err(|_| unavailable(format!("PUT {key}: refused"))));
        if let Err(e) = stored {
            // Marked before the lock is released: a waiter never sees a failed publication as
            // done (`LogClaim::is_published`).
            claim.dirty.store(true, Ordering::Release);
            return Err(e);
        }
        claim.published_first.store(
            catalog
                .segments
                .first()
                .map_or(u64::MAX, |s| s.sealed.segment_id),
            Ordering::Release,
        );
        self.counters
            .catalogs_published
            .fetch_add(1, Ordering::Relaxed);
        // Older catalogs are superseded: readers take the newest. The previous generation stays,
        // for a reader that listed before this publication and reads it now. Generations that
        // landed late (see the module docs) go here too.
        // Best effort: what is left now goes with a later publication.
        let previous = (epoch, *generation - 1);
        for old in self
            .list(&self.catalogs_prefix(&claim.name))
            .unwrap_or_default()
        {
            if catalog_version_of(&old).is_some_and(|v| v < previous) {
                let _ = self.delete(&old);
            }
        }
        Ok(())
    }
}

/// What a writer's catalog says of its log (`Tier2::publish_catalog` adds the epoch and name).
#[derive(Debug)]
pub(crate) struct CatalogContent {
    pub(crate) created_ms: u64,
    /// One past the last listed record; where the log continues if no segment is listed.
    pub(crate) next_seq: u64,
    /// Newest timestamp of the records below `next_seq`.
    pub(crate) last_timestamp_ms: u64,
    pub(crate) segments: Vec<CatalogSegment>,
}

/// What a root's copy of a log holds of Tier 2 (its manifest when the log was opened).
#[derive(Debug, Default)]
pub(crate) struct LocalCopy {
    /// Records below it were retired.
    pub(crate) retired_below: u64,
    /// Segments recorded as uploaded, oldest first.
    pub(crate) segments: Vec<CatalogSegment>,
}

/// One log's standing in Tier 2: its writer epoch and whether it was fenced.
#[derive(Debug)]
pub(crate) struct LogClaim {
    pub(crate) name: String,
    pub(crate) log_id: u128,
    /// The manifest recorded segments in Tier 2 when the log was opened: its store holds a
    /// claim of the log.
    in_tier2: bool,
    /// What this root's copy of the log held of Tier 2 when it was opened.
    local: LocalCopy,
    epoch: AtomicU64,
    fenced: AtomicBool,
    fence_detail: Mutex<Option<String>>,
    /// Catalog publications of this epoch; held while one is published (one at a time).
    generation: Mutex<u64>,
    /// Held while the claim is being made.
    claiming: Mutex<()>,
    /// Oldest segment the last published catalog lists (`u64::MAX`: none, or nothing published).
    pub(crate) published_first: AtomicU64,
    /// Set when the catalog is behind the manifest: before a segment's upload is recorded in
    /// memory, and again when a publication fails.
    pub(crate) dirty: AtomicBool,
}

impl LogClaim {
    pub(crate) fn new(name: &str, log_id: u128, local: LocalCopy) -> Self {
        LogClaim {
            name: name.to_string(),
            log_id,
            in_tier2: !local.segments.is_empty(),
            local,
            epoch: AtomicU64::new(0),
            fenced: AtomicBool::new(false),
            fence_detail: Mutex::new(None),
            generation: Mutex::new(0),
            claiming: Mutex::new(()),
            published_first: AtomicU64::new(u64::MAX),
            dirty: AtomicBool::new(true),
        }
    }

    /// The claimed epoch, 0 before the claim succeeded.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    pub(crate) fn fence(&self, detail: String) {
        tracing::error!(log = %self.name, %detail, "log fenced");
        self.fence_detail.lock().get_or_insert(detail);
        self.fenced.store(true, Ordering::Release);
    }

    /// Whether the catalog in the store lists everything recorded so far: no publication is
    /// pending (`dirty`) or on its way (the publication lock is free).
    pub(crate) fn is_published(&self) -> bool {
        self.generation
            .try_lock()
            .is_some_and(|_publishing| !self.dirty.load(Ordering::Acquire))
    }

    /// `Error::Fenced` if another writer took the log over.
    pub(crate) fn check(&self) -> Result<()> {
        if self.fenced.load(Ordering::Acquire) {
            return Err(Error::Fenced {
                log: self.name.clone(),
                detail: self
                    .fence_detail
                    .lock()
                    .clone()
                    .unwrap_or_else(|| "another writer owns it".into()),
            });
        }
        Ok(())
    }
}

/// A mapped Tier 1 file as an upload body.
struct MappedFile {
    mapping: crate::segment::mmap::Mapping,
    len: u64,
}

impl AsRef<[u8]> for MappedFile {
    fn as_ref(&self) -> &[u8] {
        self.mapping
            .slice(0, self.len)
            .expect("the mapping covers the file")
    }
}

/// What a ranged GET found.
enum Ranged {
    Bytes(Vec<u8>),
    /// The store refused the range, and the object (this many bytes) ends before it.
    PastEnd(u64),
}

/// A segment's Tier 1 file in Tier 2, read with ranged GETs.
#[derive(Debug)]
pub(crate) struct RemoteObject {
    tier2: Arc<Tier2>,
    key: String,
    len: u64,
}

impl RangeRead for RemoteObject {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let bytes = self
            .tier2
            .get_range(&self.key, offset..offset + buf.len() as u64)?;
        buf.copy_from_slice(&bytes);
        Ok(())
    }
}

/// The Tier 2 copy of one segment. Opened on first read (three ranged GETs: header, tail, frame
/// index), then each frame read is one ranged GET, single-flight per frame.
#[derive(Debug)]
pub struct Tier2Copy {
    pub(crate) info: Tier2Info,
    pub(crate) key: String,
    tier2: Arc<Tier2>,
    cache: Arc<FrameCache>,
    opened: Mutex<Option<Arc<Tier1Segment>>>,
}

impl Tier2Copy {
    pub(crate) fn new(
        tier2: Arc<Tier2>,
        name: &str,
        log_id: u128,
        info: Tier2Info,
        cache: Arc<FrameCache>,
    ) -> Self {
        Tier2Copy {
            key: tier2.segment_key(name, log_id, &info),
            info,
            tier2,
            cache,
            opened: Mutex::new(None),
        }
    }

    /// The object's frame index and frames (opened once; concurrent first readers share it).
    pub(crate) fn segment(&self) -> Result<Arc<Tier1Segment>> {
        let mut opened = self.opened.lock();
        if let Some(s) = opened.as_ref() {
            return Ok(s.clone());
        }
        let source = RemoteObject {
            tier2: self.tier2.clone(),
            key: self.key.clone(),
            len: self.info.tier1.file_len,
        };
        let name = format!("{}/{}", self.tier2.url(), self.key);
        let segment = Arc::new(Tier1Segment::open_remote(
            Arc::new(source),
            name.into(),
            self.info.tier1,
            self.cache.clone(),
        )?);
        *opened = Some(segment.clone());
        Ok(segment)
    }

    /// The opened remote segment, if a read opened it.
    pub(crate) fn opened(&self) -> Option<Arc<Tier1Segment>> {
        self.opened.lock().clone()
    }

    /// Check that the object is in the store with its recorded length, and its recorded CRC where
    /// the store keeps it in the object's metadata, without downloading it (one HEAD).
    pub(crate) fn check_present(&self) -> Result<()> {
        let (size, crc) = self.tier2.head(&self.key)?.map_err(|_| {
            Error::NotFound(format!(
                "Tier 2 object {} in {} (a segment the catalog lists)",
                self.key,
                self.tier2.url()
            ))
        })?;
        if size != self.info.tier1.file_len || crc.is_some_and(|crc| crc != self.info.object_crc) {
            return Err(Error::corruption(
                format!("{}/{}", self.tier2.url(), self.key),
                format!(
                    "object of {size} bytes (checksum in its metadata {}) does not match its \
                     recorded length {} and CRC {:#010x}",
                    crc.map_or("none".to_string(), |c| format!("{c:#010x}")),
                    self.info.tier1.file_len,
                    self.info.object_crc
                ),
            ));
        }
        Ok(())
    }

    /// Download the whole object into a new file at `path` (restore, fetch back into Tier 1),
    /// streamed through a bounded buffer: written to `<path>.tmp` as it arrives, checked
    /// against its recorded length and CRC, then synced and renamed into place. A damaged or
    /// short object is `Corruption` naming its key; on any failure no temporary file is left.
    /// Returns the bytes downloaded.
    pub(crate) fn download_to(&self, path: &Path) -> Result<u64> {
        let tmp = sys::tmp_path(path);
        let result = self.download_via(&tmp, path);
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    fn download_via(&self, tmp: &Path, path: &Path) -> Result<u64> {
        let len = self.info.tier1.file_len;
        let file =
            Arc::new(std::fs::File::create(tmp).context(|| format!("create {}", tmp.display()))?);
        let streamed = self
            .tier2
            .get_into(&self.key, file.clone(), len)?
            .map_err(|_| {
                Error::NotFound(format!(
                    "Tier 2 object {} in {} (a segment the catalog lists)",
                    self.key,
                    self.tier2.url()
                ))
            })?;
        let (found_len, crc) = match streamed {
            Streamed::Whole { crc } => (len, Some(crc)),
            Streamed::WrongLength(found) => (found, None),
            Streamed::Local(e) => return Err(Error::io(format!("write {}", tmp.display()), e)),
        };
        if found_len != len || crc != Some(self.info.object_crc) {
            return Err(Error::corruption(
                format!("{}/{}", self.tier2.url(), self.key),
                format!(
                    "object of {found_len} bytes (CRC {}) does not match its recorded length \
                     {len} and CRC {:#010x}",
                    crc.map_or("not computed".to_string(), |c| format!("{c:#010x}")),
                    self.info.object_crc
                ),
            ));
        }
        sys::commit_tmp(&file, tmp, path)?;
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_bucket_and_prefix() {
        assert_eq!(split_url("s3://b", 5), ("b".into(), String::new()));
        assert_eq!(split_url("s3://b/", 5), ("b".into(), String::new()));
        assert_eq!(split_url("s3://b/x/y/", 5), ("b".into(), "x/y/".into()));
    }

    #[test]
    fn memory_store_round_trip_and_create_only_once() {
        let t2 = Tier2::open(&Tier2Config::new("memory://")).unwrap();
        assert_eq!(t2.put("a/b", b"one".to_vec(), true).unwrap(), Ok(()));
        assert_eq!(
            t2.put("a/b", b"two".to_vec(), true).unwrap(),
            Err(Refusal::Exists)
        );
        assert_eq!(t2.get("a/b").unwrap().unwrap(), b"one");
        assert_eq!(t2.get_range("a/b", 1..3).unwrap(), b"ne");
        assert_eq!(t2.get("a/c").unwrap(), Err(Refusal::NotFound));
        assert_eq!(t2.list("a/").unwrap(), vec!["a/b".to_string()]);
        t2.delete("a/b").unwrap();
        t2.delete("a/b").unwrap();
        assert_eq!(t2.get("a/b").unwrap(), Err(Refusal::NotFound));
    }

    /// object_store keeps the status and the S3 error body in the error's text; a missing bucket
    /// differs from a missing object only by its code there.
    #[test]
    fn answers_that_only_the_configuration_can_fix_are_told_apart() {
        let source = |text: &str| -> Box<dyn std::error::Error + Send + Sync> { text.into() };
        let not_found = |body: &str| object_store::Error::NotFound {
            path: "k".into(),
            source: source(&format!(
                "Server returned non-2xx status code: 404 Not Found: {body}"
            )),
        };
        let code = |c: &str| format!("<Error><Code>{c}</Code><Message>m</Message></Error>");
        assert_eq!(
            classify(&not_found(&code("NoSuchKey"))),
            Answer::Refused(Refusal::NotFound)
        );
        assert_eq!(classify(&not_found("")), Answer::Refused(Refusal::NotFound));
        assert_eq!(
            classify(&not_found(&code("NoSuchBucket"))),
            Answer::Misconfigured(Misconfig::NoSuchBucket, "NoSuchBucket".into())
        );
        // A LIST's failure is `Generic`, with the status and body in its text.
        let list = |status: &str, body: &str| object_store::Error::Generic {
            store: "S3",
            source: source(&format!(
                "Error performing list request: Server returned non-2xx status code: {status}: {body}"
            )),
        };
        assert_eq!(
            classify(&list("403 Forbidden", &code("SignatureDoesNotMatch"))),
            Answer::Misconfigured(Misconfig::BadCredentials, "SignatureDoesNotMatch".into())
        );
        assert_eq!(
            classify(&list("403 Forbidden", &code("AccessDenied"))),
            Answer::Misconfigured(Misconfig::AccessDenied, "AccessDenied".into())
        );
        assert_eq!(
            classify(&list("401 Unauthorized", "")),
            Answer::Misconfigured(Misconfig::BadCredentials, "HTTP 401".into())
        );
        assert_eq!(
            classify(&list("503 Service Unavailable", &code("SlowDown"))),
            Answer::Failed
        );
        // A HEAD's 403 has no body.
        let denied = object_store::Error::PermissionDenied {
            path: "k".into(),
            source: source("403 Forbidden"),
        };
        assert_eq!(
            classify(&denied),
            Answer::Misconfigured(Misconfig::AccessDenied, "HTTP 403".into())
        );
        assert_eq!(
            classify(&list("403 Forbidden", &code("RequestTimeTooSkewed"))),
            Answer::Misconfigured(Misconfig::ClockSkew, "RequestTimeTooSkewed".into())
        );
        let refused = object_store::Error::Generic {
            store: "S3",
            source: source("error sending request: connection refused"),
        };
        assert_eq!(classify(&refused), Answer::Failed);
    }

    #[test]
    fn full_jitter_stays_under_the_cap() {
        let mut config = Tier2Config::new("memory://");
        config.backoff_base = Duration::from_millis(10);
        config.backoff_max = Duration::from_millis(40);
        let t2 = Tier2::open(&config).unwrap();
        for attempt in 0..20 {
            let cap = Duration::from_millis((10u64 << attempt.min(16)).min(40));
            assert!(t2.jitter(attempt) <= cap);
        }
    }
}
