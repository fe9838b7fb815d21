# Shared by loopback.sh and ab.sh (sourced, not run): a scratch directory
# removed on exit with the target, the niced launcher, the nvmf config, the
# target's start and its CPU time. Expects INI_CORE, TGT_CORE, NICE, TCP_CC,
# INCAPSULE and NQN to be set.
tmp=$(mktemp -d)
TPID=
cleanup() {
  if [ -n "$TPID" ]; then kill "$TPID" 2>/dev/null || true; wait "$TPID" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

# Runs "$@" in a new session whose autogroup gets nice level $NICE.
cat > "$tmp/niced" <<'NICED'
#!/usr/bin/env bash
if [ "${NICE:-0}" != 0 ]; then echo "$NICE" > /proc/self/autogroup 2>/dev/null || true; fi
exec nice -n "${NICE:-0}" "$@"
NICED
chmod +x "$tmp/niced"
export NICE

# write_nvmf_json PORT: the initiator's config ($tmp/nvmf.json), one I/O
# queue of depth 128 to the target at 127.0.0.1:PORT.
write_nvmf_json() {
  local cc=
  [ "$TCP_CC" = system ] || cc=", \"tcp_congestion\": \"$TCP_CC\""
  printf '%s\n' \
    "{\"reactor\": {\"cores\": [$INI_CORE], \"pin\": true, \"idle\": \"poll\"}," \
    " \"base_devices\": [{\"method\": \"nvmf\", \"params\": {\"name\": \"nvmf0\", \"addr\": \"127.0.0.1\", \"port\": $1," \
    "   \"nqn\": \"$NQN\", \"queue_depth\": 128, \"io_queues\": 1$cc}}]}" > "$tmp/nvmf.json"
}

# start_target TARGET_BINARY PORT [VAR=VALUE...]: a 4 GiB null namespace of
# 4 KiB blocks whose reads leave the buffers as they are (as SPDK's null
# bdev); sets TPID; returns 1 (with the target's log on stderr) if it does
# not listen within 10 s.
start_target() {
  local bin=$1 port=$2
  shift 2
  : > "$tmp/target.log"
  setsid env "$@" "$tmp/niced" "$bin" "127.0.0.1:$port" "$NQN" 1 4096 \
    --null --block-size 4096 --cores "$TGT_CORE" --incapsule "$INCAPSULE" \
    $([ "$TCP_CC" = system ] || echo --tcp-congestion "$TCP_CC") \
    > "$tmp/target.log" 2>&1 < /dev/null &
  TPID=$!
  for _ in $(seq 200); do grep -q listening "$tmp/target.log" && return 0; sleep 0.05; done
  cat "$tmp/target.log" >&2
  return 1
}

# CPU time (ns) the target's threads have had so far.
target_cpu_ns() {
  local s=0 t
  for t in /proc/"$TPID"/task/*/schedstat; do s=$((s + $(cut -d' ' -f1 "$t" 2>/dev/null || echo 0))); done
  echo "$s"
}
