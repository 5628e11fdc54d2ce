"""The run store: saved scenarios and runs in an embedded DuckDB file, artifacts on disk.

Layout of a store directory::

    rareflow.duckdb      tables `scenarios` and `runs`
    runs/<id>/           summary.json, result.nc, parquet/, report.html (written atomically)

A run is marked ``done`` only after its directory is complete (``Result.write`` renames a
finished temporary directory into place). On opening, runs left ``queued`` or ``running`` by a
crash or a restart are marked ``failed``, never shown as complete.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid
from pathlib import Path

import duckdb

SCHEMA = """
CREATE TABLE IF NOT EXISTS scenarios (
    name VARCHAR PRIMARY KEY, body VARCHAR NOT NULL, created VARCHAR, updated VARCHAR);
CREATE TABLE IF NOT EXISTS runs (
    id VARCHAR PRIMARY KEY, scenario VARCHAR NOT NULL, body VARCHAR NOT NULL, runs INTEGER,
    seed INTEGER, status VARCHAR NOT NULL, progress DOUBLE, created VARCHAR, started VARCHAR,
    finished VARCHAR, error VARCHAR);
"""
RUN_COLUMNS = ("id", "scenario", "body", "runs", "seed", "status", "progress", "created",
               "started", "finished", "error")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class Store:
    """Thread-safe access to the store (one connection guarded by a lock)."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "runs").mkdir(exist_ok=True)
        self._lock = threading.Lock()
        self._db = duckdb.connect(str(self.directory / "rareflow.duckdb"))
        with self._lock:
            self._db.execute(SCHEMA)
            self._db.execute(
                "UPDATE runs SET status = 'failed', error = 'interrupted by a server restart', "
                "finished = ? WHERE status IN ('queued', 'running')", [_now()])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ---- scenarios ------------------------------------------------------------------------------
    def list_scenarios(self) -> list[dict]:
        with self._lock:
            rows = self._db.execute(
                "SELECT name, body, created, updated FROM scenarios ORDER BY name").fetchall()
        return [{"name": r[0], "body": json.loads(r[1]), "created": r[2], "updated": r[3]}
                for r in rows]

    def get_scenario(self, name: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT body FROM scenarios WHERE name = ?",
                                   [name]).fetchone()
        return json.loads(row[0]) if row else None

    def save_scenario(self, name: str, body: dict, create: bool) -> bool:
        """Insert (create=True) or update; False if it exists (create) or is missing (update)."""
        with self._lock:
            exists = self._db.execute("SELECT 1 FROM scenarios WHERE name = ?",
                                      [name]).fetchone() is not None
            if create == exists:
                return False
            if create:
                self._db.execute("INSERT INTO scenarios VALUES (?, ?, ?, ?)",
                                 [name, json.dumps(body), _now(), _now()])
            else:
                self._db.execute("UPDATE scenarios SET body = ?, updated = ? WHERE name = ?",
                                 [json.dumps(body), _now(), name])
        return True

    def delete_scenario(self, name: str) -> bool:
        with self._lock:
            exists = self._db.execute("SELECT 1 FROM scenarios WHERE name = ?",
                                      [name]).fetchone() is not None
            self._db.execute("DELETE FROM scenarios WHERE name = ?", [name])
        return exists

    # ---- runs -----------------------------------------------------------------------------------
    def create_run(self, scenario: str, body: dict, runs: int, seed: int) -> str:
        run_id = uuid.uuid4().hex[:12]
        with self._lock:
            self._db.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?, 'queued', 0, ?, NULL, "
                             "NULL, NULL)", [run_id, scenario, json.dumps(body), runs, seed,
                                             _now()])
        return run_id

    def update_run(self, run_id: str, **fields) -> None:
        allowed = {"status", "progress", "started", "finished", "error"}
        sets = {k: v for k, v in fields.items() if k in allowed}
        if not sets:
            return
        assignments = ", ".join(f"{k} = ?" for k in sets)
        with self._lock:
            self._db.execute(f"UPDATE runs SET {assignments} WHERE id = ?",  # noqa: S608
                             [*sets.values(), run_id])

    def get_run(self, run_id: str) -> dict | None:
        with self._lock:
            row = self._db.execute(f"SELECT {', '.join(RUN_COLUMNS)} FROM runs WHERE id = ?",
                                   [run_id]).fetchone()
        return self._run(row) if row else None

    def list_runs(self) -> list[dict]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {', '.join(RUN_COLUMNS)} FROM runs ORDER BY created DESC, id"
            ).fetchall()
        return [self._run(r) for r in rows]

    def count_active(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM runs WHERE status IN "
                                    "('queued', 'running')").fetchone()[0]

    def run_dir(self, run_id: str) -> Path:
        return self.directory / "runs" / run_id

    @staticmethod
    def _run(row) -> dict:
        data = dict(zip(RUN_COLUMNS, row, strict=True))
        data["body"] = json.loads(data["body"])
        return data
