#!/usr/bin/env bash
# Runs the libFuzzer targets of fuzz/ (cargo-fuzz) for SECONDS each, one after the other.
#
#   tests/fuzz.sh SECONDS [--keep-corpus] [TARGET...]
#
# Each target starts from its committed seed corpus, fuzz/corpus/<target>/. Without
# --keep-corpus it runs on a temporary copy, so the checkout is left as it was (`./build.sh test`);
# with it, new inputs land in fuzz/corpus/<target>/ and the corpus is minimised (`cargo fuzz
# cmin`) afterwards (`./build.sh fuzz`). Any crash, panic (a broken invariant), timeout or
# memory blow-up fails the run: the target, the saved input (fuzz/artifacts/<target>/...) and the
# panic are printed, and every other target still runs. Exit 1 on any failure, 2 on bad usage.
#
# cargo-fuzz builds with nightly-only flags (-Zsanitizer=address); the stable toolchain takes
# them with RUSTC_BOOTSTRAP=1, set here. FUZZ_SANITIZER=none builds without AddressSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

CARGO_FUZZ_VERSION=0.13.2
TARGETS=(config decide token_scopes challenge)
SANITIZER=${FUZZ_SANITIZER:-address}
# libFuzzer bounds per run: one input may take 10 s and the process 2 GiB before it counts as
# a failure (the core decides in microseconds, in a few MiB).
LIBFUZZER_BOUNDS=(-timeout=10 -rss_limit_mb=2048)

say() { printf '==> %s\n' "$*" >&2; }
usage() { echo "usage: tests/fuzz.sh SECONDS [--keep-corpus] [TARGET...] (targets: ${TARGETS[*]})" >&2; exit 2; }

[ $# -ge 1 ] || usage
seconds=$1
shift
[[ $seconds =~ ^[1-9][0-9]*$ ]] || usage
keep_corpus=
targets=()
for arg in "$@"; do
  case $arg in
    --keep-corpus) keep_corpus=1 ;;
    -*) usage ;;
    *)
      [[ " ${TARGETS[*]} " == *" $arg "* ]] || usage
      targets+=("$arg")
      ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=("${TARGETS[@]}")

export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version 2>/dev/null | grep -qx "cargo-fuzz $CARGO_FUZZ_VERSION"; then
  say "cargo install cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install --locked -q cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/harbor-mirror-fuzz.XXXXXX")
keep_work=
cleanup() { [ -n "$keep_work" ] || rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

say "cargo fuzz build (sanitizer $SANITIZER): ${targets[*]}"
for target in "${targets[@]}"; do
  cargo fuzz build --sanitizer "$SANITIZER" "$target"
done

# One libFuzzer final statistic of a run's log (0 when absent).
final_stat() { awk -v key="stat::$2:" '$1 == key {value = $2} END {print value + 0}' "$1"; }

failed=()
for target in "${targets[@]}"; do
  committed=fuzz/corpus/$target
  if [ -n "$keep_corpus" ]; then
    corpus=$committed
  else
    corpus=$work/corpus-$target
    cp -R "$committed" "$corpus"
  fi
  before=$(find "$corpus" -type f | wc -l)
  log=$work/$target.log
  say "fuzz $target for ${seconds}s on $before inputs ($corpus)"
  status=0
  # Dictionary after the bounds, so that it reads as one more libFuzzer flag.
  cargo fuzz run --sanitizer "$SANITIZER" "$target" "$corpus" -- \
    -max_total_time="$seconds" "${LIBFUZZER_BOUNDS[@]}" -print_final_stats=1 \
    -dict="$ROOT/fuzz/dict/$target.dict" >"$log" 2>&1 || status=$?
  runs=$(final_stat "$log" number_of_executed_units)
  rate=$(final_stat "$log" average_exec_per_sec)
  after=$(find "$corpus" -type f | wc -l)
  if [ "$status" -ne 0 ]; then
    failed+=("$target")
    keep_work=1
    printf '\nFUZZ FAILURE: target %s (exit %s) after %s runs\n' "$target" "$status" "$runs" >&2
    input=$(grep -a -o 'Test unit written to .*' "$log" | tail -n 1 | sed 's/^Test unit written to //')
    printf 'input: %s\n' "${input:-(none saved; see the log)}" >&2
    printf 'reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer %s %s %s\n' "$SANITIZER" "$target" "${input:-}" >&2
    # The panic (a broken invariant names what broke and the request, header or document),
    # or libFuzzer's own report of a timeout, leak or memory blow-up.
    grep -a -m 1 -A 3 -E "panicked at|==ERROR|ERROR: libFuzzer" "$log" >&2 || tail -n 30 "$log" >&2
    printf 'full log: %s\n\n' "$log" >&2
    continue
  fi
  printf '%s: %s runs in %ss, %s exec/s, corpus %s -> %s inputs\n' "$target" "$runs" "$seconds" "$rate" "$before" "$after" >&2
  if [ -n "$keep_corpus" ]; then
    say "cargo fuzz cmin $target"
    cargo fuzz cmin --sanitizer "$SANITIZER" "$target" "$corpus" -- "${LIBFUZZER_BOUNDS[@]}" >"$work/$target.cmin.log" 2>&1 || {
      failed+=("$target (cmin)")
      keep_work=1
      tail -n 30 "$work/$target.cmin.log" >&2
      continue
    }
    printf '%s: corpus minimised to %s inputs, %s bytes\n' "$target" "$(find "$corpus" -type f | wc -l)" \
      "$(du -sb "$corpus" | cut -f1)" >&2
  fi
done

passed=$((${#targets[@]} - ${#failed[@]}))
if [ ${#failed[@]} -gt 0 ]; then
  printf 'fuzz: failed: %s (logs in %s)\n' "${failed[*]}" "$work" >&2
fi
echo "fuzz: $passed passed, ${#failed[@]} failed"
[ ${#failed[@]} -eq 0 ]
