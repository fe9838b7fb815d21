#!/usr/bin/env bash
# fio with the xbdev engine: the verify, trim, process/thread and signal matrix.
set -eu
ROOT=${XBDEV_ROOT:-$(cd "$(dirname "$0")/../../.." && pwd)}
cd "$ROOT"
bash crates/fio-engine/setup-fio.sh
bash crates/fio-engine/tests/run-fio-tests.sh
