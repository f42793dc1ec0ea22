//! A local S3 server for aof2's Tier 2 tests and benchmarks: s3s-fs served over real HTTP on
//! 127.0.0.1, with a fault-injecting layer in front of it. `crates/aof2/tests` use it through
//! `support::s3`, `aof2-bench` (workload W7) without faults.
//!
//! Contract:
//! - [`S3Server::start`] serves s3s-fs (objects live in a private tempdir) on an ephemeral port
//!   from its own tokio runtime, so it works from plain `#[test]`s and from `#[tokio::test]`s
//!   alike. Dropping the server stops the runtime, closes every connection and deletes the
//!   tempdir.
//! - Requests must be SigV4-signed with [`TEST_ACCESS_KEY`] / [`TEST_SECRET_KEY`] (s3s checks
//!   the signature: another secret gets `403 SignatureDoesNotMatch`, and while
//!   [`S3Server::revoke_credentials`] is on, every request gets `403 InvalidAccessKeyId`).
//!   Everything a client needs is in [`Tier2Target::options`]; nothing is read from the
//!   environment, so tests may run in parallel threads or processes.
//! - As on S3, a request for an object in a bucket that does not exist (never created with
//!   [`S3Server::bucket`], or removed with [`S3Server::remove_bucket`]) gets
//!   `404 NoSuchBucket`; s3s-fs alone would answer `NoSuchKey`, or create the bucket on a PUT.
//! - [`Faults`] sits between the TCP connection and s3s, so the object_store client sees the
//!   faults as real HTTP responses, closed connections and stalls, and requests that reach the
//!   store only after the client gave up on them ([`Faults::hold_next`]). All faults start off.
//! - If `AOF2_TEST_S3_ENDPOINT` is set (for example to a moto server started by
//!   `scripts/moto.sh`), no server is started: the handle points at that endpoint,
//!   [`S3Server::external`] returns true, fault setters panic and counters stay at zero. Name
//!   tests that need faults or counters `fault_*` so such a run can filter them out.
//! - The inspection helpers ([`S3Server::object_bytes`], [`S3Server::list_keys`], ...) bypass
//!   faults and counters, so they work during an outage and do not disturb assertions.
//!
//! Conditional writes: s3s-fs checks `If-None-Match` / `If-Match` and then writes, which is not
//! atomic. The fault layer therefore runs requests carrying either header one at a time, so
//! racing `PutMode::Create` calls have exactly one winner, as on real S3.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::TryStreamExt;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderName, IF_MATCH, IF_NONE_MATCH, RANGE};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ClientOptions, HeaderMap, HeaderValue, ObjectStore, ObjectStoreExt};
use s3s::auth::{S3Auth, SecretKey};
use s3s::service::{S3Service, S3ServiceBuilder};
use s3s::{HttpError, HttpResponse};

/// Access key accepted by the in-process server.
pub const TEST_ACCESS_KEY: &str = "aof2-test-access-key";
/// Secret key accepted by the in-process server.
pub const TEST_SECRET_KEY: &str = "aof2-test-secret-key";
/// Region every target is configured with.
pub const TEST_REGION: &str = "us-east-1";

/// Points the harness at an external S3 server instead of starting one, e.g.
/// `http://127.0.0.1:5123`. Plain `http://host:port` only; empty counts as unset.
pub const ENDPOINT_ENV: &str = "AOF2_TEST_S3_ENDPOINT";
/// Access key for the external server; default `testing`.
pub const ACCESS_KEY_ENV: &str = "AOF2_TEST_S3_ACCESS_KEY";
/// Secret key for the external server; default `testing`.
pub const SECRET_KEY_ENV: &str = "AOF2_TEST_S3_SECRET_KEY";

/// Requests carrying this header skip fault injection and counters (used by the inspection
/// helpers).
const BYPASS_HEADER: &str = "x-aof2-harness-bypass";

/// Worker threads of each server's runtime; the test machines have two cores.
const SERVER_WORKER_THREADS: usize = 2;

/// How long the external-mode bucket creation waits on the server.
const EXTERNAL_IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A running S3 server (or a handle on an external one). See the module docs.
#[derive(Debug)]
pub struct S3Server {
    endpoint: String,
    access_key: String,
    secret_key: String,
    /// While set, the in-process server refuses every key (see [`Self::revoke_credentials`]).
    revoked: Arc<AtomicBool>,
    faults: Arc<Faults>,
    /// Serves the in-process server and runs the inspection helpers. `None` only during drop.
    runtime: Option<tokio::runtime::Runtime>,
    /// s3s-fs root; `None` when external. Dropped after the runtime is shut down.
    root: Option<tempfile::TempDir>,
    /// Inspection clients, one per bucket, that send [`BYPASS_HEADER`].
    inspectors: Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
}

impl S3Server {
    /// Starts s3s-fs on `127.0.0.1:0`, or returns a handle on `AOF2_TEST_S3_ENDPOINT` when set.
    ///
    /// # Panics
    /// If the runtime, the tempdir or the listener cannot be created.
    pub fn start() -> S3Server {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(SERVER_WORKER_THREADS)
            .thread_name("aof2-test-s3")
            .enable_all()
            .build()
            .expect("build the S3 test server runtime");

        let external = std::env::var(ENDPOINT_ENV)
            .ok()
            .filter(|value| !value.is_empty());
        if let Some(endpoint) = external {
            let endpoint = endpoint.trim_end_matches('/').to_owned();
            assert!(
                endpoint.starts_with("http://"),
                "{ENDPOINT_ENV} must look like http://host:port, got {endpoint:?}"
            );
            return S3Server {
                endpoint,
                access_key: std::env::var(ACCESS_KEY_ENV).unwrap_or_else(|_| "testing".into()),
                secret_key: std::env::var(SECRET_KEY_ENV).unwrap_or_else(|_| "testing".into()),
                revoked: Arc::new(AtomicBool::new(false)),
                faults: Arc::new(Faults::new(true)),
                runtime: Some(runtime),
                root: None,
                inspectors: Mutex::new(HashMap::new()),
            };
        }

        let root = tempfile::tempdir().expect("create the s3s-fs root");
        let file_system = s3s_fs::FileSystem::new(root.path()).expect("open s3s-fs");
        let mut builder = S3ServiceBuilder::new(file_system);
        let revoked = Arc::new(AtomicBool::new(false));
        builder.set_auth(TestAuth {
            revoked: Arc::clone(&revoked),
        });
        let faults = Arc::new(Faults::new(false));
        let service = FaultService {
            s3: builder.build(),
            faults: Arc::clone(&faults),
            conditional_writes: Arc::new(tokio::sync::Mutex::new(())),
            root: root.path().to_path_buf(),
        };

        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("make the listener non-blocking");
        let address = listener.local_addr().expect("listener address");
        runtime.spawn(accept_connections(listener, service));

        S3Server {
            endpoint: format!("http://{address}"),
            access_key: TEST_ACCESS_KEY.into(),
            secret_key: TEST_SECRET_KEY.into(),
            revoked,
            faults,
            runtime: Some(runtime),
            root: Some(root),
            inspectors: Mutex::new(HashMap::new()),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        self.endpoint.clone()
    }

    /// True when running against `AOF2_TEST_S3_ENDPOINT` rather than the in-process server.
    pub fn external(&self) -> bool {
        self.root.is_none()
    }

    /// Fault controls and request counters. Setters panic when [`Self::external`].
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Creates bucket `name` if it does not exist yet and returns a target for its root.
    ///
    /// In-process this makes the s3s-fs bucket directory; externally it sends an unsigned
    /// `PUT /name` (moto accepts it, servers that insist on signatures will not).
    ///
    /// # Panics
    /// If `name` is not a valid bucket name or the bucket cannot be created.
    pub fn bucket(&self, name: &str) -> Tier2Target {
        assert!(
            is_valid_bucket_name(name),
            "{name:?} is not a valid S3 bucket name"
        );
        match &self.root {
            Some(root) => std::fs::create_dir_all(root.path().join(name))
                .unwrap_or_else(|error| panic!("create bucket directory {name}: {error}")),
            None => create_bucket_unsigned(&self.endpoint, name),
        }
        Tier2Target {
            url: format!("s3://{name}"),
            options: self.bucket_options(),
        }
    }

    /// Removes bucket `name` and everything in it, as if an operator deleted it: from then on
    /// requests for it get `404 NoSuchBucket`, until [`Self::bucket`] creates it again.
    ///
    /// # Panics
    /// When [`Self::external`], or if the bucket cannot be removed.
    pub fn remove_bucket(&self, name: &str) {
        let root = self
            .root
            .as_ref()
            .expect("buckets are removed from the in-process server only");
        assert!(is_valid_bucket_name(name), "{name:?} is not a bucket name");
        std::fs::remove_dir_all(root.path().join(name))
            .unwrap_or_else(|error| panic!("remove bucket directory {name}: {error}"));
        self.inspectors
            .lock()
            .expect("inspector cache lock")
            .remove(name);
    }

    /// While `on`, the in-process server knows no access key: every request (the inspection
    /// helpers' too) gets `403 InvalidAccessKeyId`, as when an operator deletes or deactivates
    /// the key a running process uses. Off again, the usual key works again.
    ///
    /// # Panics
    /// When [`Self::external`].
    pub fn revoke_credentials(&self, on: bool) {
        assert!(
            !self.external(),
            "credentials are revoked on the in-process server only"
        );
        self.revoked.store(on, Ordering::SeqCst);
    }

    /// A target for bucket `name` signed with `secret_key` instead of the server's secret (the
    /// bucket is not created).
    pub fn target_with_secret(&self, name: &str, secret_key: &str) -> Tier2Target {
        let mut target = Tier2Target {
            url: format!("s3://{name}"),
            options: self.bucket_options(),
        };
        for (key, value) in &mut target.options {
            if key == "aws_secret_access_key" {
                *value = secret_key.to_owned();
            }
        }
        target
    }

    /// A target for bucket `name` without creating it: requests for objects in it get
    /// `404 NoSuchBucket` (as long as nothing else creates it).
    pub fn missing_bucket(&self, name: &str) -> Tier2Target {
        assert!(
            is_valid_bucket_name(name),
            "{name:?} is not a valid S3 bucket name"
        );
        Tier2Target {
            url: format!("s3://{name}"),
            options: self.bucket_options(),
        }
    }

    fn bucket_options(&self) -> Vec<(String, String)> {
        vec![
            ("aws_endpoint".into(), self.endpoint.clone()),
            ("allow_http".into(), "true".into()),
            ("aws_access_key_id".into(), self.access_key.clone()),
            ("aws_secret_access_key".into(), self.secret_key.clone()),
            ("aws_region".into(), TEST_REGION.into()),
            ("aws_virtual_hosted_style_request".into(), "false".into()),
            ("aws_conditional_put".into(), "etag".into()),
        ]
    }

    /// The object's bytes, or `None` if it does not exist. Bypasses faults and counters.
    pub fn object_bytes(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let store = self.inspector(bucket);
        let path = Path::from(key);
        self.block_on(async move {
            match store.get(&path).await {
                Ok(result) => Some(result.bytes().await.expect("read object body").to_vec()),
                Err(object_store::Error::NotFound { .. }) => None,
                Err(error) => panic!("inspect object: {error}"),
            }
        })
    }

    /// Writes an object behind the client's back (e.g. to corrupt it). Bypasses faults and
    /// counters.
    pub fn put_object(&self, bucket: &str, key: &str, bytes: Vec<u8>) {
        let store = self.inspector(bucket);
        let path = Path::from(key);
        self.block_on(async move { store.put(&path, bytes.into()).await.map(drop) })
            .unwrap_or_else(|error| panic!("put object {bucket}/{key}: {error}"));
    }

    /// Deletes an object behind the client's back; deleting a missing object is not an
    /// error. Bypasses faults and counters.
    pub fn delete_object(&self, bucket: &str, key: &str) {
        let store = self.inspector(bucket);
        let path = Path::from(key);
        self.block_on(async move { store.delete(&path).await })
            .unwrap_or_else(|error| panic!("delete object {bucket}/{key}: {error}"));
    }

    /// Multipart uploads created and neither completed nor aborted (what S3 bills as
    /// incomplete uploads), in every bucket. Reads s3s-fs's own bookkeeping in its root.
    ///
    /// # Panics
    /// When [`Self::external`].
    pub fn incomplete_multipart_uploads(&self) -> usize {
        let root = self
            .root
            .as_ref()
            .expect("incomplete uploads are counted in the in-process server's root");
        std::fs::read_dir(root.path())
            .expect("read the s3s-fs root")
            .filter(|entry| {
                let name = entry.as_ref().expect("s3s-fs root entry").file_name();
                let name = name.to_string_lossy();
                name.starts_with(".upload-") && name.ends_with(".json")
            })
            .count()
    }

    /// Every key in `bucket` that starts with `prefix` as a plain string (so `"a"` matches
    /// `"ab/c"`, unlike object_store's segment-wise prefixes), sorted. Bypasses faults and
    /// counters.
    pub fn list_keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let store = self.inspector(bucket);
        let metas: Vec<_> = self
            .block_on(async move { store.list(None).try_collect().await })
            .unwrap_or_else(|error| panic!("list bucket {bucket}: {error}"));
        let mut keys: Vec<String> = metas
            .into_iter()
            .map(|meta| meta.location.to_string())
            .filter(|key| key.starts_with(prefix))
            .collect();
        keys.sort();
        keys
    }

    fn inspector(&self, bucket: &str) -> Arc<dyn ObjectStore> {
        let mut inspectors = self.inspectors.lock().expect("inspector cache lock");
        let store = inspectors.entry(bucket.to_owned()).or_insert_with(|| {
            let mut headers = HeaderMap::new();
            headers.insert(BYPASS_HEADER, HeaderValue::from_static("1"));
            let client = ClientOptions::new().with_default_headers(headers);
            let target = self.bucket(bucket);
            Arc::new(
                target
                    .builder_with(client)
                    .build()
                    .expect("build the inspection client"),
            )
        });
        Arc::clone(store)
    }

    /// Runs `future` on the server's runtime and blocks the calling thread until it is done.
    /// Safe inside `#[tokio::test]`: the work happens on another runtime.
    fn block_on<T: Send + 'static>(&self, future: impl Future<Output = T> + Send + 'static) -> T {
        let (sender, receiver) = std::sync::mpsc::channel();
        self.runtime
            .as_ref()
            .expect("runtime lives until drop")
            .spawn(async move {
                let _ = sender.send(future.await);
            });
        receiver.recv().expect("inspection task panicked")
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        // Held requests (hang) never finish on their own; do not wait for them. Works inside
        // another runtime, where a blocking shutdown would panic.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Where Tier 2 objects go: an `s3://bucket[/prefix]` URL plus object_store AmazonS3 options
/// (endpoint, keys, region, path-style, allow_http, `aws_conditional_put=etag`), usable with
/// `object_store::parse_url_opts`.
#[derive(Debug, Clone)]
pub struct Tier2Target {
    pub url: String,
    pub options: Vec<(String, String)>,
}

impl Tier2Target {
    /// The bucket part of [`Self::url`].
    pub fn bucket_name(&self) -> &str {
        self.url_path().split('/').next().unwrap_or_default()
    }

    /// The prefix part of [`Self::url`], without leading or trailing `/`; empty for the bucket
    /// root.
    pub fn prefix(&self) -> &str {
        self.url_path()
            .split_once('/')
            .map_or("", |(_, prefix)| prefix.trim_matches('/'))
    }

    /// The same bucket and options, with the URL pointing at `prefix` inside the bucket.
    pub fn with_prefix(&self, prefix: &str) -> Tier2Target {
        let prefix = prefix.trim_matches('/');
        let url = if prefix.is_empty() {
            format!("s3://{}", self.bucket_name())
        } else {
            format!("s3://{}/{prefix}", self.bucket_name())
        };
        Tier2Target {
            url,
            options: self.options.clone(),
        }
    }

    /// The store and prefix path, exactly as `object_store::parse_url_opts` builds them
    /// (default retry policy and timeouts).
    pub fn store(&self) -> (Box<dyn ObjectStore>, Path) {
        let url = url::Url::parse(&self.url).expect("target URL parses");
        object_store::parse_url_opts(&url, self.options.iter().map(|(k, v)| (k, v.as_str())))
            .expect("build object store from target")
    }

    /// A builder with the URL and options applied, for tests that need `with_retry` or other
    /// settings `parse_url_opts` cannot express.
    pub fn builder(&self) -> AmazonS3Builder {
        self.builder_with(ClientOptions::new())
    }

    /// Like [`Self::builder`], starting from `client`; the target's options (such as
    /// `allow_http`) are applied on top of it. Note that `with_client_options` on the returned
    /// builder would replace them, so pass client settings here.
    pub fn builder_with(&self, client: ClientOptions) -> AmazonS3Builder {
        self.options.iter().fold(
            AmazonS3Builder::new()
                .with_client_options(client)
                .with_url(&self.url),
            |builder, (key, value)| {
                let key = key
                    .parse()
                    .unwrap_or_else(|_| panic!("unknown AmazonS3 option {key}"));
                builder.with_config(key, value)
            },
        )
    }

    fn url_path(&self) -> &str {
        self.url
            .strip_prefix("s3://")
            .expect("target URL starts with s3://")
    }
}

/// A fresh, valid bucket name starting with `prefix` (lowercased; characters S3 does not allow
/// become `-`), unique across threads, processes and runs against a long-lived server.
pub fn unique_bucket(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut stem: String = prefix
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => c,
            _ => '-',
        })
        .take(24)
        .collect();
    stem = stem.trim_matches('-').to_owned();
    if stem.is_empty() {
        stem = "aof2".into();
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64);
    let name = format!(
        "{stem}-{:x}-{:x}-{nanos:x}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    debug_assert!(is_valid_bucket_name(&name), "{name}");
    name
}

/// S3's general-purpose bucket naming rules, minus the IP-address and reserved-suffix checks.
fn is_valid_bucket_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (3..=63).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'.')
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && !name.contains("..")
}

/// Sends `PUT /bucket` without a signature and accepts "created" or "you already own it".
fn create_bucket_unsigned(endpoint: &str, bucket: &str) {
    let authority = endpoint
        .strip_prefix("http://")
        .expect("endpoint is http://host:port");
    let mut stream = TcpStream::connect(authority)
        .unwrap_or_else(|error| panic!("connect to {endpoint}: {error}"));
    stream.set_read_timeout(Some(EXTERNAL_IO_TIMEOUT)).ok();
    stream.set_write_timeout(Some(EXTERNAL_IO_TIMEOUT)).ok();
    write!(
        stream,
        "PUT /{bucket} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap_or_else(|error| panic!("send create-bucket to {endpoint}: {error}"));
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .unwrap_or_else(|error| panic!("read create-bucket reply from {endpoint}: {error}"));
    let response = String::from_utf8_lossy(&response);
    let status = response.split_whitespace().nth(1).unwrap_or_default();
    let created = status == "200";
    let already_ours = status == "409" && response.contains("BucketAlreadyOwnedByYou");
    assert!(
        created || already_ours,
        "create bucket {bucket} at {endpoint} failed:\n{response}"
    );
}

/// Fault controls and request counters of one in-process server.
///
/// Every setter takes effect for requests that arrive after it returns (a request already
/// sleeping in `latency` keeps its delay). Faults apply only to requests that pass the filters
/// ([`Self::only_methods`], [`Self::only_paths_containing`] or [`Self::only_uris_containing`]),
/// checked in this order:
///
/// 0. `hold_next`: read the request whole and hold it without an answer until
///    [`Self::release_held`], which applies it to the store (whether or not the client still
///    waits): a request that reached the server and lands late.
/// 1. `latency`: sleep, then continue.
/// 2. `hang`: hold the request without answering until `hang(false)`, then continue.
/// 3. `outage`: answer `503 ServiceUnavailable`.
/// 4. `slow_down_next`: answer `503 SlowDown` while the budget lasts.
/// 5. `drop_connections`: close the connection without a response.
/// 6. `slow_down`: answer `503 SlowDown`.
/// 7. `cut_next_bodies` / `stall_next_bodies`: serve the request, send the status, the headers
///    and the first bytes of the body, then close the connection (a transfer cut off
///    mid-stream), or stall (a transfer that hangs mid-stream).
/// 8. `throttle_bodies`: serve the request and send its response body at a limited rate (a slow
///    link).
///
/// [`Self::skip_ranged_gets`] keeps faults off GETs of a byte range.
///
/// 503 answers are S3-style XML errors sent after the request body has been read, so the
/// client always sees the status rather than a broken pipe. Random choices come from a seeded
/// generator ([`Self::seed`]), so a single-threaded request sequence sees the same faults on
/// every run.
#[derive(Debug)]
pub struct Faults {
    external: bool,
    hold_budget: AtomicU64,
    /// Held requests: each waits for a sender to tell once it has been applied.
    held: Mutex<Vec<tokio::sync::oneshot::Sender<std::sync::mpsc::SyncSender<()>>>>,
    latency_micros: AtomicU64,
    hang: AtomicBool,
    hang_released: tokio::sync::Notify,
    outage: AtomicBool,
    slow_down_budget: AtomicU64,
    /// `f64` bits.
    drop_fraction: AtomicU64,
    /// `f64` bits.
    slow_down_fraction: AtomicU64,
    cut_budget: AtomicU64,
    /// Body bytes a cut response still sends.
    cut_after_bytes: AtomicU64,
    /// Cut responses stall instead of closing the connection.
    cut_stalls: AtomicBool,
    /// Faults skip GETs with a `Range` header.
    skip_ranged: AtomicBool,
    /// Response bodies go out at this rate; 0 means unthrottled.
    throttle_bytes_per_sec: AtomicU64,
    /// Uppercase methods; empty means every method.
    methods: Mutex<Vec<String>>,
    /// Empty means every path.
    path_substring: Mutex<String>,
    /// `path_substring` is looked for in the query too (a LIST names its prefix there).
    filter_query: AtomicBool,
    random_state: AtomicU64,
    requests: AtomicU64,
    injected: AtomicU64,
    ranged_gets: AtomicU64,
    requests_by_method: Mutex<BTreeMap<String, u64>>,
}

/// What the fault layer does with one request.
enum Verdict {
    Serve,
    Reject {
        code: &'static str,
        message: &'static str,
    },
    DropConnection,
}

impl Faults {
    fn new(external: bool) -> Faults {
        Faults {
            external,
            hold_budget: AtomicU64::new(0),
            held: Mutex::new(Vec::new()),
            latency_micros: AtomicU64::new(0),
            hang: AtomicBool::new(false),
            hang_released: tokio::sync::Notify::new(),
            outage: AtomicBool::new(false),
            slow_down_budget: AtomicU64::new(0),
            drop_fraction: AtomicU64::new(0f64.to_bits()),
            slow_down_fraction: AtomicU64::new(0f64.to_bits()),
            cut_budget: AtomicU64::new(0),
            cut_after_bytes: AtomicU64::new(0),
            cut_stalls: AtomicBool::new(false),
            skip_ranged: AtomicBool::new(false),
            throttle_bytes_per_sec: AtomicU64::new(0),
            methods: Mutex::new(Vec::new()),
            path_substring: Mutex::new(String::new()),
            filter_query: AtomicBool::new(false),
            random_state: AtomicU64::new(0x5eed_a0f2),
            requests: AtomicU64::new(0),
            injected: AtomicU64::new(0),
            ranged_gets: AtomicU64::new(0),
            requests_by_method: Mutex::new(BTreeMap::new()),
        }
    }

    /// Answers `fraction` (0.0..=1.0) of requests with `503 SlowDown`, like an S3 throttling
    /// storm. 0 turns it off.
    pub fn slow_down(&self, fraction: f64) {
        self.settable();
        self.slow_down_fraction
            .store(checked_fraction(fraction).to_bits(), Ordering::SeqCst);
    }

    /// Answers the next `count` requests with `503 SlowDown`, then serves normally. Useful to
    /// test that retries recover.
    pub fn slow_down_next(&self, count: u64) {
        self.settable();
        self.slow_down_budget.store(count, Ordering::SeqCst);
    }

    /// Holds the next `count` matching requests: each is read in full and kept without an
    /// answer (the client times out) until [`Self::release_held`] applies it to the store. This
    /// is a request that reached the server and takes effect after the client gave up on it,
    /// and after whatever the client sent next.
    pub fn hold_next(&self, count: u64) {
        self.settable();
        self.hold_budget.store(count, Ordering::SeqCst);
    }

    /// Requests held now by [`Self::hold_next`].
    pub fn held_requests(&self) -> usize {
        self.held.lock().expect("held lock").len()
    }

    /// Applies every held request to the store, oldest first, and returns once they are all
    /// applied: how many there were. Call it from a thread outside the server's runtime (any
    /// test thread).
    pub fn release_held(&self) -> usize {
        let held: Vec<_> = std::mem::take(&mut *self.held.lock().expect("held lock"));
        let mut landed = 0;
        for release in held {
            let (applied, done) = std::sync::mpsc::sync_channel(1);
            if release.send(applied).is_ok() && done.recv().is_ok() {
                landed += 1;
            }
        }
        landed
    }

    /// Delays every request by `delay` before handling it. Zero turns it off.
    pub fn latency(&self, delay: Duration) {
        self.settable();
        let micros = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.latency_micros.store(micros, Ordering::SeqCst);
    }

    /// Closes the connection without a response for `fraction` (0.0..=1.0) of requests; the
    /// client sees a connection error, not a status. 0 turns it off.
    pub fn drop_connections(&self, fraction: f64) {
        self.settable();
        self.drop_fraction
            .store(checked_fraction(fraction).to_bits(), Ordering::SeqCst);
    }

    /// Serves the next `count` matching requests, but cuts each response off after the first
    /// `after_bytes` bytes of its body: the connection closes mid-transfer, and the client sees
    /// the status and headers (with the full `Content-Length`) and then a broken body. A body
    /// no longer than `after_bytes` goes out whole (and still uses up one of `count`).
    pub fn cut_next_bodies(&self, count: u64, after_bytes: u64) {
        self.settable();
        self.cut_after_bytes.store(after_bytes, Ordering::SeqCst);
        self.cut_stalls.store(false, Ordering::SeqCst);
        self.cut_budget.store(count, Ordering::SeqCst);
    }

    /// Like [`Self::cut_next_bodies`], but after `after_bytes` of its body each response stalls
    /// (the connection stays open and sends nothing more), so only the client's time limit ends
    /// it: a transfer that hangs mid-stream.
    pub fn stall_next_bodies(&self, count: u64, after_bytes: u64) {
        self.settable();
        self.cut_after_bytes.store(after_bytes, Ordering::SeqCst);
        self.cut_stalls.store(true, Ordering::SeqCst);
        self.cut_budget.store(count, Ordering::SeqCst);
    }

    /// While non-zero, the response bodies of matching requests go out at `bytes_per_sec` (in
    /// pieces of at most a twentieth of a second's worth, so a body never pauses for long): a
    /// slow link. 0 turns it off. Like latency, it does not count as injected.
    pub fn throttle_bodies(&self, bytes_per_sec: u64) {
        self.settable();
        self.throttle_bytes_per_sec
            .store(bytes_per_sec, Ordering::SeqCst);
    }

    /// While true, faults skip GETs of a byte range (a `Range` header): whole-object GETs get
    /// them, ranged reads go through.
    pub fn skip_ranged_gets(&self, on: bool) {
        self.settable();
        self.skip_ranged.store(on, Ordering::SeqCst);
    }

    /// While true, every request is answered with `503 ServiceUnavailable`. For an outage that
    /// looks like a dead network instead, use `drop_connections(1.0)`.
    pub fn outage(&self, on: bool) {
        self.settable();
        self.outage.store(on, Ordering::SeqCst);
    }

    /// While true, requests get no response at all (the connection stays open), so only
    /// client timeouts end them. Turning it off lets held requests continue normally.
    pub fn hang(&self, on: bool) {
        self.settable();
        self.hang.store(on, Ordering::SeqCst);
        if !on {
            self.hang_released.notify_waiters();
        }
    }

    /// Applies faults only to requests with one of `methods` (e.g. `&["PUT"]`); an empty slice
    /// means every method. Counters always see every request.
    pub fn only_methods(&self, methods: &[&str]) {
        self.settable();
        *self.methods.lock().expect("methods lock") =
            methods.iter().map(|m| m.to_ascii_uppercase()).collect();
    }

    /// Applies faults only to requests whose URL path (`/bucket/key`, percent-encoded)
    /// contains `substring`; empty means every path.
    pub fn only_paths_containing(&self, substring: &str) {
        self.settable();
        *self.path_substring.lock().expect("path filter lock") = substring.to_owned();
        self.filter_query.store(false, Ordering::SeqCst);
    }

    /// Applies faults only to requests whose URL path or query contains `substring`, as sent
    /// (percent-encoded): a name without `/` also catches the LISTs of prefixes holding it
    /// (`?list-type=2&prefix=...`). Empty means every request.
    pub fn only_uris_containing(&self, substring: &str) {
        self.settable();
        let mut filter = self.path_substring.lock().expect("path filter lock");
        *filter = substring.to_owned();
        self.filter_query.store(true, Ordering::SeqCst);
    }

    /// Reseeds the generator behind the fractional faults.
    pub fn seed(&self, seed: u64) {
        self.settable();
        self.random_state.store(seed, Ordering::SeqCst);
    }

    /// Turns every fault and filter off and releases hung requests. Counters are kept.
    pub fn clear(&self) {
        self.slow_down(0.0);
        self.slow_down_next(0);
        self.latency(Duration::ZERO);
        self.drop_connections(0.0);
        self.outage(false);
        self.only_methods(&[]);
        self.only_paths_containing("");
        self.hold_next(0);
        self.cut_next_bodies(0, 0);
        self.throttle_bodies(0);
        self.skip_ranged_gets(false);
        self.hang(false);
    }

    /// Zeroes every counter.
    pub fn reset_counters(&self) {
        self.requests.store(0, Ordering::SeqCst);
        self.injected.store(0, Ordering::SeqCst);
        self.ranged_gets.store(0, Ordering::SeqCst);
        self.requests_by_method
            .lock()
            .expect("counter lock")
            .clear();
    }

    /// Requests seen, faulted or not. Always 0 when external.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// Requests that got a fault: a 503, a dropped connection or a hang (latency alone does
    /// not count). Always 0 when external.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::SeqCst)
    }

    /// GET requests that carried a `Range` header. Always 0 when external.
    pub fn ranged_gets(&self) -> u64 {
        self.ranged_gets.load(Ordering::SeqCst)
    }

    /// Requests seen with HTTP method `method` (case-insensitive). Always 0 when external.
    pub fn requests_with_method(&self, method: &str) -> u64 {
        let counts = self.requests_by_method.lock().expect("counter lock");
        counts
            .get(&method.to_ascii_uppercase())
            .copied()
            .unwrap_or(0)
    }

    fn settable(&self) {
        assert!(
            !self.external,
            "fault injection needs the in-process S3 server; unset {ENDPOINT_ENV} or skip \
             this test (name it fault_*)"
        );
    }

    fn count(&self, request: &Request<Incoming>) {
        self.requests.fetch_add(1, Ordering::SeqCst);
        if request.method() == Method::GET && request.headers().contains_key(RANGE) {
            self.ranged_gets.fetch_add(1, Ordering::SeqCst);
        }
        *self
            .requests_by_method
            .lock()
            .expect("counter lock")
            .entry(request.method().as_str().to_owned())
            .or_insert(0) += 1;
    }

    fn applies_to(&self, request: &Request<Incoming>) -> bool {
        let methods = self.methods.lock().expect("methods lock");
        let method_matches =
            methods.is_empty() || methods.iter().any(|m| m == request.method().as_str());
        let path_substring = self.path_substring.lock().expect("path filter lock");
        let target = if self.filter_query.load(Ordering::SeqCst) {
            request
                .uri()
                .path_and_query()
                .map_or(request.uri().path(), |p| p.as_str())
        } else {
            request.uri().path()
        };
        let ranged = request.method() == Method::GET && request.headers().contains_key(RANGE);
        method_matches
            && target.contains(path_substring.as_str())
            && !(ranged && self.skip_ranged.load(Ordering::SeqCst))
    }

    fn latency_value(&self) -> Duration {
        Duration::from_micros(self.latency_micros.load(Ordering::SeqCst))
    }

    /// Returns once `hang` is off; counts the request as injected if it had to wait.
    async fn wait_while_hanging(&self) {
        let mut counted = false;
        loop {
            let released = self.hang_released.notified();
            let mut released = std::pin::pin!(released);
            // Register before checking the flag so a `hang(false)` in between is not missed.
            released.as_mut().enable();
            if !self.hang.load(Ordering::SeqCst) {
                return;
            }
            if !counted {
                self.injected.fetch_add(1, Ordering::SeqCst);
                counted = true;
            }
            released.await;
        }
    }

    fn verdict(&self) -> Verdict {
        let slow_down = Verdict::Reject {
            code: "SlowDown",
            message: "Please reduce your request rate (aof2 test fault).",
        };
        let verdict = if self.outage.load(Ordering::SeqCst) {
            Verdict::Reject {
                code: "ServiceUnavailable",
                message: "Service is unable to handle request (aof2 test outage).",
            }
        } else if self
            .slow_down_budget
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            slow_down
        } else if self.roll(&self.drop_fraction) {
            Verdict::DropConnection
        } else if self.roll(&self.slow_down_fraction) {
            slow_down
        } else {
            return Verdict::Serve;
        };
        self.injected.fetch_add(1, Ordering::SeqCst);
        verdict
    }

    /// True with probability `fraction` (stored as `f64` bits).
    fn roll(&self, fraction: &AtomicU64) -> bool {
        let fraction = f64::from_bits(fraction.load(Ordering::SeqCst));
        if fraction <= 0.0 {
            return false;
        }
        if fraction >= 1.0 {
            return true;
        }
        // splitmix64: one atomic step per roll keeps concurrent rolls independent.
        let mut z = self
            .random_state
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::SeqCst)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let unit = (z >> 11) as f64 / (1u64 << 53) as f64;
        unit < fraction
    }
}

fn checked_fraction(fraction: f64) -> f64 {
    assert!(
        (0.0..=1.0).contains(&fraction),
        "fault fraction must be within 0.0..=1.0, got {fraction}"
    );
    fraction
}

/// The server's one key pair, which [`S3Server::revoke_credentials`] can withdraw.
#[derive(Debug)]
struct TestAuth {
    revoked: Arc<AtomicBool>,
}

#[async_trait::async_trait]
impl S3Auth for TestAuth {
    async fn get_secret_key(&self, access_key: &str) -> s3s::S3Result<SecretKey> {
        if access_key == TEST_ACCESS_KEY && !self.revoked.load(Ordering::SeqCst) {
            Ok(SecretKey::from(TEST_SECRET_KEY))
        } else {
            Err(s3s::s3_error!(
                InvalidAccessKeyId,
                "The AWS Access Key Id you provided does not exist in our records."
            ))
        }
    }
}

/// The hyper service in front of s3s: counts, injects faults, serialises conditional writes,
/// answers `NoSuchBucket` for objects of buckets that do not exist.
#[derive(Clone)]
struct FaultService {
    s3: S3Service,
    faults: Arc<Faults>,
    conditional_writes: Arc<tokio::sync::Mutex<()>>,
    /// s3s-fs root: a bucket exists if its directory does.
    root: std::path::PathBuf,
}

type ResponseFuture = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for FaultService {
    type Response = HttpResponse;
    type Error = HttpError;
    type Future = ResponseFuture;

    fn call(&self, request: Request<Incoming>) -> ResponseFuture {
        let service = self.clone();
        Box::pin(async move { service.handle(request).await })
    }
}

impl FaultService {
    async fn handle(self, request: Request<Incoming>) -> Result<HttpResponse, HttpError> {
        if request
            .headers()
            .contains_key(HeaderName::from_static(BYPASS_HEADER))
        {
            return self.forward(request).await;
        }
        let faults = &self.faults;
        faults.count(&request);
        if faults.applies_to(&request) {
            if faults
                .hold_budget
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return self.hold(request).await;
            }
            let delay = faults.latency_value();
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            faults.wait_while_hanging().await;
            match faults.verdict() {
                Verdict::Serve => {}
                Verdict::Reject { code, message } => {
                    // Read the body first so the client is not cut off mid-upload.
                    let _ = request.into_body().collect().await;
                    let request_id = faults.injected();
                    return Ok(s3_error_response(
                        StatusCode::SERVICE_UNAVAILABLE,
                        code,
                        message,
                        request_id,
                    ));
                }
                Verdict::DropConnection => {
                    // hyper closes the connection without writing a response when the
                    // service fails.
                    return Err(HttpError::new("aof2 test fault: connection dropped".into()));
                }
            }
            if faults
                .cut_budget
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                faults.injected.fetch_add(1, Ordering::SeqCst);
                let left = faults.cut_after_bytes.load(Ordering::SeqCst);
                let stall = faults.cut_stalls.load(Ordering::SeqCst);
                let response = self.forward(request).await?;
                return Ok(response.map(|inner| {
                    s3s::Body::http_body_unsync(CutBody {
                        inner,
                        left,
                        stall,
                        stalled: false,
                    })
                }));
            }
            let rate = faults.throttle_bytes_per_sec.load(Ordering::SeqCst);
            if rate > 0 {
                let response = self.forward(request).await?;
                return Ok(response
                    .map(|inner| s3s::Body::http_body_unsync(ThrottledBody::new(inner, rate))));
            }
        }
        self.forward(request).await
    }

    /// Read `request` whole and park it (see [`Faults::hold_next`]). The held request lives in a
    /// task of its own, so it is applied even once the client closed the connection.
    async fn hold(&self, request: Request<Incoming>) -> Result<HttpResponse, HttpError> {
        self.faults.injected.fetch_add(1, Ordering::SeqCst);
        let (parts, body) = request.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|error| HttpError::new(Box::new(error)))?
            .to_bytes();
        let (release, released) = tokio::sync::oneshot::channel();
        let (answer, answered) = tokio::sync::oneshot::channel();
        self.faults.held.lock().expect("held lock").push(release);
        let service = self.clone();
        tokio::spawn(async move {
            let Ok(applied) = released.await else {
                return;
            };
            let request = Request::from_parts(parts, s3s::Body::from(body));
            let response = service.forward_body(request).await;
            let _ = applied.send(());
            let _ = answer.send(response);
        });
        answered.await.unwrap_or_else(|_| {
            Err(HttpError::new(
                "aof2 test fault: held request dropped".into(),
            ))
        })
    }

    async fn forward(&self, request: Request<Incoming>) -> Result<HttpResponse, HttpError> {
        self.forward_body(request.map(s3s::Body::from)).await
    }

    async fn forward_body(&self, request: Request<s3s::Body>) -> Result<HttpResponse, HttpError> {
        // s3s-fs answers a GET of an object in a missing bucket with NoSuchKey and creates the
        // bucket for a PUT; S3 answers NoSuchBucket. Requests for a bucket itself (`/bucket`,
        // such as a LIST) go to s3s-fs, which answers NoSuchBucket too.
        if let Some((bucket, key)) = request.uri().path().trim_start_matches('/').split_once('/')
            && !key.is_empty()
            && !self.root.join(bucket).is_dir()
        {
            let _ = request.into_body().collect().await;
            return Ok(s3_error_response(
                StatusCode::NOT_FOUND,
                "NoSuchBucket",
                "The specified bucket does not exist",
                0,
            ));
        }
        let conditional = request.method() != Method::GET
            && request.method() != Method::HEAD
            && (request.headers().contains_key(IF_NONE_MATCH)
                || request.headers().contains_key(IF_MATCH));
        let _serialised = if conditional {
            Some(self.conditional_writes.lock().await)
        } else {
            None
        };
        self.s3.call(request).await
    }
}

/// A response body that ends in an error after `left` more bytes: hyper then closes the
/// connection mid-transfer (see [`Faults::cut_next_bodies`]).
struct CutBody {
    inner: s3s::Body,
    left: u64,
    /// Stall once `left` is used up instead of failing.
    stall: bool,
    stalled: bool,
}

impl hyper::body::Body for CutBody {
    type Data = hyper::body::Bytes;
    type Error = s3s::StdError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        use std::task::Poll;
        if self.stalled {
            // Never woken: hyper keeps the connection open and sends nothing more.
            return Poll::Pending;
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(_) if self.left == 0 && self.stall => {
                    self.stalled = true;
                    Poll::Pending
                }
                Ok(_) if self.left == 0 => {
                    Poll::Ready(Some(Err("aof2 test fault: body cut off".into())))
                }
                Ok(mut data) => {
                    // The rest of a frame cut short is not sent: the body ends short of its
                    // `Content-Length`, which hyper answers by closing the connection.
                    let keep = usize::try_from(self.left).unwrap_or(usize::MAX);
                    data.truncate(keep);
                    self.left -= data.len() as u64;
                    Poll::Ready(Some(Ok(hyper::body::Frame::data(data))))
                }
                Err(frame) => Poll::Ready(Some(Ok(frame))),
            },
            other => other,
        }
    }
}

/// A response body sent at `rate` bytes per second (see [`Faults::throttle_bodies`]): the body's
/// bytes go out in pieces of at most `piece` bytes, each once the bytes before it are due.
struct ThrottledBody {
    inner: s3s::Body,
    rate: u64,
    piece: usize,
    /// When the first byte went out.
    started: Option<tokio::time::Instant>,
    sent: u64,
    /// Bytes of the inner body's last frame not sent yet.
    pending: hyper::body::Bytes,
    wait: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl ThrottledBody {
    fn new(inner: s3s::Body, rate: u64) -> ThrottledBody {
        ThrottledBody {
            inner,
            rate,
            piece: usize::try_from(rate / 20).unwrap_or(usize::MAX).max(1),
            started: None,
            sent: 0,
            pending: hyper::body::Bytes::new(),
            wait: None,
        }
    }
}

impl hyper::body::Body for ThrottledBody {
    type Data = hyper::body::Bytes;
    type Error = s3s::StdError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        use std::task::Poll;
        let this = &mut *self;
        loop {
            if let Some(wait) = this.wait.as_mut() {
                if wait.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.wait = None;
            }
            if !this.pending.is_empty() {
                let now = tokio::time::Instant::now();
                let started = *this.started.get_or_insert(now);
                let due = started + Duration::from_secs_f64(this.sent as f64 / this.rate as f64);
                if due > now {
                    this.wait = Some(Box::pin(tokio::time::sleep_until(due)));
                    continue;
                }
                let take = this.pending.len().min(this.piece);
                let data = this.pending.split_to(take);
                this.sent += take as u64;
                return Poll::Ready(Some(Ok(hyper::body::Frame::data(data))));
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => this.pending = data,
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                other => return other,
            }
        }
    }
}

fn s3_error_response(
    status: StatusCode,
    code: &str,
    message: &str,
    request_id: u64,
) -> HttpResponse {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
         <Message>{message}</Message><RequestId>aof2-fault-{request_id}</RequestId></Error>"
    );
    let mut response = HttpResponse::new(s3s::Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    headers.insert(
        HeaderName::from_static("x-amz-request-id"),
        HeaderValue::from_str(&format!("aof2-fault-{request_id}")).expect("ASCII request id"),
    );
    response
}

async fn accept_connections(listener: std::net::TcpListener, service: FaultService) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("register the listener");
    loop {
        let socket = match listener.accept().await {
            Ok((socket, _)) => socket,
            Err(_) => {
                // Out of file descriptors or similar: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let service = service.clone();
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(socket), service)
                .await;
        });
    }
}
