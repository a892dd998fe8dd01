"""The SQLite store's writer: a child process that inserts the batches the gateway sends it.

Inserting a record into the usage table and its three indexes costs ~31k instructions (SQLite
3.40, 40 rows a statement), 7% of what the gateway spends on a whole non-stream request. In the
gateway's process that work would run between requests on the one event-loop thread; here it
can run on another core, as PostgreSQL's does in its server, and the gateway only turns the
batch into bytes (~4k instructions a record). A thread would not do: the GIL changes hands around
every statement step, which measured twice the CPU of the inserts themselves.

The protocol, over the child's stdin and stdout, is frames of a 4-byte big-endian length and a
payload. The gateway sends one `marshal`led list of row tuples a frame (in the column order
given on the command line; marshal is safe here, the bytes come from the parent's own pipe);
the writer answers each, and once at start, with an empty payload when it is done (committed)
or with the error's text. The gateway sends a frame only once the previous one is answered.

The writer exits when its stdin closes, so it never outlives the gateway, even one killed with
SIGKILL. It ignores SIGINT and SIGTERM, which a terminal's Ctrl-C sends the whole process group
and systemd the whole service, so that the gateway's last flush at shutdown still finds it.

It imports nothing outside the standard library and runs as a script (`python -I -S
sqlite_writer.py PATH BUSY_TIMEOUT COLUMNS`): no site-packages, no package to import, which
keeps it to ~13 MB of memory.
"""

from __future__ import annotations

import marshal
import signal
import sqlite3
import struct
import sys
from collections.abc import Sequence
from itertools import chain
from typing import Any, BinaryIO, cast

HEADER = struct.Struct(">I")
# Rows per INSERT statement. One statement step opens the table and its three indexes once for
# all its rows: 40 rows a step cost 31k instructions a record against 41k for one (measured
# with callgrind, SQLite 3.40); its 960 parameters fit even the 999 of SQLite before 3.32.
ROWS_PER_INSERT = 40

_Row = tuple[Any, ...]


class _Inserts:
    """The INSERT statements of a column list, and the batch transaction."""

    def __init__(self, columns: Sequence[str]) -> None:
        row = f"({', '.join('?' for _ in columns)})"
        head = f"INSERT OR IGNORE INTO usage_records ({', '.join(columns)}) VALUES "
        self.one = head + row
        self.many = head + ", ".join([row] * ROWS_PER_INSERT)

    def write(self, db: sqlite3.Connection, rows: list[_Row]) -> None:
        """Insert `rows` in one transaction; a request id already stored is skipped."""
        whole = len(rows) - len(rows) % ROWS_PER_INSERT
        db.execute("BEGIN")
        try:
            if whole:
                db.executemany(self.many, (
                    tuple(chain.from_iterable(rows[i:i + ROWS_PER_INSERT]))
                    for i in range(0, whole, ROWS_PER_INSERT)))
            if whole < len(rows):
                db.executemany(self.one, rows[whole:])
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise


def _answer(out: BinaryIO, error: str = "") -> None:
    data = error.encode()
    out.write(HEADER.pack(len(data)) + data)
    out.flush()


def _read(inp: BinaryIO, size: int) -> bytes | None:
    data = inp.read(size)
    return data if len(data) == size else None  # None: stdin closed, the gateway is gone


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    path, busy_timeout, columns = argv[0], float(argv[1]), argv[2].split(",")
    # sqlite3 binds exact ints, floats and strs directly; anything else, bool and None included,
    # first goes through an adapter lookup that raises and catches two AttributeErrors when the
    # type has none: ~3.3k instructions a value, against ~1.3k with these two, which bind just
    # what sqlite3 would (bool as an integer, None as NULL).
    sqlite3.register_adapter(bool, int)
    sqlite3.register_adapter(type(None), cast("Any", {}.get))  # a C callable returning None
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    inserts = _Inserts(columns)
    try:
        # The gateway created and migrated the schema before starting this process.
        db = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
        db.execute("PRAGMA synchronous=NORMAL")
    except sqlite3.Error as exc:
        _answer(out, str(exc))
        return 1
    _answer(out)
    try:
        while (head := _read(inp, HEADER.size)) is not None:
            payload = _read(inp, HEADER.unpack(head)[0])
            if payload is None:
                break
            try:
                inserts.write(db, marshal.loads(payload))
            except (sqlite3.Error, ValueError, EOFError, TypeError) as exc:
                _answer(out, str(exc) or type(exc).__name__)
            else:
                _answer(out)
    finally:
        db.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
