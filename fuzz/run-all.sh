#!/usr/bin/env bash
# Build and run every cargo-fuzz target of every crate (crates/*/fuzz), one after another,
# FUZZ_SECONDS each (default 60), at low priority. Stops at the first crash and prints the
# artifact libFuzzer wrote. Seeds come from crates/<crate>/fuzz/seeds/<target>/ when present;
# the grown corpus stays in crates/<crate>/fuzz/corpus/<target>/ (git-ignored).
#
#   fuzz/run-all.sh              # every target, 60 s each
#   FUZZ_SECONDS=600 fuzz/run-all.sh
#
# Needs cargo-fuzz (cargo install cargo-fuzz); RUSTC_BOOTSTRAP=1 lets it use the sanitizer
# flags on a stable toolchain. CARGO_TARGET_DIR is honoured if set.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
secs="${FUZZ_SECONDS:-60}"
export RUSTC_BOOTSTRAP=1

total=0
for dir in "$root"/crates/*/fuzz; do
    [[ -f "$dir/Cargo.toml" ]] || continue
    crate="$(basename "$(dirname "$dir")")"
    cd "$dir"
    echo "== $crate: building fuzz targets"
    nice -n 19 cargo fuzz build
    mapfile -t targets < <(cargo fuzz list)
    for t in "${targets[@]}"; do
        mkdir -p "corpus/$t"
        dirs=("corpus/$t")
        if [[ -d "seeds/$t" ]]; then
            dirs+=("seeds/$t")
        fi
        log="$(mktemp -t "fuzz-$crate-$t.XXXXXX.log")"
        echo "== $crate/$t: fuzzing for ${secs}s (log $log)"
        if ! nice -n 19 cargo fuzz run "$t" "${dirs[@]}" -- \
            -max_total_time="$secs" -rss_limit_mb=2048 -timeout=30 >"$log" 2>&1; then
            echo "!! $crate/$t failed; last lines of $log:"
            tail -n 40 "$log"
            artifact="$(grep -o 'Test unit written to [^ ]*' "$log" | tail -n 1 | cut -d' ' -f5 || true)"
            if [[ -n "$artifact" ]]; then
                echo "!! crash artifact: $artifact"
                echo "!! reproduce: cd $dir && RUSTC_BOOTSTRAP=1 cargo fuzz run $t $artifact"
            fi
            exit 1
        fi
        grep -E '^Done [0-9]+ runs' "$log" | sed "s|^|   $crate/$t: |" || true
        total=$((total + 1))
    done
done
echo "== all $total fuzz targets ran ${secs}s each without a crash"
