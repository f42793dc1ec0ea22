#!/usr/bin/env bash
# Coverage-guided fuzzing of every aof2 decoder (fuzz/, cargo-fuzz + libFuzzer, nightly).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]     default 60
#
# Installs cargo-fuzz if `cargo fuzz` is missing, seeds each target's corpus (fuzz/corpus/<target>)
# from the golden files in testdata/ and from a small log written with the aof2 CLI (segments,
# Tier 1 files, manifest, Tier 2 catalog and claims), then runs every target for that many
# seconds. Environment: FUZZ_JOBS=N runs N targets at a time (default 1), FUZZ_TARGETS="a b"
# runs only those, FUZZ_KEEP_GOING=1 keeps a target running after a crash (libFuzzer fork mode)
# to find more than the first. Logs go to fuzz/logs/<target>.log, crash reproducers to
# fuzz/artifacts/<target>/. Exits non-zero if any target crashed (panic, timeout, out of memory).
# Not part of scripts/test.sh or CI: it needs minutes per target.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
secs=${1:-60}
jobs=${FUZZ_JOBS:-1}
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

targets=${FUZZ_TARGETS:-$(cd fuzz && cargo +nightly fuzz list)}

# ---------------------------------------------------------------- seed corpora
corpus=$repo/fuzz/corpus
td=$repo/testdata

# add TARGET FILE...: copy files into the target's corpus under their content hash.
add() {
  local target=$1
  shift
  mkdir -p "$corpus/$target"
  local f
  for f in "$@"; do
    [ -s "$f" ] || continue
    cp "$f" "$corpus/$target/seed-$(sha1sum "$f" | cut -c1-16)"
  done
}

u32() { od -An -t u4 -j "$2" -N 4 "$1" | tr -d ' '; }
u64() { od -An -t u8 -j "$2" -N 8 "$1" | tr -d ' '; }

# bodies WAL_RECORDS_FILE OUT_PREFIX: write each record body (one edit) to OUT_PREFIX.N.
bodies() {
  local file=$1 out=$2 pos=0 n=0 size len
  size=$(stat -c %s "$file")
  while [ $((pos + 8)) -le "$size" ]; do
    len=$(u32 "$file" $((pos + 4)))
    [ $((pos + 8 + len)) -le "$size" ] || break
    tail -c +$((pos + 9)) "$file" | head -c "$len" >"$out.$n"
    pos=$((pos + 8 + len))
    n=$((n + 1))
  done
}

seed() {
  local scratch
  scratch=$(mktemp -d)
  # A small log: three sealed segments (compressed into Tier 1, uploaded to a file:// Tier 2
  # with a catalog and writer claims) and an active one.
  cargo build --release -q -p aof2-cli
  local aof2=$repo/target/release/aof2 root=$scratch/root i
  for i in 1 2 3; do
    seq $((i * 1000)) $((i * 1000 + 40)) | sed 's/^/record line /' |
      "$aof2" append --root "$root" --log seed --segment-bytes 64K --tier0-max-bytes 1M \
        --compression 3 --seal --wait-tier1 --wait-tier2 >/dev/null
  done
  seq 1 20 | "$aof2" append --root "$root" --log seed --segment-bytes 64K \
    --tier0-max-bytes 1M >/dev/null
  local log=$root/logs/seed s t w
  mkdir -p "$scratch/parts"
  local p=$scratch/parts

  add root_file "$td/root-v1.bin" "$root/aof2.root"
  add frame "$td/frame-v1.bin" "$td/frame-empty-v1.bin"
  add sparse_index "$td/index-v1.bin"
  add segment_header "$td/segment-header-v1.bin"
  add segment_footer "$td/segment-footer-v1.bin"
  add claim "$td/claim-v1.bin" "$root"/tier2/aof2/logs/seed/writer/*
  add catalog "$td/catalog-v1.bin" "$root"/tier2/aof2/logs/seed/catalog/*
  add snapshot "$td/manifest-snapshot-v1.bin"
  add wal_header "$td/manifest-wal-v1.bin"
  # A whole golden sealed segment: header, two frames, sparse index, footer.
  cat "$td/segment-header-v1.bin" "$td/frame-v1.bin" "$td/frame-empty-v1.bin" \
    "$td/index-v1.bin" "$td/segment-footer-v1.bin" >"$p/golden.seg"
  add open_segment "$p/golden.seg"
  add open_manifest "$td/manifest-wal-v1.bin" "$td/manifest-snapshot-v1.bin"
  cat "$td/manifest-snapshot-v1.bin" "$td/manifest-wal-v1.bin" >"$p/snapshot+wal"
  add open_manifest "$p/snapshot+wal"
  tail -c +33 "$td/manifest-wal-v1.bin" >"$p/golden.records"
  add wal_record "$p/golden.records" "$td/manifest-tier2-edits-v1.bin"
  bodies "$p/golden.records" "$p/edit-a"
  bodies "$td/manifest-tier2-edits-v1.bin" "$p/edit-b"

  for w in "$log"/manifest/wal-*; do
    add open_manifest "$w"
    add wal_header "$w"
    tail -c +33 "$w" >"$p/records"
    add wal_record "$p/records"
    bodies "$p/records" "$p/edit-c"
  done
  [ -f "$log/manifest/snapshot" ] && add snapshot "$log/manifest/snapshot"
  [ -f "$log/manifest/snapshot" ] && add open_manifest "$log/manifest/snapshot"
  add manifest_edit "$p"/edit-*

  for s in "$log"/segments/*.seg; do
    i=$(basename "$s" .seg)
    head -c 128 "$s" >"$p/$i.header"
    add segment_header "$p/$i.header"
    if [ "$(stat -c %s "$s")" -lt 65536 ]; then
      tail -c 96 "$s" >"$p/$i.footer"
      add segment_footer "$p/$i.footer"
      add open_segment "$s"
    else
      # The active (preallocated) segment: its frames and some of the zeros after them.
      head -c 4096 "$s" >"$p/$i.active"
      add open_segment "$p/$i.active"
    fi
    tail -c +129 "$s" | head -c 4096 >"$p/$i.frames"
    add frame "$p/$i.frames"
  done

  for t in "$log"/tier1/*.t1; do
    i=$(basename "$t" .t1)
    local len frames tail_at
    len=$(stat -c %s "$t")
    add open_tier1 "$t"
    head -c 64 "$t" >"$p/$i.t1header"
    add tier1_header "$p/$i.t1header"
    tail -c 64 "$t" >"$p/$i.t1footer"
    cat "$p/$i.t1footer" "$p/$i.t1header" >"$p/$i.t1footer+header"
    add tier1_footer "$p/$i.t1footer" "$p/$i.t1footer+header"
    frames=$(u32 "$t" $((len - 64 + 12)))
    tail_at=$(u64 "$t" $((len - 64 + 16)))
    { cat "$p/$i.t1footer"; tail -c +$((tail_at - 32 * frames + 1)) "$t" | head -c $((32 * frames)); } \
      >"$p/$i.frameindex"
    add tier1_frame_index "$p/$i.frameindex"
    # The segment's sparse index copy.
    tail -c +$((tail_at + 1)) "$t" | head -c $((len - 64 - 96 - tail_at)) >"$p/$i.sparse"
    add sparse_index "$p/$i.sparse"
  done
  rm -rf "$scratch"
}

# Seed once: a corpus that exists already holds the seeds and what earlier runs found.
unseeded=""
for target in $targets; do
  [ -n "$(ls -A "$corpus/$target" 2>/dev/null)" ] || unseeded="$unseeded $target"
done
if [ -n "$unseeded" ]; then
  echo "== seeding fuzz/corpus (empty:$unseeded)"
  seed
fi

echo "== building fuzz targets (nightly, address sanitizer, debug assertions)"
(cd fuzz && cargo +nightly fuzz build)

# ---------------------------------------------------------------- run
mkdir -p fuzz/logs
run() {
  local target=$1 rc=0 before after final
  local keep_going=()
  if [ -n "${FUZZ_KEEP_GOING:-}" ]; then
    keep_going=(-fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)
  fi
  mkdir -p "fuzz/artifacts/$target"
  before=$(find "fuzz/artifacts/$target" -type f | wc -l)
  # -detect_leaks=0: the file-level targets leave background threads' allocations in flight,
  # which would make LeakSanitizer scan the heap after every input (and leaks are not what
  # these targets look for). -timeout catches endless loops, -malloc_limit_mb huge allocations.
  (cd fuzz && cargo +nightly fuzz run "$target" -- -max_total_time="$secs" -timeout=10 \
    -malloc_limit_mb=512 -detect_leaks=0 -print_final_stats=1 "${keep_going[@]}") \
    >"fuzz/logs/$target.log" 2>&1 || rc=$?
  after=$(find "fuzz/artifacts/$target" -type f | wc -l)
  if [ "$rc" -eq 0 ] && [ "$after" -gt "$before" ]; then
    rc=1
  fi
  final=$(grep -E '^#[0-9]+:?[[:space:]].*cov: ' "fuzz/logs/$target.log" | tail -1 || true)
  if [ "$rc" -eq 0 ]; then
    echo "ok    $target: $final"
  else
    echo "CRASH $target (exit $rc): $final; see fuzz/logs/$target.log and fuzz/artifacts/$target/"
  fi
  return "$rc"
}

echo "== running each target for ${secs}s, $jobs at a time:" $targets
failed=0
running=0
for target in $targets; do
  run "$target" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then
    wait -n || failed=1
    running=$((running - 1))
  fi
done
while [ "$running" -gt 0 ]; do
  wait -n || failed=1
  running=$((running - 1))
done
# The file-level targets' scratch roots (one per fuzzing process; see fuzz/src/lib.rs).
rm -rf /dev/shm/aof2-fuzz-* "${TMPDIR:-/tmp}"/aof2-fuzz-*
if [ "$failed" -ne 0 ]; then
  echo "fuzzing found crashes"
  exit 1
fi
echo "no crashes"
