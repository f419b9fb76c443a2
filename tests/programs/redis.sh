#!/usr/bin/env bash
# redis-server under libmmtier, on 127.0.0.1 at a free port >= 20000: a fixed
# command sequence sent with redis-cli (strings, counters, lists, hashes,
# sorted sets, 200k keys loaded and half deleted by Lua scripts) must give the
# same replies as under plain redis-server; redis-benchmark must complete
# against the preloaded server; SHUTDOWN NOSAVE must end it with status 0.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" "$@"

SERVER=$(require_prog redis-server redis-server)
CLI=$(require_prog redis-cli redis-tools)
BENCH=$(require_prog redis-benchmark redis-tools)

cat > "$WORK/commands.txt" <<'CMDS'
PING
SET greeting "hello world"
GET greeting
APPEND greeting " again"
GET greeting
INCR counter
INCR counter
INCRBY counter 40
DECR counter
GET counter
LPUSH letters a b c d e
RPUSH letters z
LRANGE letters 0 -1
LLEN letters
LPOP letters
LINDEX letters -1
HSET user:1 name ada lang c role tester
HGET user:1 lang
HINCRBY user:1 visits 5
HINCRBY user:1 visits 2
HLEN user:1
HMGET user:1 name role visits missing
SADD tags red green blue
SCARD tags
SISMEMBER tags green
ZADD board 30 carol 10 alice 20 bob
ZRANGE board 0 -1 WITHSCORES
ZINCRBY board 25 alice
ZREVRANGE board 0 -1 WITHSCORES
EVAL "for i = 1, 200000 do redis.call('SET', 'key:' .. i, string.rep(string.char(97 + i % 26), 200 + i % 50)) end return 200000" 0
DBSIZE
GET key:12345
STRLEN key:199999
EVAL "local s = 0 for i = 1, 200000, 7 do s = s + #redis.call('GET', 'key:' .. i) end return s" 0
EVAL "for i = 1, 50000 do redis.call('RPUSH', 'biglist', i * 3) end return redis.call('LLEN', 'biglist')" 0
LRANGE biglist 1000 1004
EVAL "for i = 1, 50000 do redis.call('HSET', 'bighash', 'f' .. i, i * 7) end return redis.call('HLEN', 'bighash')" 0
HGET bighash f4242
EVAL "for i = 1, 200000, 2 do redis.call('DEL', 'key:' .. i) end return 1" 0
DBSIZE
EXISTS key:1 key:2
SORT letters ALPHA
TYPE user:1
DEL greeting
GET greeting
OBJECT ENCODING counter
CMDS

SERVER_PID=""   # the background job (its status is the server's)
REDIS_PID=""    # the redis-server process itself
SERVER_LOG=""

# start_server DIR: starts the server in the current mode at a free port,
# sets PORT, SERVER_PID, SERVER_LOG.  A port taken between the check and the
# bind makes the server exit; then another port is tried.
start_server() {
  local dir=$1 attempt i
  for ((attempt = 1; attempt <= 8; attempt++)); do
    PORT=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
    # Something answering on the port means it is taken.
    if (exec 3<> "/dev/tcp/127.0.0.1/$PORT") 2> /dev/null; then continue; fi
    SERVER_LOG=$dir/redis-$PORT.log
    run "$SERVER" --port "$PORT" --bind 127.0.0.1 --save "" --appendonly no \
      --daemonize no --protected-mode yes --dir "$dir" --logfile "$SERVER_LOG" &
    SERVER_PID=$!
    for ((i = 0; i < 300; i++)); do
      if ! kill -0 "$SERVER_PID" 2> /dev/null; then break; fi
      if [[ $(plain "$CLI" -h 127.0.0.1 -p "$PORT" ping 2> /dev/null) == PONG ]]; then
        return 0
      fi
      sleep 0.1
    done
    if kill -0 "$SERVER_PID" 2> /dev/null; then
      echo "redis-server did not answer PING within 30 s (log: $(tail -n 5 "$SERVER_LOG" 2>&1))" >&2
      return 1
    fi
    wait "$SERVER_PID" || true
    SERVER_PID=""
    grep -q 'Address already in use' "$SERVER_LOG" 2> /dev/null && continue
    echo "redis-server exited at startup; log:" >&2
    tail -n 20 "$SERVER_LOG" >&2 || true
    return 1
  done
  echo "no free port found for redis-server after 8 attempts" >&2
  return 1
}

stop_server_on_exit() {
  if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2> /dev/null; then
    [[ -n $REDIS_PID ]] && kill -9 "$REDIS_PID" 2> /dev/null
    kill "$SERVER_PID" 2> /dev/null || true
    wait "$SERVER_PID" 2> /dev/null || true
  fi
}

workload() {
  local dir=$1 rc loaded
  trap stop_server_on_exit EXIT
  start_server "$dir"
  # The server (not the clients) is the program under test: check that the
  # process answering on the port has libmmtier mapped (or not, for the
  # reference run).
  REDIS_PID=$(plain "$CLI" -h 127.0.0.1 -p "$PORT" info server | tr -d '\r' \
    | awk -F: '$1 == "process_id" { print $2 }')
  [[ -n $REDIS_PID ]] || { echo "cannot read redis-server's process_id" >&2; return 1; }
  if grep -q libmmtier "/proc/$REDIS_PID/maps"; then loaded=yes; else loaded=no; fi
  if [[ $MODE == reference && $loaded == yes ]] || [[ $MODE != reference && $loaded == no ]]; then
    echo "redis-server (pid $REDIS_PID) has libmmtier loaded: $loaded, in the $MODE run" >&2
    return 1
  fi
  plain "$CLI" -h 127.0.0.1 -p "$PORT" < "$WORK/commands.txt"
  # Throughput is not compared (timing); it must complete without error.
  if ! plain "$BENCH" -h 127.0.0.1 -p "$PORT" -q -n 20000 -t set,get,lpush -P 16 \
      > "$dir/benchmark.txt" 2>&1; then
    echo "redis-benchmark failed:" >&2
    cat "$dir/benchmark.txt" >&2
    return 1
  fi
  local t
  for t in SET GET LPUSH; do
    tr '\r' '\n' < "$dir/benchmark.txt" | grep -Eq "$t: [0-9.]+ requests per second" \
      || { echo "redis-benchmark printed no $t result:" >&2; cat "$dir/benchmark.txt" >&2; return 1; }
  done
  # Still serving after the benchmark, with our data intact.
  plain "$CLI" -h 127.0.0.1 -p "$PORT" get counter
  plain "$CLI" -h 127.0.0.1 -p "$PORT" hget bighash f50000
  plain "$CLI" -h 127.0.0.1 -p "$PORT" shutdown nosave > /dev/null 2>&1 || true
  set +e
  wait "$SERVER_PID"
  rc=$?
  set -e
  SERVER_PID=""
  echo "redis-server exit status $rc"
  if ! grep -q 'is now ready to exit, bye bye' "$SERVER_LOG"; then
    echo "redis-server did not shut down cleanly; log tail:" >&2
    tail -n 20 "$SERVER_LOG" >&2
    return 1
  fi
  echo "redis-server shut down cleanly"
}

run_modes workload
