#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time: scripts/fuzz.sh [seconds] [target…]
#
# Default 60 s per target, all targets one after the other. The only toolchain
# here is stable: RUSTC_BOOTSTRAP=1 lets it build cargo-fuzz's sanitizer
# flags. New inputs go to fuzz/corpus/<target> (not committed); the small
# committed seeds in fuzz/seeds/<target> are read too. A crash leaves its
# input in fuzz/artifacts/<target>/ and makes the script exit non-zero.
# See docs/fuzzing.md.
set -euo pipefail

seconds="${1:-60}"
shift || true
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root/fuzz"

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install --locked cargo-fuzz
fi
export RUSTC_BOOTSTRAP=1

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

failed=()
for target in "${targets[@]}"; do
    echo "=== $target: ${seconds}s"
    mkdir -p "corpus/$target"
    if ! cargo fuzz run -O "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -max_len=8192 -print_final_stats=1; then
        failed+=("$target")
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz.sh: crashes in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz.sh: ${#targets[@]} targets, ${seconds}s each, no crash"
