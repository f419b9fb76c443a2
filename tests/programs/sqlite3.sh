#!/usr/bin/env bash
# sqlite3 under libmmtier: an in-memory database of 200k generated rows
# (recursive CTE), two indexes, aggregates, a self-join, deletes and an
# integrity check; output compared with the run without mmtier.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" "$@"

SQLITE=$(require_prog sqlite3 sqlite3)

cat > "$WORK/workload.sql" <<'SQL'
PRAGMA cache_size = -262144;
CREATE TABLE t(id INTEGER PRIMARY KEY, grp INTEGER, name TEXT, val REAL, pad TEXT);
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 200000)
INSERT INTO t SELECT x, x % 97, 'name' || ((x * 7919) % 150001), ((x * 31) % 1000) / 7.0,
                     printf('%0250d', x * 104729)
  FROM c;
CREATE INDEX t_grp ON t(grp, val);
CREATE INDEX t_name ON t(name);
SELECT count(*), sum(id), total(val), sum(length(pad)) FROM t;
SELECT grp, count(*), round(sum(val), 4), min(name), max(name) FROM t
  GROUP BY grp ORDER BY grp LIMIT 12;
SELECT count(DISTINCT name) FROM t;
SELECT name, count(*) AS c FROM t GROUP BY name HAVING c > 1 ORDER BY c DESC, name LIMIT 8;
SELECT a.grp, count(*), sum(b.id) FROM t a JOIN t b ON b.name = a.name AND b.id > a.id
  GROUP BY a.grp ORDER BY a.grp LIMIT 10;
SELECT id, name, val FROM t WHERE grp = 42 AND val BETWEEN 10 AND 11 ORDER BY val, id LIMIT 5;
DELETE FROM t WHERE id % 3 = 0;
UPDATE t SET pad = upper(substr(pad, 1, 60)) WHERE grp < 10;
SELECT count(*), total(val), sum(length(pad)) FROM t;
SELECT grp, count(*) FROM t GROUP BY grp ORDER BY count(*) DESC, grp LIMIT 5;
PRAGMA integrity_check;
SQL

workload() {
  run "$SQLITE" -bail :memory: < "$WORK/workload.sql"
}

run_modes workload
