//! Proves the S3 test harness (`tests/support/s3.rs`) with the real object_store S3 client:
//! the operations Tier 2 relies on behave like S3, and every fault reaches the client as the
//! error it would see in production.
//!
//! Tests that need fault injection or the server's counters are named `fault_*`, so a run
//! against an external server can skip them:
//! `AOF2_TEST_S3_ENDPOINT=http://127.0.0.1:5123 cargo nextest run -p aof2 --test s3_harness
//! -E 'not test(/fault_/)'`.

mod support;

use std::error::Error as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use object_store::client::{HttpError, HttpErrorKind};
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutPayload, RetryConfig,
    WriteMultipart,
};
use support::s3::{S3Server, Tier2Target, unique_bucket};

/// Deterministic, non-repeating-looking bytes so misplaced ranges cannot compare equal.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_left(7) as u8 ^ seed)
        .collect()
}

/// A store that gives up at the first failure, so injected faults surface unchanged.
fn fragile_store(target: &Tier2Target, client: ClientOptions) -> Arc<dyn ObjectStore> {
    let retry = RetryConfig {
        max_retries: 0,
        retry_timeout: Duration::from_secs(10),
        ..RetryConfig::default()
    };
    Arc::new(
        target
            .builder_with(client)
            .with_retry(retry)
            .build()
            .expect("build store"),
    )
}

/// The object_store HTTP error somewhere in `error`'s source chain, if any.
fn http_error_kind(error: &object_store::Error) -> Option<HttpErrorKind> {
    let mut source = error.source();
    while let Some(current) = source {
        if let Some(http) = current.downcast_ref::<HttpError>() {
            return Some(http.kind());
        }
        source = current.source();
    }
    None
}

#[tokio::test]
async fn put_get_round_trip() {
    let server = S3Server::start();
    let target = server.bucket(&unique_bucket("round-trip"));
    let (store, _) = target.store();
    let path = Path::from("segments/00000001.seg");
    let data = pattern(100_003, 1);

    store
        .put(&path, PutPayload::from(data.clone()))
        .await
        .unwrap();

    let fetched = store.get(&path).await.unwrap().bytes().await.unwrap();
    assert_eq!(&fetched[..], &data[..]);
    assert_eq!(store.head(&path).await.unwrap().size, data.len() as u64);
    assert_eq!(
        server.object_bytes(target.bucket_name(), path.as_ref()),
        Some(data)
    );
}

#[tokio::test]
async fn empty_object_round_trips() {
    let server = S3Server::start();
    let target = server.bucket(&unique_bucket("empty"));
    let (store, _) = target.store();
    let path = Path::from("empty");

    store.put(&path, PutPayload::default()).await.unwrap();

    let fetched = store.get(&path).await.unwrap().bytes().await.unwrap();
    assert!(fetched.is_empty());
    assert_eq!(store.head(&path).await.unwrap().size, 0);
}

#[tokio::test]
async fn ranged_get_returns_exactly_the_range() {
    let server = S3Server::start();
    let target = server.bucket(&unique_bucket("range"));
    let (store, _) = target.store();
    let path = Path::from("object");
    let data = pattern(65_536, 2);
    store
        .put(&path, PutPayload::from(data.clone()))
        .await
        .unwrap();
    let ranged_before = server.faults().ranged_gets();

    let slice = store.get_range(&path, 1_000..5_003).await.unwrap();
    assert_eq!(&slice[..], &data[1_000..5_003]);
    let last = store.get_range(&path, 65_535..65_536).await.unwrap();
    assert_eq!(&last[..], &data[65_535..]);

    // Nearby ranges are coalesced into one request.
    let parts = store
        .get_ranges(&path, &[0..10, 20..30, 40_000..40_100])
        .await
        .unwrap();
    assert_eq!(&parts[0][..], &data[0..10]);
    assert_eq!(&parts[1][..], &data[20..30]);
    assert_eq!(&parts[2][..], &data[40_000..40_100]);

    if !server.external() {
        assert_eq!(server.faults().ranged_gets() - ranged_before, 3);
    }
}

#[tokio::test]
async fn multipart_upload_of_12_mib() {
    let server = S3Server::start();
    let target = server.bucket(&unique_bucket("multipart"));
    let (store, _) = target.store();
    let path = Path::from("big/object");
    let data = pattern(12 * 1024 * 1024 + 17, 3);
    let puts_before = server.faults().requests_with_method("PUT");
    let posts_before = server.faults().requests_with_method("POST");

    let mut upload = WriteMultipart::new(store.put_multipart(&path).await.unwrap());
    for chunk in data.chunks(1024 * 1024) {
        upload.write(chunk);
    }
    upload.finish().await.unwrap();

    assert_eq!(store.head(&path).await.unwrap().size, data.len() as u64);
    let fetched = store.get(&path).await.unwrap().bytes().await.unwrap();
    assert!(fetched[..] == data[..], "multipart object differs");
    if !server.external() {
        // 5 MiB default parts: 5 + 5 + 2 MiB; create and complete are POSTs.
        assert_eq!(server.faults().requests_with_method("PUT") - puts_before, 3);
        assert_eq!(
            server.faults().requests_with_method("POST") - posts_before,
            2
        );
    }
}

#[tokio::test]
async fn create_mode_on_existing_key_is_already_exists() {
    let server = S3Server::start();
    let target = server.bucket(&unique_bucket("create"));
    let (store, _) = target.store();
    let path = Path::from("manifest/00000001");

    store
        .put_opts(&path, b"first".to_vec().into(), PutMode::Create.into())
        .await
        .unwrap();
    let second = store
        .put_opts(&path, b"second".to_vec().into(), PutMode::Create.into())
        .await;

    assert!(
        matches!(second, Err(object_store::Error::AlreadyExists { .. })),
        "{second:?}"
    );
    let kept = store.get(&path).await.unwrap().bytes().await.unwrap();
    assert_eq!(&kept[..], b"first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_creates_have_exactly_one_winner() {
    let server = S3Server::start();
    let target = server.bucket(&unique_bucket("race"));
    let store: Arc<dyn ObjectStore> = Arc::from(target.store().0);
    let path = Path::from("fence");

    // A loser's 412 can come back before its 64 KiB body is sent, and the server then drops the
    // connection: the client reports a transport error ("error sending request"). A client
    // retries those, as aof2's Tier 2 layer does; a retried create that finds the object reports
    // `AlreadyExists` even if its first attempt was the one that won (the answer was lost).
    let attempts: Vec<_> = (0..8u8)
        .map(|writer| {
            let store = Arc::clone(&store);
            let path = path.clone();
            tokio::spawn(async move {
                let mut retried = false;
                loop {
                    let payload = PutPayload::from(vec![writer; 64 * 1024]);
                    match store.put_opts(&path, payload, PutMode::Create.into()).await {
                        Err(object_store::Error::Generic { source, .. })
                            if !retried && source.to_string().contains("error sending request") =>
                        {
                            retried = true;
                        }
                        result => return (result.map(|_| writer), retried),
                    }
                }
            })
        })
        .collect();
    let mut winners = Vec::new();
    let mut retries = 0;
    for attempt in attempts {
        let (result, retried) = attempt.await.unwrap();
        retries += usize::from(retried);
        match result {
            Ok(writer) => winners.push(writer),
            Err(object_store::Error::AlreadyExists { .. }) => {}
            Err(other) => panic!("unexpected error: {other}"),
        }
    }

    assert!(winners.len() <= 1, "winners: {winners:?}");
    assert!(
        winners.len() == 1 || retries > 0,
        "nobody won and nothing was retried"
    );
    let stored = store.get(&path).await.unwrap().bytes().await.unwrap();
    assert_eq!(stored.len(), 64 * 1024);
    assert!(
        stored.iter().all(|&b| b == stored[0]),
        "one writer's bytes, whole"
    );
    if let Some(&winner) = winners.first() {
        assert_eq!(stored[0], winner, "the winner's bytes are stored");
    }
}

#[tokio::test]
async fn list_with_prefix() {
    let server = S3Server::start();
    let target = server.bucket(&unique_bucket("list"));
    let (store, _) = target.store();
    for key in ["a/1", "a/2", "a/sub/3", "ab/4", "b/5"] {
        store
            .put(&Path::from(key), b"x".to_vec().into())
            .await
            .unwrap();
    }

    let mut listed: Vec<String> = store
        .list(Some(&Path::from("a")))
        .map_ok(|meta| meta.location.to_string())
        .try_collect()
        .await
        .unwrap();
    listed.sort();
    assert_eq!(listed, ["a/1", "a/2", "a/sub/3"]);

    let shallow = store
        .list_with_delimiter(Some(&Path::from("a")))
        .await
        .unwrap();
    let mut objects: Vec<String> = shallow
        .objects
        .iter()
        .map(|meta| meta.location.to_string())
        .collect();
    objects.sort();
    assert_eq!(objects, ["a/1", "a/2"]);
    let prefixes: Vec<String> = shallow
        .common_prefixes
        .iter()
        .map(|p| p.to_string())
        .collect();
    assert_eq!(prefixes, ["a/sub"]);

    // The harness helper matches raw string prefixes.
    assert_eq!(
        server.list_keys(target.bucket_name(), "a"),
        ["a/1", "a/2", "a/sub/3", "ab/4"]
    );
}

#[tokio::test]
async fn target_prefix_and_idempotent_bucket() {
    let server = S3Server::start();
    let bucket = unique_bucket("prefix");
    let target = server.bucket(&bucket).with_prefix("logs/orders");
    // Creating the same bucket again is fine.
    assert_eq!(server.bucket(&bucket).bucket_name(), bucket);
    assert_eq!(target.url, format!("s3://{bucket}/logs/orders"));
    assert_eq!(target.prefix(), "logs/orders");

    let (store, prefix) = target.store();
    assert_eq!(prefix.as_ref(), "logs/orders");
    store
        .put(&prefix.clone().join("seg-1"), b"payload".to_vec().into())
        .await
        .unwrap();

    assert_eq!(
        server.list_keys(&bucket, ""),
        ["logs/orders/seg-1".to_owned()]
    );
}

#[tokio::test]
async fn object_deleted_behind_the_clients_back_is_not_found() {
    let server = S3Server::start();
    let target = server.bucket(&unique_bucket("missing"));
    let (store, _) = target.store();
    let path = Path::from("segments/7");
    store.put(&path, b"data".to_vec().into()).await.unwrap();

    server.delete_object(target.bucket_name(), path.as_ref());

    let get = store.get(&path).await;
    assert!(
        matches!(get, Err(object_store::Error::NotFound { .. })),
        "{get:?}"
    );
    let range = store.get_range(&path, 0..2).await;
    assert!(
        matches!(range, Err(object_store::Error::NotFound { .. })),
        "{range:?}"
    );
    assert_eq!(
        server.object_bytes(target.bucket_name(), path.as_ref()),
        None
    );
}

#[tokio::test]
async fn object_overwritten_behind_the_clients_back_is_visible() {
    let server = S3Server::start();
    let target = server.bucket(&unique_bucket("corrupt"));
    let (store, _) = target.store();
    let path = Path::from("segments/8");
    store.put(&path, b"good".to_vec().into()).await.unwrap();

    server.put_object(target.bucket_name(), path.as_ref(), b"evil".to_vec());

    let fetched = store.get(&path).await.unwrap().bytes().await.unwrap();
    assert_eq!(&fetched[..], b"evil");
}

#[tokio::test]
async fn fault_slow_down_storm_is_503_slowdown() {
    let server = S3Server::start();
    let target = server.bucket(&unique_bucket("slowdown"));
    let store = fragile_store(&target, ClientOptions::new());
    let path = Path::from("object");
    store.put(&path, b"x".to_vec().into()).await.unwrap();

    server.faults().slow_down(1.0);
    let error = store.head(&path).await.unwrap_err();
    let text = error.to_string();
    assert!(text.contains("503"), "{text}");
    let error = store
        .put(&path, vec![7u8; 1 << 20].into())
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(text.contains("503") && text.contains("SlowDown"), "{text}");
    assert_eq!(server.faults().injected(), 2);

    // A partial storm fails some requests, deterministically for a given seed.
    server.faults().seed(42);
    server.faults().slow_down(0.5);
    let mut failures = 0;
    for _ in 0..60 {
        if store.head(&path).await.is_err() {
            failures += 1;
        }
    }
    assert!((15..=45).contains(&failures), "failures: {failures}");

    server.faults().slow_down(0.0);
    store.head(&path).await.unwrap();
}

#[tokio::test]
async fn fault_slow_down_next_is_absorbed_by_retries() {
    let server = S3Server::start();
    let target = server.bucket(&unique_bucket("retry"));
    let retry = RetryConfig {
        max_retries: 3,
        retry_timeout: Duration::from_secs(10),
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(20),
            base: 2.0,
        },
    };
    let store = target.builder().with_retry(retry).build().unwrap();
    let path = Path::from("object");

    server.faults().slow_down_next(2);
    store.put(&path, b"x".to_vec().into()).await.unwrap();

    assert_eq!(server.faults().injected(), 2);
    assert_eq!(server.faults().requests_with_method("PUT"), 3);
}

#[tokio::test]
async fn fault_latency_delays_every_request() {
    let server = S3Server::start();
    let target = server.bucket(&unique_bucket("latency"));
    let (store, _) = target.store();
    let path = Path::from("object");
    store.put(&path, b"x".to_vec().into()).await.unwrap();

    server.faults().latency(Duration::from_millis(150));
    let started = Instant::now();
    store.head(&path).await.unwrap();
    store.get(&path).await.unwrap().bytes().await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(server.faults().injected(), 0);
}

#[tokio::test]
async fn fault_dropped_connection_is_a_transport_error() {
    let server = S3Server::start();
    let target = server.bucket(&unique_bucket("drop"));
    let store = fragile_store(&target, ClientOptions::new());
    let path = Path::from("object");
    store.put(&path, b"x".to_vec().into()).await.unwrap();

    server.faults().drop_connections(1.0);
    let error = store.get(&path).await.unwrap_err();
    let kind = http_error_kind(&error);
    assert!(
        matches!(
            kind,
            Some(HttpErrorKind::Request | HttpErrorKind::Interrupted)
        ),
        "{kind:?}: {error}"
    );
    // An upload cut off mid-body fails the same way, not with a status.
    let error = store
        .put(&path, vec![1u8; 4 << 20].into())
        .await
        .unwrap_err();
    assert!(http_error_kind(&error).is_some(), "{error}");
    assert_eq!(server.faults().injected(), 2);

    server.faults().drop_connections(0.0);
    let fetched = store.get(&path).await.unwrap().bytes().await.unwrap();
    assert_eq!(&fetched[..], b"x");
}

#[tokio::test]
async fn fault_outage_fails_everything_until_lifted() {
    let server = S3Server::start();
    let target = server.bucket(&unique_bucket("outage"));
    let store = fragile_store(&target, ClientOptions::new());
    let path = Path::from("object");
    store.put(&path, b"x".to_vec().into()).await.unwrap();

    server.faults().outage(true);
    let put = store.put(&path, b"y".to_vec().into()).await.unwrap_err();
    assert!(put.to_string().contains("ServiceUnavailable"), "{put}");
    let get = store.get(&path).await.unwrap_err();
    assert!(get.to_string().contains("503"), "{get}");
    let list: Result<Vec<_>, _> = store.list(None).try_collect().await;
    assert!(list.is_err());
    // The inspection helpers bypass faults.
    assert_eq!(
        server.object_bytes(target.bucket_name(), "object"),
        Some(b"x".to_vec())
    );
    assert_eq!(server.faults().injected(), 3);

    server.faults().outage(false);
    store.put(&path, b"z".to_vec().into()).await.unwrap();
}

#[tokio::test]
async fn fault_hang_trips_the_client_timeout() {
    let server = S3Server::start();
    let target = server.bucket(&unique_bucket("hang"));
    let client = ClientOptions::new().with_timeout(Duration::from_millis(300));
    let store = fragile_store(&target, client);
    let path = Path::from("object");
    store.put(&path, b"x".to_vec().into()).await.unwrap();

    server.faults().hang(true);
    let started = Instant::now();
    let error = store.get(&path).await.unwrap_err();
    assert_eq!(
        http_error_kind(&error),
        Some(HttpErrorKind::Timeout),
        "{error}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(server.faults().injected(), 1);

    server.faults().hang(false);
    let fetched = store.get(&path).await.unwrap().bytes().await.unwrap();
    assert_eq!(&fetched[..], b"x");
}

#[tokio::test]
async fn fault_filters_limit_faults_to_matching_requests() {
    let server = S3Server::start();
    let target = server.bucket(&unique_bucket("filter"));
    let store = fragile_store(&target, ClientOptions::new());
    let path = Path::from("segments/1");
    store.put(&path, b"x".to_vec().into()).await.unwrap();

    server.faults().only_methods(&["put"]);
    server.faults().outage(true);
    store.get(&path).await.unwrap();
    store.put(&path, b"y".to_vec().into()).await.unwrap_err();

    server.faults().only_methods(&[]);
    server.faults().only_paths_containing("/manifest/");
    store.get(&path).await.unwrap();
    store
        .get(&Path::from("manifest/1"))
        .await
        .expect_err("manifest paths are in an outage");

    server.faults().clear();
    store.put(&path, b"z".to_vec().into()).await.unwrap();
    assert_eq!(server.faults().injected(), 2);
    assert_eq!(server.faults().requests(), 6);
    assert_eq!(server.faults().requests_with_method("GET"), 3);
}

#[tokio::test]
async fn fault_throttled_bodies_arrive_whole_at_the_rate() {
    let server = S3Server::start();
    let target = server.bucket(&unique_bucket("throttle"));
    let store = fragile_store(&target, ClientOptions::new());
    let path = Path::from("object");
    let body = pattern(1 << 20, 5);
    store.put(&path, body.clone().into()).await.unwrap();

    // 1 MiB at 2 MiB/s: at least about half a second (a lower bound: the machine may be slower).
    server.faults().throttle_bodies(2 << 20);
    server.faults().skip_ranged_gets(true);
    let started = Instant::now();
    let fetched = store.get(&path).await.unwrap().bytes().await.unwrap();
    let took = started.elapsed();
    assert!(fetched[..] == body[..], "the throttled body arrives whole");
    assert!(took >= Duration::from_millis(400), "{took:?}");
    assert_eq!(server.faults().injected(), 0, "a throttle is not a fault");

    // At 64 KiB/s, 512 KiB would take 8 s: a ranged GET (skipped) goes at full speed, and so
    // does any GET once the throttle is off.
    server.faults().throttle_bodies(64 << 10);
    let started = Instant::now();
    let range = store.get_range(&path, 0..(512 << 10)).await.unwrap();
    assert!(range[..] == body[..512 << 10]);
    assert!(started.elapsed() < Duration::from_secs(4));
    server.faults().clear();
    let started = Instant::now();
    let fetched = store.get(&path).await.unwrap().bytes().await.unwrap();
    assert!(fetched[..] == body[..]);
    assert!(started.elapsed() < Duration::from_secs(4));
}
