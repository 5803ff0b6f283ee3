"""The index's dense side in PostgreSQL + pgvector (`ragtune index build --backend pgvector --uri ...`).

Everything else stays in the index folder: chunks, BM25, token vectors, the versions and their deletions. Each
segment's vectors go to a table of their own, `<prefix>_<key>` (row integer, embedding vector(d)), named in the
segment's pgvector.json where a FAISS index would be. A segment is written once, so a table never changes after
its segment is written; a version reads the tables its segments name, and its deletions and filters travel with
the query as a bitmap of the rows it may return (`get_bit`), as FAISS's ID selector does. So BM25 and the dense
side always agree on which chunks exist. After a change, under the writer lock, the tables that no version on disk
names any more are dropped.

The index settings map onto pgvector's: `flat` is an exact scan, `hnsw` an HNSW index (m, ef_search) and `ivf` an
IVFFlat one (lists, probes), each with pgvector's iterative scans so that a filtered query still finds k rows; one
that comes back short is redone as an exact scan.

The manifest keeps the URI without its password: libpq reads that from PGPASSWORD or ~/.pgpass, and
RAGTUNE_PGVECTOR_URI, where set, replaces the stored URI (the same tables, reached another way).
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import threading
import time
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import numpy as np

from ragtune.config.retrieval import DenseSection
from ragtune.errors import ConfigError, DataError
from ragtune.retrieval.base import Allowed, row_mask
from ragtune.retrieval.dense import DenseRetriever

PG_FILE = "pgvector.json"  # in a segment folder, in place of faiss.index
RETIRED_FILE = ".pgvector-retired.json"  # in the index folder: tables no version names, and since when
RETIRE_AFTER_S = 600.0  # how long a table no version names stays for readers of older versions
PREFIX = re.compile(r"ragtune_[0-9a-f]{10}")
URI_ENV = "RAGTUNE_PGVECTOR_URI"
INSTALL = "install it with `pip install 'ragtune[pgvector]'`"


def public_uri(uri: str) -> str:
    """The URI without its password, in the user part or as a `password=` parameter (what the manifest keeps and
    messages show). Hosts and ports stay as written: IPv6 brackets, several hosts."""
    parts = urlsplit(uri)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    netloc = f"{userinfo.split(':', 1)[0]}@{hosts}" if at else parts.netloc
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    query = urlencode([(k, v) for k, v in pairs if k != "password"]) if any(k == "password" for k, _ in pairs) \
        else parts.query
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _secrets(uri: str) -> list[str]:
    """The password of a URI, however it is written, to keep out of any message."""
    parts = urlsplit(uri)
    userinfo = parts.netloc.rpartition("@")[0]
    found = [userinfo.split(":", 1)[1]] if ":" in userinfo else []
    found += [v for k, v in parse_qsl(parts.query, keep_blank_values=True) if k == "password"]
    return [f for f in found if f] + [unquote(f) for f in found if f and unquote(f) != f]


def _problem(exc: Exception, uri: str = "") -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    for secret in _secrets(uri):
        text = text.replace(secret, "***")
    return text


def connect(uri: str):
    """A connection (autocommit, pgvector's types registered), or one line saying why there is none."""
    if not uri.startswith(("postgresql://", "postgres://")):
        raise ConfigError("--uri: not a PostgreSQL URI (it should start with postgresql://); give "
                          "postgresql://USER@HOST:PORT/DB")
    try:
        import psycopg
        from pgvector.psycopg import register_vector
    except ImportError as exc:
        raise ConfigError(f"the pgvector backend needs psycopg and pgvector ({exc.name} is missing); {INSTALL}") from None
    try:
        conn = psycopg.connect(uri, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        raise DataError(f"{public_uri(uri)}: cannot connect to PostgreSQL ({_problem(exc, uri)}); check the URI, that "
                        f"the server runs, and the password (PGPASSWORD or ~/.pgpass)") from None
    try:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        (version,) = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
        register_vector(conn)
    except psycopg.Error as exc:
        conn.close()
        raise DataError(f"{public_uri(uri)}: the pgvector extension is not available ({_problem(exc, uri)}); "
                        "install pgvector on the server (or `CREATE EXTENSION vector` as its owner)") from None
    if tuple(int(x) for x in re.findall(r"\d+", version)[:2]) < (0, 8):
        conn.close()
        raise DataError(f"{public_uri(uri)}: pgvector {version} is too old (its iterative scans, which keep "
                        "filtered searches full, came in 0.8); `ALTER EXTENSION vector UPDATE` after upgrading it")
    return conn


class PgVectorStore:
    """One index's tables on one server: written by segment, read by segment, dropped when no version names them."""

    def __init__(self, uri: str, prefix: str, explicit: bool = False):
        """`explicit`: `uri` was given on the command line (a build), so RAGTUNE_PGVECTOR_URI does not replace it."""
        if not PREFIX.fullmatch(prefix):  # it becomes part of table names
            raise DataError(f"pgvector table prefix '{prefix}' is not one ragtune writes (ragtune_ and 10 hex "
                            "digits); rebuild the index with `ragtune index build --overwrite`")
        self.uri, self.prefix = (uri if explicit else os.environ.get(URI_ENV) or uri), prefix
        self._conn = None
        self.tuned_for: DenseSection | None = None  # the settings the connection's search knobs were set for
        self.lock = threading.Lock()  # one statement (or one short transaction) at a time on the connection

    @classmethod
    def for_manifest(cls, backend: dict) -> "PgVectorStore":
        return cls(backend["uri"], backend["prefix"])

    @staticmethod
    def new_prefix() -> str:
        return f"ragtune_{secrets.token_hex(5)}"

    def _ours(self) -> list[str]:
        """This index's tables in the connection's schema."""
        return [t for (t,) in self.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                                           "AND tablename ~ %s", (f"^{self.prefix}_[0-9a-f]{{8}}$",))]

    @property
    def conn(self):
        if self._conn is None or self._conn.closed:
            self._conn, self.tuned_for = connect(self.uri), None
        return self._conn

    def manifest(self) -> dict:
        return {"name": "pgvector", "uri": public_uri(self.uri), "prefix": self.prefix}

    def table(self, key: str) -> str:
        return f"{self.prefix}_{key}"

    def execute(self, sql, params=None):
        import psycopg

        try:
            with self.lock:
                cursor = self.conn.execute(sql, params)
                return cursor.fetchall() if cursor.description is not None else []
        except psycopg.Error as exc:
            raise DataError(f"{public_uri(self.uri)}: {_problem(exc, self.uri)}") from None

    # ------------------------------------------------------------------------------------------------ writing
    def write(self, folder: Path, vectors: np.ndarray, settings: DenseSection) -> None:
        """A new table of a segment's vectors (row i is the segment's row i) with the index settings' vector index,
        named in folder/pgvector.json."""
        import psycopg

        n, dim = vectors.shape
        key = secrets.token_hex(4)
        table = self.table(key)
        try:
            with self.lock, self.conn.transaction():
                self.conn.execute(f"CREATE TABLE {table} (row integer PRIMARY KEY, embedding vector({dim}) NOT NULL)")
                with self.conn.cursor().copy(f"COPY {table} (row, embedding) FROM STDIN WITH (FORMAT BINARY)") as copy:
                    copy.set_types(["int4", "vector"])
                    for row, vector in enumerate(np.asarray(vectors, dtype=np.float32)):
                        copy.write_row((row, vector))
                # an HNSW graph built within maintenance_work_mem is built in memory, many times faster than one
                # that spills (the 64 MB default held 100,000 MiniLM vectors' graph only in part)
                need_mb = int(1.5 * n * (4 * dim + 16 * settings.hnsw_m) / 2**20) + 64
                self.conn.execute(f"SET LOCAL maintenance_work_mem = '{min(max(need_mb, 64), 4096)}MB'")
                if settings.index == "hnsw":
                    self.conn.execute(f"CREATE INDEX ON {table} USING hnsw (embedding vector_ip_ops) WITH "
                                      f"(m = {settings.hnsw_m}, ef_construction = {max(64, 2 * settings.hnsw_m)})")
                elif settings.index == "ivf":
                    lists = max(1, min(settings.ivf_nlist or n, int(4 * math.sqrt(n)), n))  # as for FAISS
                    self.conn.execute(f"CREATE INDEX ON {table} USING ivfflat (embedding vector_ip_ops) "
                                      f"WITH (lists = {lists})")
                self.conn.execute(f"ANALYZE {table}")
        except psycopg.Error as exc:
            raise DataError(f"{public_uri(self.uri)}: writing {table} failed ({_problem(exc)})") from None
        (folder / PG_FILE).write_text(json.dumps({"table": table, "rows": n, "dimension": dim}), encoding="utf-8")

    def keep_only(self, root: Path) -> list[str]:
        """Drop this index's tables that no version under `root` has named for RETIRE_AFTER_S (left by older
        versions, or by a writer that crashed); run under the writer lock. A reader that opened an older version
        (a server between two polls, a long request) keeps its tables for that long. Nothing is dropped while a
        version's pgvector.json cannot be read. Returns the dropped tables."""
        from psycopg import sql

        try:
            named = {json.loads(p.read_text(encoding="utf-8"))["table"] for p in root.glob(f"v[0-9]*/*/{PG_FILE}")}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{root}: a version's {PG_FILE} is unreadable ({_problem(exc)}), so no table is "
                            "dropped") from None
        ledger = root / RETIRED_FILE
        try:
            retired = json.loads(ledger.read_text(encoding="utf-8")) if ledger.is_file() else {}
        except (OSError, ValueError):
            retired = {}
        now = time.time()
        retired = {t: float(retired.get(t, now)) for t in set(self._ours()) - named}
        dropped = sorted(t for t, since in retired.items() if now - since >= RETIRE_AFTER_S)
        for table in dropped:
            self.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))
            del retired[table]
        ledger.write_text(json.dumps(retired), encoding="utf-8")
        return dropped

    def drop_all(self) -> list[str]:
        """Drop every table of this index on this server (its vectors moved elsewhere); returns them."""
        tables = sorted(self._ours())  # connects first: a missing psycopg is one ConfigError line
        from psycopg import sql

        for table in tables:
            self.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))
        return tables

    # ------------------------------------------------------------------------------------------------ reading
    def open(self, folder: Path, size: int, settings: DenseSection) -> "PgSegment":
        """The table of one segment, checked against what its chunk database holds."""
        from ragtune.index.store import damaged

        path = folder / PG_FILE
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            table, rows = str(record["table"]), int(record["rows"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise damaged(path, f"unreadable ({_problem(exc)})") from None
        if not re.fullmatch(f"{self.prefix}_[0-9a-f]{{8}}", table):
            raise damaged(path, f"names table '{table}', which is not one of this index's ({self.prefix}_*)")
        if rows != size:
            raise damaged(path, f"says {rows} vectors, but its chunks.sqlite has {size} chunks")
        found = self.execute("SELECT a.atttypmod FROM pg_attribute a JOIN pg_class c ON a.attrelid = c.oid "
                             "WHERE c.relname = %s AND a.attname = 'embedding'", (table,))
        if not found:
            raise damaged(path, f"its table {table} is missing from {public_uri(self.uri)} (dropped by hand, or "
                                "another server)")
        return PgSegment(self, table, int(found[0][0]), rows, settings)

    def bytes(self) -> int:
        """What this index's tables take on the server, their indexes included."""
        return sum(int(self.execute("SELECT pg_total_relation_size(%s::regclass)", (t,))[0][0]) for t in self._ours())

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


class PgSegment:
    """One segment's table, with what the dense retriever asks of a FAISS index: d, ntotal, search and
    reconstruct_batch."""

    def __init__(self, store: PgVectorStore, table: str, d: int, ntotal: int, settings: DenseSection):
        self.store, self.table, self.d, self.ntotal, self.settings = store, table, d, ntotal, settings

    def _knobs(self) -> list[str]:
        """The search settings of the index's approximate index (none for an exact scan)."""
        if self.settings.index == "hnsw":
            return [f"SET hnsw.ef_search = {min(self.settings.hnsw_ef_search, 1000)}",
                    "SET hnsw.iterative_scan = strict_order"]
        if self.settings.index == "ivf":
            return [f"SET ivfflat.probes = {self.settings.ivf_nprobe}",
                    "SET ivfflat.iterative_scan = relaxed_order"]
        return []

    def search(self, embeddings: np.ndarray, k: int, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows), each (n_queries, k), best first by inner product; rows -1 where fewer came back. Only
        the rows set in `mask` count, where it is given; a short answer is redone as an exact scan."""
        import psycopg

        where, bits = "", None
        if mask is not None:
            where, bits = "WHERE get_bit(%(bits)s, row) = 1", np.packbits(mask, bitorder="little").tobytes()
            k = min(k, int(mask.sum()))
        sql = (f"SELECT row, (embedding <#> %(q)s) FROM {self.table} {where} ORDER BY embedding <#> %(q)s "
               "LIMIT %(k)s")
        approximate = self.settings.index != "flat"
        scores = np.full((len(embeddings), k), -np.inf, dtype=np.float32)
        rows = np.full((len(embeddings), k), -1, dtype=np.int64)
        try:
            with self.store.lock:
                conn = self.store.conn
                if self.store.tuned_for != self.settings:  # once per connection, not per query
                    for knob in self._knobs():
                        conn.execute(knob)
                    self.store.tuned_for = self.settings
                for i, query in enumerate(np.asarray(embeddings, dtype=np.float32)):
                    found = conn.execute(sql, {"q": query, "bits": bits, "k": k}).fetchall()
                    if len(found) < k and approximate:  # the approximate index came back short: scan exactly
                        with conn.transaction():
                            conn.execute("SET LOCAL enable_indexscan = off")
                            found = conn.execute(sql, {"q": query, "bits": bits, "k": k}).fetchall()
                    for j, (row, distance) in enumerate(found):
                        rows[i, j], scores[i, j] = row, -distance  # <#> is the negative inner product
        except psycopg.Error as exc:
            raise DataError(f"{public_uri(self.store.uri)}: searching {self.table} failed ({_problem(exc)})") from None
        return scores, rows

    def reconstruct_batch(self, rows) -> np.ndarray:
        rows = [int(r) for r in np.asarray(rows).ravel()]
        out = np.zeros((len(rows), self.d), dtype=np.float32)
        if not rows:
            return out
        found = dict(self.store.execute(f"SELECT row, embedding FROM {self.table} WHERE row = ANY(%s)", (rows,)))
        missing = sorted(set(rows) - set(found))
        if missing:
            from ragtune.index.store import REBUILD

            raise DataError(f"{public_uri(self.store.uri)}: table {self.table} lacks rows {missing[:3]} (changed by "
                            f"hand?); {REBUILD}")
        for i, row in enumerate(rows):
            out[i] = found[row].to_numpy()
        return out


class PgVectorDense(DenseRetriever):
    """The dense retriever over one pgvector segment: filters and deletions go to PostgreSQL as a row bitmap."""

    def _search_allowed(self, embeddings: np.ndarray, k: int, allowed: Allowed) -> tuple[np.ndarray, np.ndarray]:
        return self.index.search(embeddings, k, row_mask(self.doc_ids, allowed, self._rows))
