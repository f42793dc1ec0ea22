//! Black-box tests of the `aof2` binary: each test runs the built executable with its own
//! temporary root and checks stdout, stderr and the exit status (0 ok, 2 usage, 3 corruption,
//! 4 environment).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use base64::Engine;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_aof2");

/// Start `aof2 args...` with its stdin, stdout and stderr piped.
fn spawn(args: &[&str]) -> std::process::Child {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn aof2")
}

/// Run `aof2 args...` with `stdin` as its input.
fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = spawn(args);
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let output = child.wait_with_output().expect("wait for aof2");
    feeder.join().expect("stdin feeder");
    output
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Assert the exit status, showing the output when it differs.
#[track_caller]
fn expect_status(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        text(&output.stdout),
        text(&output.stderr)
    );
}

fn root_arg(dir: &Path) -> String {
    dir.join("root").display().to_string()
}

/// Append `input` to `log` and check the printed sequence numbers are `first..`.
#[track_caller]
fn append(root: &str, log: &str, input: &[u8], extra: &[&str]) -> Vec<u64> {
    let mut args = vec!["append", "--root", root, "--log", log];
    args.extend_from_slice(extra);
    let out = run(&args, input);
    expect_status(&out, 0);
    text(&out.stdout)
        .lines()
        .map(|l| l.parse().expect("sequence number"))
        .collect()
}

fn lines_input(count: usize, width: usize) -> Vec<u8> {
    let mut input = Vec::new();
    for i in 0..count {
        let line = format!("line {i:06} ");
        input.extend(line.bytes().cycle().take(width));
        input.push(b'\n');
    }
    input
}

fn segment_files(root: &str, log: &str) -> Vec<PathBuf> {
    let dir = Path::new(root).join("logs").join(log).join("segments");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("segments dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}

/// The first sealed segment: sealed files are truncated to their content, so shorter than the
/// configured segment size, and never the last file.
fn first_sealed_segment(root: &str, log: &str, segment_bytes: u64) -> PathBuf {
    let files = segment_files(root, log);
    let last = files.len() - 1;
    files
        .into_iter()
        .take(last)
        .find(|p| std::fs::metadata(p).expect("stat").len() < segment_bytes)
        .expect("a sealed segment")
}

fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = std::fs::read(path).expect("read segment");
    bytes[offset as usize] ^= 0x5a;
    std::fs::write(path, bytes).expect("write segment");
}

#[test]
fn append_then_cat_raw_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_arg(dir.path());
    let input = b"alpha\n\nbeta gamma\n\xff\x00binary\r\n";
    assert_eq!(append(&root, "orders", input, &[]), vec![0, 1, 2, 3]);
    // A final line without a newline is a record too; numbering continues.
    assert_eq!(append(&root, "orders", b"tail", &[]), vec![4]);
    let out = run(&["cat", "--root", &root, "--log", "orders"], b"");
    expect_status(&out, 0);
    assert_eq!(out.stdout, b"alpha\n\nbeta gamma\n\xff\x00binary\r\ntail\n");
}

#[test]
fn append_acknowledges_each_line_before_end_of_input() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let root = root_arg(dir.path());
    let mut child = spawn(&["append", "--root", &root, "--log", "live"]);
    let mut input = child.stdin.take().unwrap();
    let mut acks = std::io::BufReader::new(child.stdout.take().unwrap());
    for expected in 0..3 {
        input
            .write_all(format!("line {expected}\n").as_bytes())
            .unwrap();
        input.flush().unwrap();
        // The sequence number arrives while stdin is still open.
        let mut ack = String::new();
        acks.read_line(&mut ack).unwrap();
        assert_eq!(ack, format!("{expected}\n"));
    }
    drop(input);
    let status = child.wait().unwrap();
    assert!(status.success());
}

#[test]
fn append_stops_at_an_oversized_line_after_acknowledging_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_arg(dir.path());
    let mut input = b"first\n".to_vec();
    input.extend(std::iter::repeat_n(b'x', 70_000));
    input.extend_from_slice(b"\nnever\n");
    let out = run(
        &[
            "append",
            "--root",
            &root,
            "--log",
            "big",
            "--segment-bytes",
            "64KiB",
        ],
        &input,
    );
    expect_status(&out, 2);
    assert_eq!(text(&out.stdout), "0\n");
    let err = text(&out.stderr);
    assert!(
        err.starts_with("aof2: error: stdin line 2: record longer than the maximum of "),
        "{err}"
    );
    let out = run(&["cat", "--root", &root, "--log", "big"], b"");
    expect_status(&out, 0);
    assert_eq!(out.stdout, b"first\n");
}

#[test]
fn append_reads_no_more_of_an_oversized_line_than_the_maximum_record() {
    // A line without end (`aof2 append < /dev/zero`) must fail once it exceeds the maximum
    // record size, not buffer the whole line in memory first.
    let dir = tempfile::tempdir().unwrap();
    let root = root_arg(dir.path());
    let mut child = spawn(&[
        "append",
        "--root",
        &root,
        "--log",
        "endless",
        "--segment-bytes",
        "64KiB",
        "--tier2",
        "none",
    ]);
    let mut input = child.stdin.take().unwrap();
    input.write_all(b"first\n").unwrap();
    // Far more than one line may hold (64 KiB segments): aof2 stops reading long before the end,
    // and the write fails with a broken pipe once it has exited.
    let chunk = vec![b'x'; 64 * 1024];
    let mut offered = 0usize;
    while offered < 32 << 20 {
        if input.write_all(&chunk).is_err() {
            break;
        }
        offered += chunk.len();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    assert!(
        offered < 32 << 20,
        "aof2 read all {offered} bytes of one line"
    );
    expect_status(&out, 2);
    assert_eq!(text(&out.stdout), "0\n");
    let err = text(&out.stderr);
    assert!(
        err.starts_with("aof2: error: stdin line 2: record longer than the maximum of "),
        "{err}"
    );
    let out = run(
        &[
            "cat", "--root", &root, "--log", "endless", "--tier2", "none",
        ],
        b"",
    );
    expect_status(&out, 0);
    assert_eq!(out.stdout, b"first\n");

    // The largest record fits, with or without its newline; one byte more does not.
    let max = aof2::LogConfig::default()
        .with_segment_bytes(64 * 1024)
        .max_record_bytes as usize;
    let mut input = vec![b'a'; max];
    input.push(b'\n');
    input.extend(std::iter::repeat_n(b'b', max));
    let extra = ["--segment-bytes", "64KiB", "--tier2", "none"];
    assert_eq!(append(&root, "endless", &input, &extra), vec![1, 2]);
    let mut args = vec!["append", "--root", &root, "--log", "endless"];
    args.extend_from_slice(&extra);
    let out = run(&args, &vec![b'c'; max + 1]);
    expect_status(&out, 2);
    assert!(
        text(&out.stderr).contains(&format!("record longer than the maximum of {max} bytes")),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn append_empty_input_prints_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_arg(dir.path());
    assert!(append(&root, "empty", b"", &[]).is_empty());
    let out = run(&["cat", "--root", &root, "--log", "empty"], b"");
    expect_status(&out, 0);
    assert!(out.stdout.is_empty());
}

#[test]
fn append_every_durability_mode() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_arg(dir.path());
    let input = lines_input(3000, 40);
    for (i, mode) in ["always", "interval", "interval:3", "none"]
        .iter()
        .enumerate()
    {
        let seqs = append(
            &root,
            "modes",
            &input,
            &["--durability", mode, "--segment-bytes", "64KiB"],
        );
        let first = i as u64 * 3000;
        assert_eq!(seqs, (first..first + 3000).collect::<Vec<_>>(), "{mode}");
    }
    let out = run(&["cat", "--root", &root, "--log", "modes"], b"");
    expect_status(&out, 0);
    assert_eq!(out.stdout, input.repeat(4));
}

#[test]
fn cat_json_has_fields_and_base64_payload() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_arg(dir.path());
    append(&root, "j", b"hello\n\n\xfe\xff\"q\"\n", &[]);
    let out = run(
        &["cat", "--root", &root, "--log", "j", "--format", "json"],
        b"",
    );
    expect_status(&out, 0);
    let objects: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let expected: [&[u8]; 3] = [b"hello", b"", b"\xfe\xff\"q\""];
    assert_eq!(objects.len(), expected.len());
    for (i, (object, payload)) in objects.iter().zip(expected).enumerate() {
        assert_eq!(object["seq"], i as u64);
        assert_eq!(object["len"], payload.len() as u64);
        assert!(object["timestamp_ms"].as_u64().unwrap() > 1_600_000_000_000);
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(object["payload_base64"].as_str().unwrap())
            .unwrap();
        assert_eq!(decoded, payload);
    }
}

#[test]
fn cat_from_and_limit() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_arg(dir.path());
    let input: String = (0..10).map(|i| format!("r{i}\n")).collect();
    append(&root, "l", input.as_bytes(), &[]);
    let cat = |extra: &[&str]| {
        let mut args = vec!["cat", "--root", &root, "--log", "l"];
        args.extend_from_slice(extra);
        let out = run(&args, b"");
        expect_status(&out, 0);
        text(&out.stdout)
    };
    assert_eq!(cat(&["--from", "7"]), "r7\nr8\nr9\n");
    assert_eq!(cat(&["--limit", "2"]), "r0\nr1\n");
    assert_eq!(cat(&["--from", "3", "--limit", "2"]), "r3\nr4\n");
    assert_eq!(cat(&["--from", "10"]), "");
    assert_eq!(cat(&["--from", "99"]), "");
    assert_eq!(cat(&["--limit", "0"]), "");
}

/// Retention (`Aof::truncate_before`) removes whole segments from the front: `cat` starts at the
/// log's first record, and a `--from` below it is invalid input naming where the log starts.
#[test]
fn cat_starts_at_the_first_record_retention_left() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let first = {
        let m = aof2::AofManager::open(aof2::ManagerConfig::new(&root)).unwrap();
        let log = m
            .open_log(
                "kept",
                aof2::LogConfig::default().with_segment_bytes(64 * 1024),
            )
            .unwrap();
        for i in 0..3000u64 {
            log.append(format!("r{i}").repeat(8).as_bytes()).unwrap();
        }
        assert!(m.wait_for_tier1(&log, std::time::Duration::from_secs(120)));
        let first = log.truncate_before(1500).unwrap();
        m.close().unwrap();
        first
    };
    assert!(first > 0 && first <= 1500, "{first}");
    let root = root.display().to_string();
    let cat = |extra: &[&str]| {
        let mut args = vec!["cat", "--root", &root, "--log", "kept", "--format", "json"];
        args.extend_from_slice(extra);
        run(&args, b"")
    };
    let seqs = |out: &Output| -> Vec<u64> {
        text(&out.stdout)
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["seq"]
                    .as_u64()
                    .unwrap()
            })
            .collect()
    };
    let out = cat(&[]);
    expect_status(&out, 0);
    assert_eq!(seqs(&out), (first..3000).collect::<Vec<_>>());
    let out = cat(&["--from", &(first + 1).to_string(), "--limit", "1"]);
    expect_status(&out, 0);
    assert_eq!(seqs(&out), vec![first + 1]);
    let out = cat(&["--from", &(first - 1).to_string()]);
    expect_status(&out, 2);
    assert!(out.stdout.is_empty());
    let err = text(&out.stderr);
    assert!(err.contains(&format!("starts at record {first}")), "{err}");
}

#[test]
fn cat_missing_log_or_root_is_invalid_input() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_arg(dir.path());
    append(&root, "exists", b"x\n", &[]);
    let out = run(&["cat", "--root", &root, "--log", "missing"], b"");
    expect_status(&out, 2);
    let err = text(&out.stderr);
    assert!(err.starts_with("aof2: error: "), "{err}");
    assert!(err.contains("\"missing\" does not exist"), "{err}");
    assert!(
        !Path::new(&root).join("logs").join("missing").exists(),
        "cat must not create a log"
    );
    let nowhere = dir.path().join("nowhere").display().to_string();
    let out = run(&["cat", "--root", &nowhere, "--log", "exists"], b"");
    expect_status(&out, 2);
    assert!(!Path::new(&nowhere).exists(), "cat must not create a root");
    // An existing directory that is not a root: reading commands neither make it one nor
    // leave a lock file in it.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let foreign = dir.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), b"mine").unwrap();
    for root in [&empty, &foreign] {
        let root_text = root.display().to_string();
        for command in [
            vec!["cat", "--root", &root_text, "--log", "exists"],
            vec!["inspect", "--root", &root_text],
            vec!["verify", "--root", &root_text],
        ] {
            let out = run(&command, b"");
            expect_status(&out, 2);
            assert!(
                text(&out.stderr).contains("is not an aof2 root"),
                "{command:?}: {}",
                text(&out.stderr)
            );
        }
    }
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(&foreign).unwrap().count(), 1);
}

#[test]
fn cat_into_closed_pipe_exits_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_arg(dir.path());
    append(
        &root,
        "big",
        &lines_input(20_000, 200),
        &["--durability", "none"],
    );
    let mut child = Command::new(BIN)
        .args(["cat", "--root", &root, "--log", "big"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 100];
    stdout.read_exact(&mut first).unwrap();
    drop(stdout); // like `| head -c 100`
    let output = child.wait_with_output().unwrap();
    expect_status(&output, 0);
    assert!(output.stderr.is_empty(), "{}", text(&output.stderr));
}

#[test]
fn inspect_text_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_arg(dir.path());
    append(
        &root,
        "alpha",
        &lines_input(3000, 100),
        &["--segment-bytes", "65536"],
    );
    append(&root, "beta", b"one\ntwo\n", &[]);

    let out = run(&["inspect", "--root", &root], b"");
    expect_status(&out, 0);
    let table = text(&out.stdout);
    assert!(table.contains("log alpha"), "{table}");
    assert!(table.contains("log beta"), "{table}");
    assert!(table.contains("sealed"), "{table}");
    assert!(table.contains("active"), "{table}");

    let out = run(&["inspect", "--root", &root, "--json"], b"");
    expect_status(&out, 0);
    let doc: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    let logs = doc["logs"].as_array().unwrap();
    assert_eq!(logs.len(), 2);
    let alpha = &logs[0];
    assert_eq!(alpha["name"], "alpha");
    assert_eq!(alpha["next_seq"], 3000);
    assert_eq!(alpha["durable_seq"], 3000);
    let log_id = alpha["log_id"].as_str().unwrap();
    assert_eq!(log_id.len(), 32);
    assert!(log_id.chars().all(|c| c.is_ascii_hexdigit()));
    let segments = alpha["segments"].as_array().unwrap();
    assert!(segments.len() >= 3, "{segments:?}");
    let mut expected_base = 0;
    for s in segments {
        assert_eq!(s["base_seq"], expected_base, "{s}");
        expected_base = s["end_seq"].as_u64().unwrap();
        for field in ["id", "file_bytes", "record_bytes"] {
            assert!(s[field].is_u64(), "{field} in {s}");
        }
        assert!(s["path"].as_str().unwrap().ends_with(".seg"), "{s}");
    }
    assert_eq!(expected_base, 3000);
    assert!(segments.iter().any(|s| s["state"] == "sealed"));
    assert_eq!(segments.last().unwrap()["state"], "active");
    assert_eq!(alpha["recovery"]["quarantined"], Value::Array(vec![]));

    let out = run(
        &["inspect", "--root", &root, "--log", "beta", "--json"],
        b"",
    );
    expect_status(&out, 0);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["logs"].as_array().unwrap().len(), 1);
    assert_eq!(doc["logs"][0]["next_seq"], 2);

    let out = run(&["inspect", "--root", &root, "--log", "gamma"], b"");
    expect_status(&out, 2);
}

#[test]
fn verify_clean_log() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_arg(dir.path());
    append(
        &root,
        "clean",
        &lines_input(3000, 100),
        &["--segment-bytes", "65536"],
    );
    let out = run(&["verify", "--root", &root], b"");
    expect_status(&out, 0);
    let report = text(&out.stdout);
    assert!(report.contains("log clean: ok"), "{report}");
    assert!(report.contains("3000 records verified"), "{report}");
    let out = run(&["verify", "--root", &root, "--log", "clean"], b"");
    expect_status(&out, 0);
}

/// A zeroed page in the middle of the active segment's records is damage, not a torn tail:
/// `verify` exits 3 and says which records were lost, and the next writable open (here
/// `append`) warns and keeps the dropped bytes in quarantine before writing over them.
/// A crash during a log's first open can leave its directories without a manifest: not a log,
/// so `verify` and `inspect` of the root pass over it, and `cat` says it does not exist.
#[test]
fn a_log_directory_left_without_a_manifest_is_not_a_log() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_arg(dir.path());
    append(&root, "good", b"x\n", &[]);
    let ghost = Path::new(&root).join("logs").join("ghost");
    std::fs::create_dir_all(ghost.join("segments")).unwrap();
    std::fs::create_dir_all(ghost.join("manifest")).unwrap();
    let out = run(&["verify", "--root", &root], b"");
    expect_status(&out, 0);
    assert!(
        !text(&out.stdout).contains("ghost"),
        "{}",
        text(&out.stdout)
    );
    let out = run(&["inspect", "--root", &root, "--json"], b"");
    expect_status(&out, 0);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["logs"].as_array().unwrap().len(), 1, "{doc}");
    assert!(
        doc["unreadable_logs"].as_array().unwrap().is_empty(),
        "{doc}"
    );
    let out = run(&["cat", "--root", &root, "--log", "ghost"], b"");
    expect_status(&out, 2);
    assert!(
        text(&out.stderr).contains("does not exist"),
        "{}",
        text(&out.stderr)
    );
    // Appending creates it.
    assert_eq!(append(&root, "ghost", b"y\n", &[]), vec![0]);
}

#[test]
fn verify_and_append_report_records_lost_behind_a_zeroed_page() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_arg(dir.path());
    append(
        &root,
        "a",
        &lines_input(500, 40),
        &["--durability", "always"],
    );
    let segment = segment_files(&root, "a").pop().unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[4096..8192].fill(0);
    std::fs::write(&segment, &bytes).unwrap();

    let out = run(&["verify", "--root", &root], b"");
    expect_status(&out, 3);
    let report = text(&out.stdout);
    assert!(report.contains("later frames (seq "), "{report}");
    assert!(report.contains("..=499"), "{report}");

    // A writable open that appends nothing finds the same damage again next time; the copy is
    // kept once.
    let out = run(&["append", "--root", &root, "--log", "a"], b"");
    expect_status(&out, 0);
    assert!(text(&out.stderr).contains("is damaged"));
    let out = run(&["append", "--root", &root, "--log", "a"], b"new\n");
    expect_status(&out, 0);
    let warning = text(&out.stderr);
    assert!(
        warning.contains("warning: log \"a\": segment 0 is damaged at offset"),
        "{warning}"
    );
    assert!(warning.contains("kept in"), "{warning}");
    let kept = Path::new(&root).join("quarantine").join("a");
    assert_eq!(std::fs::read_dir(&kept).unwrap().count(), 1);
}

/// One log that cannot be opened does not hide the others from `inspect`: they are shown, the
/// broken one is listed with its error, and the exit status reports it.
#[test]
fn inspect_shows_the_other_logs_when_one_cannot_be_opened() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_arg(dir.path());
    append(&root, "good", b"one\n", &[]);
    append(&root, "bad", b"two\n", &[]);
    let segment = segment_files(&root, "bad").pop().unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[..64].fill(0x5a);
    std::fs::write(&segment, &bytes).unwrap();
    let out = run(&["inspect", "--root", &root, "--json"], b"");
    expect_status(&out, 3);
    let doc: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    let logs = doc["logs"].as_array().unwrap();
    assert_eq!(logs.len(), 1, "{doc}");
    assert_eq!(logs[0]["name"], "good");
    assert_eq!(doc["unreadable_logs"][0]["name"], "bad", "{doc}");
    assert!(
        text(&out.stderr).contains("open log \"bad\""),
        "{}",
        text(&out.stderr)
    );
    let out = run(&["inspect", "--root", &root], b"");
    expect_status(&out, 3);
    assert!(text(&out.stdout).contains("log bad  cannot be opened"));
    assert!(text(&out.stdout).contains("log good"));
}

#[test]
fn verify_finds_flipped_byte_in_sealed_segment() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_arg(dir.path());
    let input = lines_input(3000, 100);
    // Without Tier 2: its copy would stand in for the damaged one (see
    // `verify_notes_a_damaged_local_copy_that_tier2_replaces`).
    let local = ["--tier2", "none"];
    append(
        &root,
        "bad",
        &input,
        &["--segment-bytes", "65536", "--tier2", "none"],
    );
    append(&root, "good", b"fine\n", &local);
    let segment = first_sealed_segment(&root, "bad", 65536);
    let len = std::fs::metadata(&segment).unwrap().len();
    assert!(len > 128 + 96 + 1000);
    flip_byte(&segment, len / 2);
    // Without a Tier 1 copy (reads would fall back to it and succeed).
    let _ = std::fs::remove_dir_all(
        dir.path()
            .join("root")
            .join("logs")
            .join("bad")
            .join("tier1"),
    );

    let out = run(&["verify", "--root", &root, "--tier2", "none"], b"");
    expect_status(&out, 3);
    let report = text(&out.stdout);
    let file_name = segment.file_name().unwrap().to_str().unwrap();
    let segment_id = file_name.trim_end_matches(".seg");
    assert!(
        report.contains(&format!("segment {segment_id}")),
        "{report}"
    );
    assert!(report.contains(file_name), "{report}");
    assert!(report.contains("offset"), "{report}");
    assert!(report.contains("log bad: CORRUPT"), "{report}");
    assert!(report.contains("log good: ok"), "{report}");
    assert!(text(&out.stderr).starts_with("aof2: error: corruption"));

    // Reading across the damaged record reports corruption too.
    let out = run(
        &["cat", "--root", &root, "--log", "bad", "--tier2", "none"],
        b"",
    );
    expect_status(&out, 3);
    assert!(out.stdout.len() < input.len());
}

#[test]
fn verify_notes_a_damaged_local_copy_that_tier2_replaces() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_arg(dir.path());
    let input = lines_input(3000, 100);
    append(
        &root,
        "r",
        &input,
        &["--segment-bytes", "65536", "--seal", "--wait-tier2"],
    );
    let segment = first_sealed_segment(&root, "r", 65536);
    let len = std::fs::metadata(&segment).unwrap().len();
    flip_byte(&segment, len - 40); // the footer: the open gives the Tier 0 copy up
    let _ = std::fs::remove_dir_all(dir.path().join("root").join("logs").join("r").join("tier1"));
    let id = segment.file_stem().unwrap().to_str().unwrap().to_string();

    let out = run(&["verify", "--root", &root, "--log", "r"], b"");
    expect_status(&out, 0);
    let report = text(&out.stdout);
    assert!(
        report.contains(&format!("segment {id}: note: Tier 0 copy given up")),
        "{report}"
    );
    assert!(report.contains("log r: ok"), "{report}");
    assert!(
        report.contains("3000 records verified, 0 problems"),
        "{report}"
    );
    assert!(report.contains("copies given up"), "{report}");

    let out = run(&["cat", "--root", &root, "--log", "r"], b"");
    expect_status(&out, 0);
    assert_eq!(out.stdout, input);
}

/// `verify --tier2-copies` also checks the objects of segments still held locally: a damaged
/// object behind a sound local copy passes a plain `verify` and fails this one (exit 3, naming it).
#[test]
fn verify_tier2_copies_finds_a_damaged_object_behind_a_sound_local_copy() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_arg(dir.path());
    let input = lines_input(3000, 100);
    append(
        &root,
        "c",
        &input,
        &["--segment-bytes", "65536", "--seal", "--wait-tier2"],
    );
    let out = run(&["verify", "--root", &root, "--tier2-copies"], b"");
    expect_status(&out, 0);
    let report = text(&out.stdout);
    assert!(report.contains("log c: ok"), "{report}");
    let checked = report
        .split(", ")
        .find_map(|part| part.strip_suffix(" Tier 2 copies checked)"))
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or_else(|| panic!("no Tier 2 count: {report}"));
    assert!(checked >= 2, "{report}");

    let store = dir.path().join("root").join("tier2");
    let object = std::fs::read_dir(store.join("aof2/logs/c"))
        .unwrap()
        .flat_map(|log_dir| std::fs::read_dir(log_dir.unwrap().path()).unwrap())
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "t1"))
        .min()
        .expect("an uploaded object");
    flip_byte(&object, 192 + 40); // inside its first zstd frame
    let out = run(&["verify", "--root", &root], b"");
    expect_status(&out, 0);
    let out = run(&["verify", "--root", &root, "--tier2-copies"], b"");
    expect_status(&out, 3);
    let report = text(&out.stdout);
    let name = object.file_name().unwrap().to_str().unwrap();
    assert!(report.contains(name), "{report}");
    assert!(report.contains("log c: CORRUPT"), "{report}");
}

#[test]
fn verify_reports_quarantined_segment() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_arg(dir.path());
    append(
        &root,
        "q",
        &lines_input(3000, 100),
        &["--segment-bytes", "65536", "--tier2", "none"],
    );
    let segment = first_sealed_segment(&root, "q", 65536);
    let len = std::fs::metadata(&segment).unwrap().len();
    flip_byte(&segment, len - 40); // inside the footer: recovery quarantines the segment
    // Without a Tier 1 copy to fall back on.
    let _ = std::fs::remove_dir_all(dir.path().join("root").join("logs").join("q").join("tier1"));
    let id = segment.file_stem().unwrap().to_str().unwrap().to_string();

    for _ in 0..2 {
        // The first run quarantines; the second finds it in the manifest.
        let out = run(
            &["verify", "--root", &root, "--log", "q", "--tier2", "none"],
            b"",
        );
        expect_status(&out, 3);
        let report = text(&out.stdout);
        assert!(report.contains(&format!("segment {id}")), "{report}");
        assert!(report.contains("quarantined"), "{report}");
    }
    let out = run(
        &[
            "inspect", "--root", &root, "--log", "q", "--json", "--tier2", "none",
        ],
        b"",
    );
    expect_status(&out, 0);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let states: Vec<&str> = doc["logs"][0]["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .collect();
    assert!(states.contains(&"quarantined"), "{states:?}");
}

#[test]
fn corruption_found_while_opening_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_arg(dir.path());
    append(&root, "broken", b"one\ntwo\n", &[]);
    append(&root, "intact", b"three\n", &[]);
    // Damage the header of the active segment (the first file): opening the log fails.
    let active = segment_files(&root, "broken").remove(0);
    flip_byte(&active, 20);
    let active_name = active.file_name().unwrap().to_str().unwrap().to_string();

    let out = run(&["verify", "--root", &root], b"");
    expect_status(&out, 3);
    let report = text(&out.stdout);
    assert!(report.contains("log broken: CORRUPT"), "{report}");
    assert!(report.contains(&active_name), "{report}");
    assert!(report.contains("log intact: ok"), "{report}");
    let err = text(&out.stderr);
    assert!(err.starts_with("aof2: error: corruption"), "{err}");
    assert!(err.contains(&active_name), "{err}");

    for args in [
        vec!["cat", "--root", &root, "--log", "broken"],
        vec!["inspect", "--root", &root],
        vec!["append", "--root", &root, "--log", "broken"],
    ] {
        let out = run(&args, b"more\n");
        expect_status(&out, 3);
        assert!(
            text(&out.stderr).contains(&active_name),
            "{}",
            text(&out.stderr)
        );
    }
}

#[test]
fn bad_log_names_are_invalid_input() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_arg(dir.path());
    for name in ["../escape", "-dash", "a/b", "", "é"] {
        // `--log=NAME` so that clap takes "-dash" as a value, not a flag.
        let log = format!("--log={name}");
        let out = run(&["append", "--root", &root, &log], b"x\n");
        expect_status(&out, 2);
        let err = text(&out.stderr);
        assert!(
            err.starts_with("aof2: error: invalid log name"),
            "{name}: {err}"
        );
        for command in ["cat", "inspect", "verify"] {
            let out = run(&[command, "--root", &root, &log], b"");
            expect_status(&out, 2);
        }
    }
    // Nothing was created for them.
    assert!(!Path::new(&root).join("logs").join("a").exists());
}

#[test]
fn usage_errors_exit_2_and_help_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_arg(dir.path());
    for args in [
        vec!["append", "--root", &root, "--log", "x", "--bogus"],
        vec!["append", "--log", "x"],
        vec![
            "append",
            "--root",
            &root,
            "--log",
            "x",
            "--durability",
            "later",
        ],
        vec![
            "append",
            "--root",
            &root,
            "--log",
            "x",
            "--durability",
            "interval:0",
        ],
        vec![
            "append",
            "--root",
            &root,
            "--log",
            "x",
            "--segment-bytes",
            "12q",
        ],
        vec!["cat", "--root", &root, "--log", "x", "--format", "xml"],
        vec!["cat", "--log", "x"],
        vec!["cat", "--root", &root, "--log", "x", "--follow"],
        vec!["restore", "--log", "x"],
        vec!["restore", "--root", &root],
        vec!["frobnicate"],
        vec![],
    ] {
        let out = run(&args, b"");
        expect_status(&out, 2);
    }
    // Out of the library's range: invalid input, and nothing is created.
    let out = run(
        &[
            "append",
            "--root",
            &root,
            "--log",
            "x",
            "--segment-bytes",
            "1000",
        ],
        b"a\n",
    );
    expect_status(&out, 2);
    assert!(!Path::new(&root).exists());

    for args in [
        vec!["--help"],
        vec!["append", "--help"],
        vec!["cat", "--help"],
        vec!["inspect", "--help"],
        vec!["verify", "--help"],
        vec!["bench", "--help"],
        vec!["restore", "--help"],
    ] {
        let out = run(&args, b"");
        expect_status(&out, 0);
        assert!(text(&out.stdout).contains("Usage"));
    }
}

#[test]
fn locked_root_is_an_environment_error() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_arg(dir.path());
    append(&root, "x", b"before\n", &[]);
    let holder = aof2::AofManager::open(aof2::ManagerConfig::new(&root)).unwrap();
    for args in [
        vec!["append", "--root", &root, "--log", "x"],
        vec!["cat", "--root", &root, "--log", "x"],
        vec!["inspect", "--root", &root],
        vec!["verify", "--root", &root],
    ] {
        let out = run(&args, b"more\n");
        expect_status(&out, 4);
        assert!(
            text(&out.stderr).contains("locked"),
            "{}",
            text(&out.stderr)
        );
    }
    holder.close().unwrap();
    drop(holder);
    assert_eq!(append(&root, "x", b"after\n", &[]), vec![1]);
}

fn bench_json(durability: &str, writers: &str) -> Value {
    let out = run(
        &[
            "bench",
            "--records",
            "2000",
            "--record-size",
            "100",
            "--writers",
            writers,
            "--durability",
            durability,
            "--segment-bytes",
            "256KiB",
            "--json",
        ],
        b"",
    );
    expect_status(&out, 0);
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

fn check_bench(report: &Value, durability: &str, writers: u64) {
    assert_eq!(report["records"], 2000);
    assert_eq!(report["record_size"], 100);
    assert_eq!(report["writers"], writers);
    assert_eq!(report["durability"], durability);
    for field in [
        "append_records_per_sec",
        "append_mb_per_sec",
        "read_records_per_sec",
        "reopen_ms",
        "fsync_mean_us",
    ] {
        assert!(
            report[field].as_f64().is_some_and(|v| v >= 0.0),
            "{field}: {report}"
        );
    }
    assert!(report["append_records_per_sec"].as_f64().unwrap() > 0.0);
    let latency = &report["append_latency_us"];
    let (p50, p99, p999) = (
        latency["p50"].as_f64().unwrap(),
        latency["p99"].as_f64().unwrap(),
        latency["p999"].as_f64().unwrap(),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= p999, "{latency}");
    assert!(report["fsyncs"].is_u64(), "{report}");
    // The tiering phase: every sealed segment compressed, then read back from Tier 1.
    assert!(
        report["segments_compressed"].as_u64().unwrap() >= 1,
        "{report}"
    );
    // Three quarters of each payload repeat a text.
    assert!(
        report["compression_ratio"].as_f64().unwrap() > 1.0,
        "{report}"
    );
    for field in [
        "tier1_compress_mb_per_sec",
        "read_tier1_records_per_sec",
        "read_tier1_mb_per_sec",
    ] {
        assert!(
            report[field].as_f64().is_some_and(|v| v > 0.0),
            "{field}: {report}"
        );
    }
    assert!(report["compression_level"].is_i64(), "{report}");
    assert!(report["tier0_peak_bytes"].as_u64().unwrap() > 0, "{report}");
    assert!(report["peak_rss_bytes"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["tier0_max_bytes"], 1u64 << 30);
    assert_eq!(report["tier1_max_bytes"], Value::Null);
    let default_compression = format!(
        "adaptive:{}..{}",
        aof2::limits::DEFAULT_MIN_ZSTD_LEVEL,
        aof2::limits::DEFAULT_MAX_ZSTD_LEVEL
    );
    assert_eq!(report["compression"], default_compression.as_str());
    // The Tier 2 phase, in the default store under the (temporary) root: uploads, then every
    // record of the sealed segments read back from Tier 2 alone.
    let url = report["tier2"].as_str().unwrap();
    assert!(
        url.starts_with("file:///") && url.ends_with("/tier2"),
        "{report}"
    );
    assert_eq!(report["tier2_breaker"], "closed", "{report}");
    assert_eq!(report["tier2_request_failures"], 0, "{report}");
    assert!(
        report["tier2_segments_uploaded"].as_u64().unwrap() >= 1,
        "{report}"
    );
    assert!(
        report["tier2_upload_bytes"].as_u64().unwrap() > 0,
        "{report}"
    );
    let read = report["read_tier2_records"].as_u64().unwrap();
    assert!(0 < read && read < 2000, "{report}");
    assert!(
        report["read_tier2_segments"].as_u64().unwrap() >= 1,
        "{report}"
    );
    assert!(
        report["tier2_ranged_gets"].as_u64().unwrap() >= 1,
        "{report}"
    );
    assert!(
        report["tier1_evicted_bytes"].as_u64().unwrap() > 0,
        "{report}"
    );
    for field in [
        "tier2_upload_mb_per_sec",
        "read_tier2_records_per_sec",
        "read_tier2_mb_per_sec",
        "tier2_wait_secs",
    ] {
        assert!(
            report[field].as_f64().is_some_and(|v| v >= 0.0),
            "{field}: {report}"
        );
    }
    assert!(report["read_tier2_records_per_sec"].as_f64().unwrap() > 0.0);
    assert!(report["tier2_upload_mb_per_sec"].as_f64().unwrap() > 0.0);
}

#[test]
fn bench_json_durability_none() {
    let report = bench_json("none", "1");
    check_bench(&report, "none", 1);
    assert!(report["segments_rolled"].as_u64().unwrap() >= 1, "{report}");
    // The fdatasync probe runs only for `always`.
    for field in [
        "fdatasync_probe_us",
        "group_commit_ceiling_per_sec",
        "group_commit_efficiency",
    ] {
        assert_eq!(report[field], Value::Null, "{field}: {report}");
    }
}

#[test]
fn bench_json_durability_always() {
    let report = bench_json("always", "3");
    check_bench(&report, "always", 3);
    assert!(report["fsyncs"].as_u64().unwrap() > 0, "{report}");
    // The device's own ceiling, timed beside the run: 3 writers ÷ one 4 KiB append + fdatasync.
    let probe_p50 = report["fdatasync_probe_us"]["p50"].as_f64().unwrap();
    assert!(probe_p50 > 0.0, "{report}");
    let ceiling = report["group_commit_ceiling_per_sec"].as_f64().unwrap();
    assert!(
        (ceiling - 3.0 * 1e6 / probe_p50).abs() <= 1e-6 * ceiling,
        "{report}"
    );
    let efficiency = report["group_commit_efficiency"].as_f64().unwrap();
    let rate = report["append_records_per_sec"].as_f64().unwrap();
    assert!((efficiency - rate / ceiling).abs() <= 1e-9, "{report}");
}

#[test]
fn bench_in_given_root_keeps_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_arg(dir.path());
    for _ in 0..2 {
        let out = run(
            &[
                "bench",
                "--root",
                &root,
                "--records",
                "500",
                "--record-size",
                "5",
                "--segment-bytes",
                "64KiB",
            ],
            b"",
        );
        expect_status(&out, 0);
        assert!(
            text(&out.stdout).contains("reopen"),
            "{}",
            text(&out.stdout)
        );
    }
    let out = run(
        &["inspect", "--root", &root, "--log", "bench", "--json"],
        b"",
    );
    expect_status(&out, 0);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["logs"][0]["next_seq"], 1000);
    let out = run(&["verify", "--root", &root], b"");
    expect_status(&out, 0);
}

#[test]
fn bench_rejects_bad_options() {
    let out = run(&["bench", "--records", "10", "--writers", "0"], b"");
    expect_status(&out, 2);
    let out = run(
        &[
            "bench",
            "--records",
            "10",
            "--record-size",
            "1MiB",
            "--segment-bytes",
            "64KiB",
        ],
        b"",
    );
    expect_status(&out, 2);
}

/// The segments of the one log in an `inspect --json` document.
fn inspect_segments(root: &str, log: &str) -> (Value, Vec<Value>) {
    let out = run(&["inspect", "--root", root, "--log", log, "--json"], b"");
    expect_status(&out, 0);
    let doc: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    let segments = doc["logs"][0]["segments"].as_array().unwrap().clone();
    (doc, segments)
}

#[test]
fn storage_options_are_accepted_by_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_arg(dir.path());
    let storage = [
        "--tier0-max-bytes",
        "256MiB",
        "--tier1-max-bytes",
        "1GiB",
        "--compression",
        "adaptive:1..5",
    ];
    let mut append_args = vec!["--segment-bytes", "64KiB"];
    append_args.extend_from_slice(&storage);
    assert_eq!(append(&root, "t", b"one\ntwo\n", &append_args), vec![0, 1]);
    for command in [
        vec!["cat", "--root", &root, "--log", "t"],
        vec!["verify", "--root", &root],
    ] {
        let mut args = command.clone();
        args.extend_from_slice(&storage);
        let out = run(&args, b"");
        expect_status(&out, 0);
    }
    // A fixed (negative) level is accepted too.
    let out = run(
        &[
            "inspect",
            "--root",
            &root,
            "--json",
            "--tier0-max-bytes",
            "256MiB",
            "--compression",
            "-1",
        ],
        b"",
    );
    expect_status(&out, 0);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["tiers"]["tier0_max_bytes"], 256u64 << 20);
    assert_eq!(doc["tiers"]["tier1_max_bytes"], Value::Null);
    assert_eq!(doc["tiers"]["compression_level"], -1);
    let mut args = vec!["inspect", "--root", &root, "--json"];
    args.extend_from_slice(&storage);
    let out = run(&args, b"");
    expect_status(&out, 0);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["tiers"]["tier1_max_bytes"], 1u64 << 30);
    let level = doc["tiers"]["compression_level"].as_i64().unwrap();
    assert!((1..=5).contains(&level), "{doc}");

    let out = run(
        &[
            "bench",
            "--records",
            "300",
            "--record-size",
            "100",
            "--segment-bytes",
            "64KiB",
            "--tier0-max-bytes",
            "256KiB",
            "--tier1-max-bytes",
            "64MiB",
            "--compression",
            "3",
            "--json",
        ],
        b"",
    );
    expect_status(&out, 0);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["tier0_max_bytes"], 256u64 << 10);
    assert_eq!(report["tier1_max_bytes"], 64u64 << 20);
    assert_eq!(report["compression"], "3");
    assert!(
        report["tier0_peak_bytes"].as_u64().unwrap() <= 256 << 10,
        "{report}"
    );
}

#[test]
fn tier0_budget_smaller_than_two_segments_is_invalid_input() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_arg(dir.path());
    let small = ["--segment-bytes", "64KiB", "--tier0-max-bytes", "100KiB"];
    let mut args = vec!["append", "--root", &root, "--log", "x"];
    args.extend_from_slice(&small);
    let out = run(&args, b"a\n");
    expect_status(&out, 2);
    let err = text(&out.stderr);
    assert!(
        err.starts_with("aof2: error: --tier0-max-bytes 102400 is too small"),
        "{err}"
    );
    assert!(err.contains("131072"), "{err}");
    assert!(!Path::new(&root).exists(), "nothing is created");

    // With the default segment size (64 MiB) the budget must be at least 128 MiB.
    let out = run(
        &[
            "append",
            "--root",
            &root,
            "--log",
            "x",
            "--tier0-max-bytes",
            "64MiB",
        ],
        b"a\n",
    );
    expect_status(&out, 2);
    assert!(text(&out.stderr).contains("--tier0-max-bytes 67108864"));
    assert!(!Path::new(&root).exists(), "nothing is created");

    append(&root, "x", b"a\n", &[]);
    for command in [
        vec!["cat", "--root", &root, "--log", "x"],
        vec!["inspect", "--root", &root],
        vec!["verify", "--root", &root],
        vec!["bench", "--records", "10"],
    ] {
        let mut args = command.clone();
        args.extend_from_slice(&small);
        let out = run(&args, b"");
        expect_status(&out, 2);
        assert!(
            text(&out.stderr).contains("--tier0-max-bytes 102400"),
            "{command:?}: {}",
            text(&out.stderr)
        );
    }
    for bad in [
        vec!["--compression", "0"],
        vec!["--compression", "adaptive:9..1"],
        // zstd reads level 0 as "default" (3): as a bound it would let the level pass it.
        vec!["--compression", "adaptive:-5..0"],
        vec!["--tier1-max-bytes", "lots"],
    ] {
        let mut args = vec!["append", "--root", &root, "--log", "x"];
        args.extend_from_slice(&bad);
        let out = run(&args, b"b\n");
        expect_status(&out, 2);
    }
}

#[test]
fn append_wait_tier1_then_inspect_and_verify_show_tier1_copies() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_arg(dir.path());
    let seqs = append(
        &root,
        "warm",
        &lines_input(3000, 100),
        &["--segment-bytes", "65536", "--wait-tier1"],
    );
    assert_eq!(seqs.len(), 3000);

    let (doc, segments) = inspect_segments(&root, "warm");
    let sealed: Vec<&Value> = segments.iter().filter(|s| s["state"] == "sealed").collect();
    assert!(sealed.len() >= 3, "{segments:?}");
    for s in &sealed {
        // Uploaded to the default Tier 2 store too, unless its upload is still running.
        let tier = s["tier"].as_str().unwrap();
        assert!(tier == "0+1" || tier == "0+1+2", "{s}");
        let tier1_bytes = s["tier1_bytes"].as_u64().unwrap();
        assert!(
            0 < tier1_bytes && tier1_bytes < s["record_bytes"].as_u64().unwrap(),
            "{s}"
        );
        // Text lines compress well.
        assert!(s["compression_ratio"].as_f64().unwrap() > 1.0, "{s}");
        assert!(s["tier1_level"].is_i64(), "{s}");
    }
    let active = segments.last().unwrap();
    assert_eq!(active["state"], "active");
    assert_eq!(active["tier"], "0");
    assert_eq!(active["tier1_bytes"], 0);
    assert_eq!(active["compression_ratio"], Value::Null);
    assert_eq!(active["tier1_level"], Value::Null);
    let tiers = &doc["tiers"];
    assert!(tiers["tier1_used_bytes"].as_u64().unwrap() > 0, "{tiers}");
    assert!(tiers["tier0_used_bytes"].as_u64().unwrap() > 0, "{tiers}");
    assert_eq!(tiers["tier0_max_bytes"], 1u64 << 30);

    let out = run(&["inspect", "--root", &root], b"");
    expect_status(&out, 0);
    let table = text(&out.stdout);
    assert!(table.contains("TIER1_BYTES"), "{table}");
    assert!(table.contains(" 0+1 "), "{table}");
    assert!(table.contains("tiers: Tier 0 "), "{table}");

    let out = run(&["verify", "--root", &root], b"");
    expect_status(&out, 0);
    let report = text(&out.stdout);
    assert!(
        report.contains(&format!(
            "log warm: ok, {} segments ({} Tier 1 copies checked), 3000 records verified",
            segments.len(),
            sealed.len()
        )),
        "{report}"
    );
}

/// `aof2 bench --root ROOT --segment-bytes 64KiB --tier2 none ARGS...`, which must succeed;
/// returns what it printed.
fn bench_64k_segments(root: &str, args: &[&str]) -> String {
    let mut all = vec![
        "bench",
        "--root",
        root,
        "--segment-bytes",
        "64KiB",
        "--tier2",
        "none",
    ];
    all.extend_from_slice(args);
    let out = run(&all, b"");
    expect_status(&out, 0);
    text(&out.stdout)
}

#[test]
fn bench_in_given_root_leaves_segments_only_in_tier1() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_arg(dir.path());
    let human = bench_64k_segments(&root, &["--records", "3000", "--record-size", "100"]);
    for line in [
        "tier 1:",
        "read tier 1:",
        "tier 2:        none",
        "peak RSS:",
    ] {
        assert!(human.contains(line), "{line}: {human}");
    }
    assert!(!Path::new(&root).join("tier2").exists());
    // The bench evicted every Tier 0 copy that Tier 1 holds.
    let (_, segments) = inspect_segments(&root, "bench");
    let sealed: Vec<&Value> = segments.iter().filter(|s| s["state"] == "sealed").collect();
    assert!(sealed.len() >= 3, "{segments:?}");
    for s in &sealed {
        assert_eq!(s["tier"], "1", "{s}");
        assert!(s["compression_ratio"].as_f64().unwrap() > 1.0, "{s}");
    }
    let out = run(&["verify", "--root", &root, "--log", "bench"], b"");
    expect_status(&out, 0);
    let report = text(&out.stdout);
    assert!(
        report.contains(&format!("({} Tier 1 copies checked)", sealed.len())),
        "{report}"
    );
    assert!(report.contains("3000 records verified"), "{report}");
}

// ---------------------------------------------------------------- Tier 2

/// URL of a Tier 2 store directory that several roots share.
fn store_url(dir: &Path) -> String {
    format!("file://{}", dir.join("store").display())
}

/// `inspect --json` of one log, with `extra` options.
fn inspect_log(root: &str, log: &str, extra: &[&str]) -> Value {
    let mut args = vec!["inspect", "--root", root, "--log", log, "--json"];
    args.extend_from_slice(extra);
    let out = run(&args, b"");
    expect_status(&out, 0);
    serde_json::from_slice(&out.stdout).expect("one JSON document")
}

/// One past the last record of the sealed segments of the one log in `doc`.
fn sealed_end(doc: &Value) -> u64 {
    doc["logs"][0]["segments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["state"] == "sealed")
        .map(|s| s["end_seq"].as_u64().unwrap())
        .max()
        .expect("a sealed segment")
}

/// The first `n` lines of `input`, newlines included.
fn first_lines(input: &[u8], n: u64) -> Vec<u8> {
    input
        .split_inclusive(|&b| b == b'\n')
        .take(n as usize)
        .flatten()
        .copied()
        .collect()
}

#[test]
fn tier2_store_defaults_to_the_root_and_none_turns_it_off() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_arg(dir.path());
    let input = lines_input(3000, 100);
    let seqs = append(
        &root,
        "t",
        &input,
        &["--segment-bytes", "64KiB", "--wait-tier2"],
    );
    assert_eq!(seqs.len(), 3000);
    let store = Path::new(&root).join("tier2");
    assert!(store.join("aof2").join("logs").join("t").is_dir());

    let doc = inspect_log(&root, "t", &[]);
    let tier2 = &doc["tiers"]["tier2"];
    assert_eq!(tier2["url"], format!("file://{}", store.display()), "{doc}");
    assert_eq!(tier2["breaker"], "closed", "{doc}");
    for field in [
        "segments_uploaded",
        "upload_backlog",
        "requests",
        "ranged_gets",
    ] {
        assert!(tier2[field].is_u64(), "{field}: {doc}");
    }
    // --wait-tier2: the catalog lists every sealed segment.
    let end = sealed_end(&doc);
    assert!(end >= 2000, "{doc}");
    let catalog = &doc["logs"][0]["tier2_catalog"];
    assert_eq!(catalog["first_seq"], 0, "{doc}");
    assert_eq!(catalog["end_seq"], end, "{doc}");
    assert!(catalog["epoch"].as_u64().unwrap() >= 1, "{doc}");
    assert_eq!(catalog["error"], Value::Null, "{doc}");
    let out = run(&["inspect", "--root", &root], b"");
    expect_status(&out, 0);
    let table = text(&out.stdout);
    assert!(
        table.contains(&format!(
            "tier 2: catalog of writer epoch {}",
            catalog["epoch"]
        )),
        "{table}"
    );
    assert!(table.contains("tier 2: file://"), "{table}");
    assert!(table.contains("circuit breaker closed"), "{table}");

    // Without Tier 2 nothing is uploaded, and reading commands do not create the default store.
    let plain = dir.path().join("plain").display().to_string();
    append(&plain, "p", b"a\nb\n", &["--tier2", "none"]);
    assert!(!Path::new(&plain).join("tier2").exists());
    for command in [
        vec!["cat", "--root", &plain, "--log", "p"],
        vec!["verify", "--root", &plain],
        vec!["inspect", "--root", &plain],
    ] {
        let out = run(&command, b"");
        expect_status(&out, 0);
    }
    assert!(!Path::new(&plain).join("tier2").exists());
    for extra in [&[][..], &["--tier2", "none"]] {
        let doc = inspect_log(&plain, "p", extra);
        assert_eq!(doc["tiers"]["tier2"], Value::Null, "{doc}");
        assert_eq!(doc["logs"][0]["tier2_catalog"], Value::Null, "{doc}");
    }
    let out = run(&["inspect", "--root", &plain], b"");
    assert!(text(&out.stdout).contains("tier 2: none"));
    // Nor an explicitly named store that does not exist (it holds nothing to read).
    let absent = format!("file://{}", dir.path().join("absent").display());
    for command in ["cat", "verify", "inspect"] {
        let out = run(
            &[command, "--root", &plain, "--log", "p", "--tier2", &absent],
            b"",
        );
        expect_status(&out, 0);
    }
    assert!(!dir.path().join("absent").exists());
    // Waiting for uploads that cannot happen is a usage error, caught before anything opens.
    let out = run(
        &[
            "append",
            "--root",
            &plain,
            "--log",
            "p",
            "--tier2",
            "none",
            "--wait-tier2",
        ],
        b"c\n",
    );
    expect_status(&out, 2);
    assert!(text(&out.stderr).contains("--wait-tier2"));
}

#[test]
fn bad_tier2_options_are_invalid_input_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_arg(dir.path());
    let bad_options: [&[&str]; 9] = [
        &["--tier2", "memory://"],
        &["--tier2", "http://example.com/bucket"],
        &["--tier2", "file://relative/dir"],
        &["--tier2", "s3://"],
        &["--tier2", ""],
        &["--tier2", "/tmp/plain/path"],
        &["--tier2-option", "no-equals-sign"],
        &["--tier2", "none", "--take-over"],
        &["--tier2", "none", "--tier2-option", "aws_allow_http=true"],
    ];
    for bad in bad_options {
        for command in [
            vec!["append", "--root", &root, "--log", "x"],
            vec!["restore", "--root", &root, "--log", "x"],
            vec!["bench", "--root", &root, "--records", "10"],
            vec!["cat", "--remote", "--root", &root, "--log", "x"],
        ] {
            let mut args = command.clone();
            args.extend_from_slice(bad);
            let out = run(&args, b"a\n");
            expect_status(&out, 2);
            assert!(
                text(&out.stderr).contains("error"),
                "{args:?}: {}",
                text(&out.stderr)
            );
            assert!(!Path::new(&root).exists(), "{args:?} created the root");
        }
    }
    // A URL's message names the problem.
    let out = run(
        &[
            "append",
            "--root",
            &root,
            "--log",
            "x",
            "--tier2",
            "ftp://h/b",
        ],
        b"a\n",
    );
    expect_status(&out, 2);
    assert!(text(&out.stderr).contains("s3://, file:// or memory://"));
    // `--remote` needs a store: from --tier2, or the default store of --root.
    let out = run(&["cat", "--remote", "--log", "x"], b"");
    expect_status(&out, 2);
    assert!(
        text(&out.stderr).contains("--tier2"),
        "{}",
        text(&out.stderr)
    );
    // Reading a store that does not exist does not create it.
    let missing = dir.path().join("missing");
    let url = format!("file://{}", missing.display());
    for command in [
        vec!["cat", "--remote", "--tier2", &url, "--log", "x"],
        vec!["restore", "--root", &root, "--tier2", &url, "--log", "x"],
    ] {
        let out = run(&command, b"");
        expect_status(&out, 2);
        assert!(
            text(&out.stderr).contains("does not exist"),
            "{}",
            text(&out.stderr)
        );
    }
    assert!(!missing.exists());
    assert!(!Path::new(&root).exists());
}

#[test]
fn restore_rebuilds_a_log_from_tier2_and_take_over_continues_it() {
    let dir = tempfile::tempdir().unwrap();
    let url = store_url(dir.path());
    let a = dir.path().join("a").display().to_string();
    let b = dir.path().join("b").display().to_string();
    let input = lines_input(3000, 100);
    let shared = ["--tier2", url.as_str()];
    let mut options = vec!["--segment-bytes", "64KiB", "--wait-tier2"];
    options.extend_from_slice(&shared);
    append(&a, "orders", &input, &options);
    let end = sealed_end(&inspect_log(&a, "orders", &shared));

    // Root b is empty: everything comes from Tier 2.
    let restore = |root: &str, log: &str| {
        run(
            &[
                "restore", "--root", root, "--tier2", &url, "--log", log, "--json",
            ],
            b"",
        )
    };
    let out = restore(&b, "orders");
    expect_status(&out, 0);
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(report["log"], "orders");
    assert_eq!(report["first_seq"], 0, "{report}");
    assert_eq!(report["end_seq"], end, "{report}");
    let segments = report["segments"].as_u64().unwrap();
    assert!(segments >= 3, "{report}");
    assert_eq!(report["segments_downloaded"], segments, "{report}");
    assert!(report["bytes_downloaded"].as_u64().unwrap() > 0, "{report}");
    assert!(report["catalog_epoch"].as_u64().unwrap() >= 1, "{report}");
    assert_eq!(report["log_id"].as_str().unwrap().len(), 32);
    for field in ["seconds", "mb_per_sec"] {
        assert!(report[field].as_f64().is_some_and(|v| v >= 0.0), "{report}");
    }
    let out = run(&["cat", "--root", &b, "--log", "orders"], b"");
    expect_status(&out, 0);
    assert_eq!(out.stdout, first_lines(&input, end));
    let out = run(&["verify", "--root", &b, "--log", "orders"], b"");
    expect_status(&out, 0);
    assert!(text(&out.stdout).contains(&format!("{end} records verified")));

    // A second restore of the same log into b is refused; so is a log the store lacks.
    let out = restore(&b, "orders");
    expect_status(&out, 2);
    assert!(text(&out.stderr).contains("already exists"));
    let out = restore(&b, "nosuch");
    expect_status(&out, 2);
    assert!(!Path::new(&b).join("logs").join("nosuch").exists());
    // Human summary.
    let c = dir.path().join("c").display().to_string();
    let out = run(
        &["restore", "--root", &c, "--tier2", &url, "--log", "orders"],
        b"",
    );
    expect_status(&out, 0);
    let summary = text(&out.stdout);
    assert!(
        summary.starts_with(&format!(
            "restored log orders: {segments} segments ({segments} downloaded into Tier 1), \
             records 0..{end}, "
        )),
        "{summary}"
    );

    // Root a still holds the writer claim: b may not append without taking it over.
    let mut b_append = vec!["append", "--root", &b, "--log", "orders"];
    b_append.extend_from_slice(&shared);
    let out = run(&b_append, b"refused\n");
    expect_status(&out, 4);
    assert!(text(&out.stdout).is_empty());
    let err = text(&out.stderr);
    assert!(err.contains("fenced"), "{err}");
    assert!(err.contains("--take-over"), "{err}");
    b_append.push("--take-over");
    let seqs = append(&b, "orders", b"after one\nafter two\n", &b_append[5..]);
    assert_eq!(seqs, vec![end, end + 1]);
    let out = run(&["cat", "--root", &b, "--log", "orders"], b"");
    expect_status(&out, 0);
    let mut expected = first_lines(&input, end);
    expected.extend_from_slice(b"after one\nafter two\n");
    assert_eq!(out.stdout, expected);

    // Now a is the fenced one.
    let mut a_append = vec!["append", "--root", &a, "--log", "orders"];
    a_append.extend_from_slice(&shared);
    let out = run(&a_append, b"late\n");
    expect_status(&out, 4);
    assert!(
        text(&out.stderr).contains("fenced"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn cat_remote_reads_the_uploaded_prefix_without_a_root() {
    let dir = tempfile::tempdir().unwrap();
    let url = store_url(dir.path());
    let a = dir.path().join("a").display().to_string();
    let input = lines_input(3000, 100);
    append(
        &a,
        "events",
        &input,
        &["--segment-bytes", "64KiB", "--wait-tier2", "--tier2", &url],
    );
    let end = sealed_end(&inspect_log(&a, "events", &["--tier2", &url]));
    assert!((2000..3000).contains(&end), "{end}");

    // The writer's root stays locked: the remote reader needs none.
    let holder = aof2::AofManager::open(aof2::ManagerConfig::new(&a)).unwrap();
    let cat = |extra: &[&str]| {
        let mut args = vec!["cat", "--remote", "--tier2", &url, "--log", "events"];
        args.extend_from_slice(extra);
        let out = run(&args, b"");
        expect_status(&out, 0);
        out.stdout
    };
    assert_eq!(cat(&[]), first_lines(&input, end));
    let from_10 = &first_lines(&input, 13)[first_lines(&input, 10).len()..];
    assert_eq!(cat(&["--from", "10", "--limit", "3"]), from_10);
    assert!(cat(&["--from", &end.to_string()]).is_empty());
    let json = text(&cat(&["--format", "json", "--limit", "2"]));
    let objects: Vec<Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(objects.len(), 2);
    assert_eq!(objects[1]["seq"], 1);
    assert_eq!(objects[1]["len"], 100);
    holder.close().unwrap();
    drop(holder);

    // --root alone names the root's default store, which the writer (given --tier2) never made.
    let out = run(&["cat", "--remote", "--root", &a, "--log", "events"], b"");
    expect_status(&out, 2);
    let out = run(
        &["cat", "--remote", "--tier2", &url, "--log", "missing"],
        b"",
    );
    expect_status(&out, 2);
    assert!(
        text(&out.stderr).contains("no catalog"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn append_seal_puts_every_record_in_tier2() {
    let dir = tempfile::tempdir().unwrap();
    let url = store_url(dir.path());
    let a = dir.path().join("a").display().to_string();
    let input = lines_input(500, 40);
    append(
        &a,
        "tail",
        &input,
        &["--seal", "--wait-tier2", "--tier2", &url],
    );
    let out = run(&["cat", "--remote", "--tier2", &url, "--log", "tail"], b"");
    expect_status(&out, 0);
    assert_eq!(out.stdout, input);
}

#[test]
fn cat_remote_follow_prints_records_as_the_writer_uploads_them() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let url = store_url(dir.path());
    let a = dir.path().join("a").display().to_string();
    let input = lines_input(6000, 100);
    let (first, second) = input.split_at(first_lines(&input, 3000).len());
    let options = ["--segment-bytes", "64KiB", "--wait-tier2", "--tier2", &url];
    append(&a, "feed", first, &options);
    let end = sealed_end(&inspect_log(&a, "feed", &["--tier2", &url]));
    // The second batch seals at least this much more (a segment holds about 500 of these lines).
    let limit = end + 1000;

    let mut child = Command::new(BIN)
        .args([
            "cat", "--remote", "--tier2", &url, "--log", "feed", "--follow",
        ])
        .args(["--poll-ms", "20", "--limit", &limit.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        // Kill a follower that never finishes, so the test fails instead of hanging. (Until
        // `wait` below reaps it, the child's pid cannot belong to another process.)
        if finished
            .recv_timeout(std::time::Duration::from_secs(120))
            .is_err()
        {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
    });
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut printed = Vec::new();
    for _ in 0..end {
        // What Tier 2 holds now arrives before the writer appends anything more.
        lines.read_until(b'\n', &mut printed).unwrap();
    }
    assert_eq!(printed, first_lines(&input, end));
    append(&a, "feed", second, &options);
    lines.read_to_end(&mut printed).unwrap();
    let _ = done.send(());
    watchdog.join().unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(printed, first_lines(&input, limit));
}

#[test]
fn bench_in_given_root_leaves_sealed_segments_only_in_tier2() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_arg(dir.path());
    let out = run(
        &[
            "bench",
            "--root",
            &root,
            "--records",
            "3000",
            "--record-size",
            "100",
            "--segment-bytes",
            "64KiB",
        ],
        b"",
    );
    expect_status(&out, 0);
    let human = text(&out.stdout);
    for line in ["read tier 1:", "tier 2:", "read tier 2:", "ranged GETs"] {
        assert!(human.contains(line), "{line}: {human}");
    }
    // Neither Tier 0 nor Tier 1 holds the sealed segments now; the default store under the root
    // does, and reads (verify, cat) fetch from it.
    let doc = inspect_log(&root, "bench", &[]);
    let segments = doc["logs"][0]["segments"].as_array().unwrap();
    let sealed: Vec<&Value> = segments.iter().filter(|s| s["state"] == "sealed").collect();
    assert!(sealed.len() >= 3, "{segments:?}");
    for s in &sealed {
        assert_eq!(s["tier1_bytes"], 0, "{s}");
        assert_eq!(s["file_bytes"], 0, "{s}");
    }
    assert_eq!(doc["logs"][0]["tier2_catalog"]["end_seq"], sealed_end(&doc));
    let out = run(&["verify", "--root", &root, "--log", "bench"], b"");
    expect_status(&out, 0);
    let report = text(&out.stdout);
    assert!(report.contains("(0 Tier 1 copies checked)"), "{report}");
    assert!(report.contains("3000 records verified"), "{report}");
    let out = run(&["cat", "--root", &root, "--log", "bench"], b"");
    expect_status(&out, 0);
    assert_eq!(out.stdout.len(), 3000 * 101);
    // Without the store, the log cannot be opened: the message says how to give it.
    let out = run(
        &["cat", "--root", &root, "--log", "bench", "--tier2", "none"],
        b"",
    );
    expect_status(&out, 2);
    assert!(
        text(&out.stderr).contains("--tier2"),
        "{}",
        text(&out.stderr)
    );
}

/// A log with far more Tier 1 segments than the process may have open files reads whole: Tier 1
/// descriptors are opened on demand and only a few stay cached (before, every Tier 1 file of the
/// log stayed open and the open failed with "Too many open files").
#[test]
fn cat_reads_more_tier1_segments_than_open_files_allow() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_arg(dir.path());
    bench_64k_segments(
        &root,
        &[
            "--records",
            "20000",
            "--tier0-max-bytes",
            "256KiB",
            "--json",
        ],
    );
    let tier1 = std::fs::read_dir(Path::new(&root).join("logs/bench/tier1"))
        .unwrap()
        .count();
    assert!(tier1 > 200, "{tier1} Tier 1 files");
    let out = Command::new("sh")
        .arg("-c")
        .arg(r#"ulimit -n 48 && exec "$0" cat --root "$1" --log bench --format json"#)
        .arg(BIN)
        .arg(&root)
        .output()
        .expect("run sh");
    expect_status(&out, 0);
    assert_eq!(text(&out.stdout).lines().count(), 20000);
}

/// `--tier2 s3://...` and `--tier2-option`s pointing at `target` of the local S3 server.
fn s3_args(target: &aof2_s3_local::Tier2Target) -> Vec<String> {
    let mut args = vec!["--tier2".to_string(), target.url.clone()];
    for (key, value) in &target.options {
        args.push("--tier2-option".into());
        args.push(format!("{key}={value}"));
    }
    args
}

/// A `--tier2` URL naming a bucket that does not exist is a configuration error: `append`,
/// `restore` and `bench` exit 2 at once with a message naming the bucket and saying to create it
/// or correct the URL. `append` used to open with the claim "deferred", append, and exit 0 with
/// nothing ever uploaded (or, with --wait-tier2, exit 4 "circuit breaker" after minutes);
/// `restore` exited 4, "unavailable".
#[test]
fn a_missing_tier2_bucket_is_a_configuration_error() {
    let server = aof2_s3_local::S3Server::start();
    let bucket = aof2_s3_local::unique_bucket("cli-missing");
    let tier2 = s3_args(&server.missing_bucket(&bucket));
    let tier2: Vec<&str> = tier2.iter().map(String::as_str).collect();
    let dir = tempfile::tempdir().unwrap();
    let root = root_arg(dir.path());
    let commands: [Vec<&str>; 3] = [
        vec!["append", "--root", &root, "--log", "orders"],
        vec!["restore", "--root", &root, "--log", "orders"],
        vec!["bench", "--root", &root, "--records", "1000"],
    ];
    for mut args in commands {
        args.extend_from_slice(&tier2);
        let out = run(&args, b"one\ntwo\n");
        expect_status(&out, 2);
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains(&bucket) && stderr.contains("does not exist"),
            "{args:?}: {stderr}"
        );
        assert!(stderr.contains("create it"), "{args:?}: {stderr}");
    }
}

/// Credentials the store rejects are a configuration error too: exit 2, saying to check them.
#[test]
fn rejected_tier2_credentials_are_a_configuration_error() {
    let server = aof2_s3_local::S3Server::start();
    if server.external() {
        eprintln!("skipped: the external S3 server (moto) does not check credentials");
        return;
    }
    let bucket = aof2_s3_local::unique_bucket("cli-secret");
    server.bucket(&bucket);
    let tier2 = s3_args(&server.target_with_secret(&bucket, "wrong-secret"));
    let dir = tempfile::tempdir().unwrap();
    let root = root_arg(dir.path());
    let mut args = vec!["append", "--root", &root, "--log", "orders"];
    args.extend(tier2.iter().map(String::as_str));
    let out = run(&args, b"one\n");
    expect_status(&out, 2);
    let stderr = text(&out.stderr);
    assert!(stderr.contains("credentials rejected"), "{stderr}");
}
