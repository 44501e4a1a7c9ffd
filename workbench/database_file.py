"""The workbench database as a file: its integrity check, what to do when it is damaged, online backups.

`workbench.store` reads and writes rows; this module looks after the file
that holds them. A damaged file (truncated, overwritten, garbage inside) is
reported as `DatabaseDamaged`, whose message names the file and the two
fixes: copy the newest automatic backup over it, or `repair` it (`python -m
workbench repair-db`): every row that can still be read is copied into a new
file, which takes the old one's place (SQLite's own `.recover` is broken in
some sqlite3 builds, e.g. Debian 12's 3.40.1, and `.dump` rolls back at the
first damaged page). Backups are made with SQLite's
online backup API (consistent while other processes write), checked before
they are kept, written under a temporary name and renamed, and rotated:
`settings.backups_dir()` keeps the newest WORKBENCH_BACKUP_KEEP (default 3),
one every WORKBENCH_BACKUP_HOURS (default 6; 0 turns them off).
"""

import errno
import os
import shlex
import sqlite3
import time
from pathlib import Path

from workbench import settings

BACKUP_PREFIX = "workbench-"
DEFAULT_BACKUP_HOURS = 6.0
DEFAULT_BACKUP_KEEP = 3


class DatabaseDamaged(ValueError):
    """The database file cannot be read as a sound SQLite database; the message says how to get going again."""


def is_damage(exc: BaseException) -> bool:
    """An SQLite error that means the file is damaged (not busy, locked or out of space)."""
    return isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError)


def is_disk_full(exc: BaseException | None) -> bool:
    """The error (or one it was raised from) says the disk or a quota is full, from SQLite or the OS."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(exc, sqlite3.OperationalError) and (
                getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "disk is full" in str(exc)):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def disk_full_message() -> str:
    """What a run or job that stopped on a full disk says (the UI shows it as is)."""
    return (f"disk full: no space was left on the device holding {settings.home()}; free some space, then "
            "start the run again (training resumes from its last checkpoint)")


def integrity_problem(conn: sqlite3.Connection) -> str | None:
    """The first problem `PRAGMA quick_check` finds (None when the file is sound); quick: no index contents."""
    try:
        rows = [row[0] for row in conn.execute("PRAGMA quick_check(5)")]
    except sqlite3.DatabaseError as exc:
        if not is_damage(exc):
            raise
        return str(exc)
    return None if rows == ["ok"] else "; ".join(rows)


def damaged_message(path: Path, detail: str) -> str:
    """One paragraph (one line) naming the file, what is wrong and the fixes, newest backup first."""
    path = Path(path)
    live, wal = shlex.quote(str(path)), f"{shlex.quote(str(path))}-wal {shlex.quote(str(path))}-shm"
    detail = " ".join(detail.replace("*** in database main ***", "").split())[:200]  # one line
    text = f"the workbench database {path} is damaged ({detail}). Stop the app, then "
    backup = newest_backup()
    if backup is not None:
        made = time.strftime("%Y-%m-%d %H:%M", time.localtime(backup.stat().st_mtime))
        text += (f"either restore the automatic backup of {made} (what changed since is lost): "
                 f"cp {shlex.quote(str(backup))} {live} && rm -f {wal}; or ")
    home = shlex.quote(str(path.parent))
    text += (f"copy every row that is still readable into a new file (the damaged one is kept beside it): "
             f"WORKBENCH_HOME={home} python -m workbench repair-db")
    return text + "."


def backup_hours() -> float:
    return float(os.environ.get("WORKBENCH_BACKUP_HOURS") or DEFAULT_BACKUP_HOURS)


def backup_keep() -> int:
    return max(1, int(os.environ.get("WORKBENCH_BACKUP_KEEP") or DEFAULT_BACKUP_KEEP))


def backups() -> list[Path]:
    """Kept backups, oldest first."""
    return sorted(settings.backups_dir().glob(f"{BACKUP_PREFIX}*.db"))


def newest_backup() -> Path | None:
    found = backups()
    return found[-1] if found else None


def backup_due(now: float | None = None) -> bool:
    """Backups are on and the newest is older than the interval (or there is none)."""
    hours = backup_hours()
    if hours <= 0:
        return False
    newest = newest_backup()
    return newest is None or (now or time.time()) - newest.stat().st_mtime >= hours * 3600


def back_up(conn: sqlite3.Connection) -> Path:
    """Copy the live database (online: writers may go on) into a new backup, check it, keep the newest few.

    Raises DatabaseDamaged when the copy is not sound (the live file is damaged: keep the older backups).
    """
    folder = settings.backups_dir()
    now = time.time_ns()  # names sort by time, to the nanosecond
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now // 10**9))
    target = folder / f"{BACKUP_PREFIX}{stamp}-{now % 10**9:09d}.db"
    partial = target.with_name(f".{target.name}.partial")
    try:
        copy = sqlite3.connect(partial)
        try:
            conn.backup(copy)
            problem = integrity_problem(copy)
        finally:
            copy.close()
        if problem:
            raise DatabaseDamaged(f"the backup copy is not sound ({problem}); older backups were kept")
        with open(partial, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    for old in backups()[:-backup_keep()]:
        old.unlink(missing_ok=True)
    return target


SALVAGE_CHUNK = 500
SALVAGE_EMPTY_RANGES = 200


def repair(path: Path) -> dict[str, int]:
    """Copy every readable row of the damaged database at `path` into a new file that takes its place.

    The damaged file is kept as `<name>.damaged-<time>`. Rows are read in rowid ranges; a range that
    fails, or stops short, is read row by row, so one bad page loses only its own rows. Returns rows kept per table.
    Raises DatabaseDamaged when not even the schema can be read (then only a backup helps).
    """
    path = Path(path)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    fresh, aside = path.with_name(f"{path.name}.repairing"), path.with_name(f"{path.name}.damaged-{stamp}")
    fresh.unlink(missing_ok=True)
    source = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        try:
            schema = source.execute("select type, name, sql from sqlite_master where sql is not null").fetchall()
        except sqlite3.DatabaseError as exc:
            raise DatabaseDamaged(f"{path}: not even the list of tables can be read ({exc}); restore a backup "
                                  f"from {settings.backups_dir()}") from None
        target = sqlite3.connect(fresh, isolation_level=None)
        try:
            tables = [(name, sql) for kind, name, sql in schema if kind == "table" and not name.startswith("sqlite_")]
            kept = {}
            target.execute("BEGIN")
            for name, sql in tables:
                target.execute(sql)
                kept[name] = _copy_rows(source, target, name)
            for kind, _, sql in schema:
                if kind in ("index", "trigger", "view"):
                    target.execute(sql)
            target.execute("COMMIT")
            problem = integrity_problem(target)
        finally:
            target.close()
    finally:
        source.close()
    if problem:
        fresh.unlink(missing_ok=True)
        raise DatabaseDamaged(f"the repaired copy of {path} is not sound either ({problem}); restore a backup")
    os.replace(path, aside)
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    os.replace(fresh, path)
    return kept


def _copy_rows(source: sqlite3.Connection, target: sqlite3.Connection, table: str) -> int:
    quoted = '"' + table.replace('"', '""') + '"'
    columns = [row[1] for row in source.execute(f"PRAGMA table_info({quoted})")]
    insert = (f"insert or ignore into {quoted} ({', '.join(chr(34) + c + chr(34) for c in columns)}, rowid) "
              f"values ({', '.join('?' * (len(columns) + 1))})")
    select = f"select *, rowid from {quoted} where rowid between ? and ?"
    # a point seek: a one-row range would also step onto the next cell, which may be the garbled one
    select_one = f"select *, rowid from {quoted} where rowid = ?"
    try:
        low, high = source.execute(f"select min(rowid), max(rowid) from {quoted}").fetchone()
    except sqlite3.DatabaseError:
        low, high = None, None
    if low is None:
        return 0
    kept, empty, start = 0, 0, low
    # A damaged page can report a wild max(rowid): give up after a long run of ranges with nothing in them.
    while start <= high and empty < SALVAGE_EMPTY_RANGES:
        end = min(start + SALVAGE_CHUNK - 1, high)
        try:
            rows = source.execute(select, [start, end]).fetchall()
        except sqlite3.DatabaseError:
            rows = []
        # A garbled cell can also end a range scan early without an error (its rowid looks past the range),
        # so every rowid the scan did not return is asked for on its own: one bad page loses only its rows.
        found = {row[-1] for row in rows}
        for rowid in range(start, end + 1):
            if rowid not in found:
                try:
                    rows += source.execute(select_one, [rowid]).fetchall()
                except sqlite3.DatabaseError:
                    continue
        target.executemany(insert, rows)
        kept += len(rows)
        empty = 0 if rows else empty + 1
        start = end + 1
    return kept
