#!/usr/bin/env bash
# fio verify over every RAID level, healthy and degraded, through the xbdev fio engine:
# arrays over malloc members from a `raid_devices` config (degraded ones fail members at
# creation with `faulty`), random writes of mixed sizes checked with crc32c, and a
# write / check / trim / check-zero sequence. Any verify error fails the stage.
#
#   XBDEV_FIO_ENGINE  the engine (default: built with cargo, release profile)
#   -k FILTER         run only the jobs whose name contains FILTER
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
filter=""
[ "${1:-}" = "-k" ] && filter="${2:-}"

command -v fio >/dev/null 2>&1 || bash "$repo/crates/fio-engine/setup-fio.sh" >/dev/null || exit 2
engine="${XBDEV_FIO_ENGINE:-}"
if [ -z "$engine" ]; then
    (cd "$repo" && bash crates/fio-engine/setup-fio.sh >/dev/null && cargo build --release -p xbdev-fio) \
        || { echo "engine build failed" >&2; exit 2; }
    engine="${CARGO_TARGET_DIR:-$repo/target}/release/libfio_xbdev.so"
fi
[ -f "$engine" ] || { echo "engine not found at $engine" >&2; exit 2; }

work="$(mktemp -d "${TMPDIR:-/tmp}/xbdev-fio-raid.XXXXXX")"
trap '[ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
cd "$work"
passed=0; failed=0; failures=()
selected() { [ -z "$filter" ] || [[ "$1" == *"$filter"* ]]; }

# conf NAME METHOD MEMBERS FAULTY LAYOUT: a config with MEMBERS 32 MiB malloc members and the
# array md0 over them; FAULTY is a JSON list of members failed at once.
conf() {
    local name=$1 method=$2 n=$3 faulty=$4 layout=$5 base="" members="" i
    for ((i = 0; i < n; i++)); do
        base+="${base:+,}{\"method\": \"malloc\", \"params\": {\"name\": \"m$i\", \"size_mb\": 32, \"block_size\": 512}}"
        members+="${members:+,}\"m$i\""
    done
    cat > "$work/$name.json" <<EOF
{"reactor": {"cores": [0], "idle": "adaptive", "pin": false},
 "base_devices": [$base],
 "raid_devices": [{"method": "$method", "params": {"name": "md0", "base_bdevs": [$members],
    "strip_size_kb": 64, "assume_clean": true, "faulty": $faulty $layout}}]}
EOF
}

run_fio() { # NAME ARGS...
    local name=$1; shift
    selected "$name" || return 0
    local t0=$SECONDS
    timeout -k 10 300 fio --ioengine="external:$engine" "$@" > "$work/$name.log" 2>&1
    local rc=$?
    # The members failed on purpose are reported; anything else is a failure.
    if [ $rc -eq 0 ] && ! grep -vE 'raid md0: member in slot [0-9]+ failed' "$work/$name.log" \
        | grep -qE 'err= *[1-9]|verify: bad|fio: .*error|xbdev: (error|warn)'; then
        passed=$((passed + 1)); echo "ok    $name ($((SECONDS - t0))s)"
    else
        failed=$((failed + 1)); failures+=("$name"); echo "FAIL  $name (rc=$rc)"
        tail -n 25 "$work/$name.log" | sed 's/^/      /'
    fi
}

# Write a pattern, check it, trim it, check it reads back as zeroes (one fio run, thread mode so
# the jobs share the array).
trim_seq() { # NAME CONF
    local name=$1
    selected "$name" || return 0
    if XB_ENGINE=$engine XB_CONF=$2 XB_FILE=md0 XB_MODE=inline XB_BS=12k XB_SIZE=6m \
        timeout -k 10 300 fio "$repo/crates/fio-engine/tests/jobs/trim-sequence.fio" > "$work/$name.log" 2>&1 \
        && [ "$(grep -c 'err= 0' "$work/$name.log")" -eq 4 ]; then
        passed=$((passed + 1)); echo "ok    $name"
    else
        failed=$((failed + 1)); failures+=("$name"); echo "FAIL  $name"; tail -n 25 "$work/$name.log" | sed 's/^/      /'
    fi
}

COMMON=(--name=t --group_reporting --exitall_on_error=1 --filename=md0)
# level, members, members failed when degraded ("" = no degraded run), layout option.
cases=(
    "linear 3 - "
    "raid0 4 - "
    "raid1 2 [\"m1\"] "
    "raid4 4 [\"m0\"] "
    "raid5 4 [\"m2\"] "
    "raid6 5 [\"m1\",\"m3\"] "
    "raid10 4 [\"m3\"] "
)
for c in "${cases[@]}"; do
    read -r method n deg _ <<< "$c"
    layout=""
    states=(healthy)
    [ "$deg" != "-" ] && states+=(degraded)
    for state in "${states[@]}"; do
        faulty="[]"
        [ "$state" = degraded ] && faulty=$deg
        conf "$method-$state" "$method" "$n" "$faulty" "$layout"
        cf="$work/$method-$state.json"
        run_fio "$method-$state-randwrite-4k" "${COMMON[@]}" --xbdev_conf="$cf" \
            --rw=randwrite --bs=4k --iodepth=32 --size=16m --verify=crc32c
        run_fio "$method-$state-randwrite-mixed" "${COMMON[@]}" --xbdev_conf="$cf" \
            --rw=randwrite --bsrange=512-256k --iodepth=8 --size=24m --verify=crc32c
        trim_seq "$method-$state-trim" "$cf"
    done
done

for f in "${failures[@]}"; do echo "failed: $f"; done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
