"""Reading damaged recordings: everything readable before (and, where the format allows, after) the damage.

A recorder that is killed leaves an MCAP file without its summary and footer, or an sqlite3 database without
`metadata.yaml` and often with a trailing write-ahead log (`.db3-wal`); disks and copies corrupt chunks and
pages. `rosbags` refuses such files as a whole. The two readers here expose the part of rosbags' `Reader`
interface that `BagReader` uses (`connections`, `duration`, `compression_mode/format`, `messages`,
`close`) and describe what was lost in a `Damage` record:

- `McapRecovery` streams the file with the `mcap` library's `StreamReader` (no summary section needed) in
  file order. A chunk that fails its CRC or does not decompress is skipped and counted (its time range is
  in its header); the stream stops at the first record that cannot be framed (a cut file): everything
  before it is read.
- `Sqlite3Recovery` reads the `messages` table in id (= insertion) order with Python's sqlite3. A write-ahead
  log next to the database is applied to a temporary copy (the recording itself is never modified; rosbags
  opens databases `immutable`, which ignores the log and would silently lose its rows). Rows on unreadable
  pages are skipped by point lookups until readable rows follow; a damaged tail ends the read.

Neither parses the storage format by hand: framing, CRCs and decompression are the mcap library's, pages
and b-trees SQLite's.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import tempfile
from collections import Counter
from collections.abc import Collection, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rosbags.interfaces import Connection, ConnectionExtRosbag2, MessageDefinition, MessageDefinitionFormat
from rosbags.rosbag2.metadata import parse_qos

log = logging.getLogger(__name__)

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # a CDR payload starts with 0x00: a zstd frame is unambiguous
MAX_ROW_GAP = 512  # consecutive unreadable/missing ids after which the rest of a database counts as lost
_FORMATS = {
    "ros2msg": MessageDefinitionFormat.MSG,
    "ros2idl": MessageDefinitionFormat.IDL,
    "omgidl": MessageDefinitionFormat.IDL,
}


@dataclass
class Damage:
    """What could not be read from a damaged storage file (all counts in messages, times in ns)."""

    storage: str  # 'mcap' | 'sqlite3'
    file: str
    reason: str  # the first error met, in one line
    file_bytes: int = 0
    unreadable_bytes: int | None = None  # bytes after the last good record + corrupt chunks (mcap)
    corrupt_chunks: int = 0  # mcap chunks skipped (CRC or decompression failure)
    unreadable_rows: int = 0  # sqlite3 rows whose page could not be read, with readable rows after them
    tail_lost: bool = False  # reading stopped before the end of the file (cut or damaged tail)
    messages_read: int = 0
    messages_expected: int | None = None  # from metadata.yaml or the MCAP statistics, when present
    last_good_ns: int | None = None  # log time of the last message read
    lost_time_ranges_ns: list[list[int]] = field(default_factory=list)  # [start, end] of skipped chunks
    wal_applied: bool = False  # sqlite3: rows from a write-ahead log were read
    missing_files: list[str] = field(default_factory=list)  # pieces of a split bag that are not there
    orphan_messages: int = 0  # messages whose topic (sqlite3 row) / channel (mcap record) is unreadable

    @property
    def messages_lost(self) -> int | None:
        """Messages the bag says it had minus those read; None when the bag does not say."""
        if self.messages_expected is None:
            return None
        return max(self.messages_expected - self.messages_read, 0)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "messages_lost": self.messages_lost}

    def describe(self) -> str:
        """One line for the log and the report."""
        parts = [f"{self.messages_read} messages read"]
        lost = self.messages_lost
        if lost is not None:
            parts.append(f"{lost} of {self.messages_expected} lost" if lost else "no message lost")
        elif self.tail_lost:
            parts.append("messages after the damage lost (count unknown: no summary/metadata)")
        if self.corrupt_chunks:
            parts.append(f"{self.corrupt_chunks} corrupt chunks skipped")
        if self.unreadable_rows:
            parts.append(f"{self.unreadable_rows} unreadable rows skipped")
        if self.unreadable_bytes is not None:
            parts.append(f"{self.unreadable_bytes} bytes unreadable or missing (file: {self.file_bytes} bytes)")
        if self.last_good_ns is not None and self.tail_lost and lost != 0:
            parts.append(f"everything recorded after t={self.last_good_ns / 1e9:.3f} s is lost")
        for a, b in self.lost_time_ranges_ns[:3]:
            parts.append(f"lost chunk t={a / 1e9:.3f}..{b / 1e9:.3f} s")
        if self.wal_applied:
            parts.append("write-ahead log applied")
        if self.orphan_messages:
            parts.append(f"{self.orphan_messages} messages of a topic whose record is lost skipped")
        if self.missing_files:
            parts.append(f"missing pieces: {', '.join(self.missing_files)}")
        return f"{self.file}: damaged ({self.reason}); " + ", ".join(parts)


def decompress_message(data: bytes | memoryview) -> bytes | memoryview:
    """rosbag2 message compression without metadata.yaml to say so: zstd frames are recognised by magic.
    A frame that does not decompress is returned as it is (it then fails to decode and is counted)."""
    if bytes(data[:4]) == ZSTD_MAGIC:
        from rosbags.rosbag2.reader import zstd  # the zstd module rosbags itself uses

        try:
            return zstd.decompress(bytes(data))
        except Exception as e:  # a corrupt frame: one message, counted where it fails to decode
            log.debug("a zstd-compressed message does not decompress: %s", e)
    return data


_payload = decompress_message


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


class _RecoveryBase:
    """Shared part of the rosbags-Reader-like interface."""

    compression_mode: str | None = None
    compression_format: str | None = None

    def __init__(self, path: Path, expected: int | None) -> None:
        self.path = Path(path)
        self.connections: list[Connection] = []
        self.damage: Damage | None = None
        self._expected = expected
        self._start = 2**63 - 1
        self._end = 0

    @property
    def start_time(self) -> int:
        return self._start

    @property
    def end_time(self) -> int:
        return self._end + 1 if self._end else 0

    @property
    def duration(self) -> int:
        return max(self.end_time - self._start, 0) if self._end else 0

    def _see(self, t: int) -> None:
        self._start = min(self._start, t)
        self._end = max(self._end, t)


# -------------------------------------------------------------------------------------------------- mcap


class McapRecovery(_RecoveryBase):
    """An MCAP file read with mcap's StreamReader, skipping corrupt chunks and stopping at a cut."""

    def open(self) -> McapRecovery:
        """Scan the file once: connections, counts and the damage (nothing is kept in memory)."""
        try:
            import mcap  # noqa: F401
        except ImportError:
            raise OSError("reading a damaged MCAP file needs the `mcap` package (pip install mcap)") from None
        self.damage = Damage("mcap", str(self.path), "", file_bytes=self.path.stat().st_size)
        self.damage.messages_expected = self._expected
        self._channels: dict[int, Any] = {}
        self._schemas: dict[int, Any] = {}
        counts: Counter = Counter()
        for channel_id, t, _ in self._stream(scan=True):
            counts[channel_id] += 1
            self._see(t)
        self.connections = [self._connection(cid, counts[cid]) for cid in sorted(self._channels)]
        d = self.damage
        d.messages_read = sum(counts.values())
        d.last_good_ns = self._end or None
        if d.orphan_messages:
            d.reason = d.reason or f"{d.orphan_messages} messages on a channel whose record is lost"
        if not d.reason and d.messages_expected is not None and d.messages_read < d.messages_expected:
            d.reason = "fewer messages than the bag's summary counts"
        if not d.reason:
            self.damage = None  # read completely after all (e.g. only the summary was missing)
        return self

    def close(self) -> None:
        self.connections = []

    def _connection(self, cid: int, count: int) -> Connection:
        ch = self._channels[cid]
        schema = self._schemas.get(ch.schema_id)
        msgdef = MessageDefinition(MessageDefinitionFormat.NONE, "")
        if schema is not None and schema.encoding in _FORMATS:
            msgdef = MessageDefinition(_FORMATS[schema.encoding], schema.data.decode("utf-8", "replace"))
        try:
            qos = parse_qos(ch.metadata.get("offered_qos_profiles", ""))
        except Exception:  # malformed QoS metadata is not worth losing the topic over
            qos = []
        return Connection(
            cid,
            ch.topic,
            schema.name if schema is not None else "",
            msgdef,
            "",
            count,
            ConnectionExtRosbag2(ch.message_encoding or "cdr", qos),
            self,
        )

    def _stream(self, scan: bool) -> Iterator[tuple[int, int, bytes]]:
        """(channel id, log time, data) in file order; during the scan the damage is recorded."""
        from mcap.records import Channel, Chunk, DataEnd, Message, Schema, Statistics
        from mcap.stream_reader import StreamReader, breakup_chunk

        d = self.damage if scan and self.damage is not None else Damage("mcap", str(self.path), "")
        size = self.path.stat().st_size
        with open(self.path, "rb") as f:
            reader = StreamReader(f, emit_chunks=True, record_size_limit=max(size, 1))
            good_end = 0
            summary = False  # after DataEnd: the summary's copies of schemas/channels are not trusted
            it = iter(reader.records)
            while True:
                try:
                    rec = next(it)
                except StopIteration:
                    return
                except Exception as e:  # a cut or garbled record: the rest of the file cannot be framed
                    if scan:
                        d.reason = d.reason or f"unreadable from byte {good_end}: {_one_line(e)}"
                        d.tail_lost = True
                        d.unreadable_bytes = (d.unreadable_bytes or 0) + size - good_end
                    return
                end = f.tell()
                records: list[Any] = [rec]
                if isinstance(rec, Chunk):
                    try:
                        records = breakup_chunk(rec, validate_crc=True)
                    except Exception as e:  # CRC mismatch, bad compressed data, garbled inner record
                        if scan:
                            if end >= size:  # the last chunk, cut short: part of the lost tail
                                d.reason = d.reason or f"cut inside the chunk at byte {good_end}"
                                d.tail_lost = True
                                d.unreadable_bytes = (d.unreadable_bytes or 0) + size - good_end
                            else:
                                d.reason = d.reason or f"corrupt chunk at byte {good_end}: {_one_line(e)}"
                                d.corrupt_chunks += 1
                                d.unreadable_bytes = (d.unreadable_bytes or 0) + end - good_end
                                d.lost_time_ranges_ns.append([rec.message_start_time, rec.message_end_time])
                        good_end = end
                        continue
                good_end = end
                if isinstance(rec, DataEnd):
                    summary = True
                for r in records:
                    if summary and not isinstance(r, Statistics):
                        continue
                    if isinstance(r, Message):
                        if r.channel_id in self._channels:
                            yield r.channel_id, r.log_time, r.data
                        elif scan:  # its Channel record is lost: the message cannot be attributed
                            d.orphan_messages += 1
                    elif scan and isinstance(r, Schema):
                        self._schemas[r.id] = r
                    elif scan and isinstance(r, Channel):
                        self._channels[r.id] = r
                    elif scan and isinstance(r, Statistics) and d.messages_expected is None:
                        d.messages_expected = r.message_count

    def messages(
        self, connections: Collection[Connection] = (), start: int | None = None, stop: int | None = None
    ) -> Iterator[tuple[Connection, int, bytes | memoryview]]:
        """Readable messages of `connections` (empty = all) in file order."""
        ids = {c.id for c in connections}
        conns = {c.id: c for c in self.connections}
        for cid, t, data in self._stream(scan=False):
            if (not ids or cid in ids) and cid in conns:
                yield conns[cid], t, _payload(data)


# ----------------------------------------------------------------------------------------------- sqlite3


def _header_size(db: Path) -> int | None:
    """Database size in bytes according to its header (page size x page count), None if unreadable."""
    try:
        with open(db, "rb") as f:
            head = f.read(100)
    except OSError:
        return None
    if len(head) < 100 or not head.startswith(b"SQLite format 3\x00"):
        return None
    page = int.from_bytes(head[16:18], "big")
    page = 65536 if page == 1 else page
    return page * int.from_bytes(head[28:32], "big") or None


class Sqlite3Recovery(_RecoveryBase):
    """A rosbag2 sqlite3 database read row by row, with its write-ahead log applied to a temporary copy."""

    def open(self) -> Sqlite3Recovery:
        self.damage = Damage("sqlite3", str(self.path), "", file_bytes=self.path.stat().st_size)
        self.damage.messages_expected = self._expected
        self._tmp: tempfile.TemporaryDirectory | None = None
        db = self.path
        wal = Path(f"{self.path}-wal")
        has_wal = wal.exists() and wal.stat().st_size > 0
        full = _header_size(self.path)
        cut = full is not None and full > self.damage.file_bytes
        if has_wal or cut:
            # work on a sparse copy: sqlite applies a log only when it opens a database writable (the
            # recording stays as it is), and refuses a whole schema whose root pages lie past the end of a
            # cut file -- padded with zeros back to the size in its header, only the missing pages fail
            self._tmp = tempfile.TemporaryDirectory(prefix="shapemask-recover-")
            db = Path(self._tmp.name) / self.path.name
            shutil.copyfile(self.path, db)
            if cut:
                assert full is not None
                self.damage.reason = f"cut at byte {self.damage.file_bytes} of {full}"
                self.damage.unreadable_bytes = full - self.damage.file_bytes
                self.damage.tail_lost = True
                with open(db, "r+b") as f:
                    f.truncate(full)
            if has_wal:
                shutil.copyfile(wal, f"{db}-wal")
                try:
                    con = sqlite3.connect(db)
                    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                    con.close()
                    self.damage.wal_applied = True
                except sqlite3.DatabaseError as e:  # an unusable log: read the database as it is
                    log.warning("%s: cannot apply the write-ahead log: %s", wal, e)
        self._db = sqlite3.connect(f"file:{db}?immutable=1", uri=True)
        self._db.text_factory = bytes
        try:
            self.connections = self._read_connections()
        except sqlite3.DatabaseError as e:
            self.close()
            raise OSError(f"{self.path}: the topics table is unreadable ({e})") from None
        counts: Counter = Counter()
        n = 0
        for _rowid, topic_id, t, _ in self._rows(with_data=False):
            counts[topic_id] += 1
            self._see(t)
            n += 1
        self.connections = [c._replace(msgcount=counts[c.id]) for c in self.connections]
        d = self.damage
        # rows whose topic id names no readable topic cannot be decoded or attributed: lost, and said so
        known = {c.id for c in self.connections}
        d.orphan_messages = sum(v for tid, v in counts.items() if tid not in known)
        if d.orphan_messages:
            d.reason = d.reason or f"{d.orphan_messages} rows whose topic id is not in the topics table"
        n -= d.orphan_messages
        d.messages_read = n
        d.last_good_ns = self._end or None
        if not d.reason and d.messages_expected is not None and n < d.messages_expected:
            d.reason = "fewer rows than metadata.yaml counts"
        if not d.reason and not d.wal_applied:
            self.damage = None
        elif not d.reason:
            d.reason = "a recording left with its write-ahead log"
        return self

    def close(self) -> None:
        # open() may have failed before either attribute was set; closing twice is harmless
        db: sqlite3.Connection | None = getattr(self, "_db", None)
        if db is not None:
            db.close()
            del self._db
        tmp: tempfile.TemporaryDirectory | None = getattr(self, "_tmp", None)
        if tmp is not None:
            tmp.cleanup()
            self._tmp = None

    def _text(self, v: Any) -> str:
        return v.decode("utf-8", "replace") if isinstance(v, bytes) else ("" if v is None else str(v))

    def _read_connections(self) -> list[Connection]:
        # by rowid: rosbag2's `id INTEGER PRIMARY KEY` is the rowid, and stays readable when the schema text is
        # garbled (then the `id` column reads NULL)
        cur = self._db.execute("SELECT rowid AS shapemask_rowid, * FROM topics ORDER BY rowid")
        cols = [c[0] for c in cur.description]
        rows = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
        defs: dict[str, tuple[str, str]] = {}
        try:
            for typ, enc, data in self._db.execute(
                "SELECT topic_type, encoding, encoded_message_definition FROM message_definitions"
            ):
                defs[self._text(typ)] = (self._text(enc), self._text(data))
        except sqlite3.DatabaseError:  # older schema (no definitions) or an unreadable page: types only
            pass
        out = []
        for r in rows:
            typ = self._text(r.get("type"))
            enc, data = defs.get(typ, ("", ""))
            msgdef = MessageDefinition(_FORMATS.get(enc, MessageDefinitionFormat.NONE), data if enc else "")
            try:
                qos = parse_qos(self._text(r.get("offered_qos_profiles")))
            except Exception:
                qos = []
            out.append(
                Connection(
                    int(r["shapemask_rowid"]),
                    self._text(r.get("name")),
                    typ,
                    msgdef,
                    self._text(r.get("type_description_hash")),
                    0,
                    ConnectionExtRosbag2(self._text(r.get("serialization_format")) or "cdr", qos),
                    self,
                )
            )
        return out

    def _rows(self, with_data: bool) -> Iterator[tuple[int, int, int, Any]]:
        """(id, topic id, timestamp, data) of every readable row in id order; records the damage while
        scanning (`with_data=False`) and counts rows whose data alone is unreadable while reading."""
        # rowid, not `id`: the same value, but still there when the schema's "id INTEGER PRIMARY KEY" is garbled
        cols = "rowid, topic_id, timestamp" + (", data" if with_data else ", NULL")
        d = self.damage
        assert d is not None
        last = -(2**63)
        while True:
            try:
                for row in self._db.execute(f"SELECT {cols} FROM messages WHERE rowid > ? ORDER BY rowid", (last,)):
                    last = row[0]
                    yield row
                return  # the end of the table
            except sqlite3.DatabaseError as e:
                first_error = e
            # an unreadable page after row `last`: probe the following ids one by one
            probe, failed, found = last + 1, 0, False
            while probe - last <= MAX_ROW_GAP:
                try:
                    row = self._db.execute(f"SELECT {cols} FROM messages WHERE rowid = ?", (probe,)).fetchone()
                except sqlite3.DatabaseError:
                    row = None
                    failed += 1
                if row is not None:
                    found = True
                    break
                probe += 1
            if not with_data:
                d.reason = d.reason or f"unreadable page after row {last}: {_one_line(first_error)}"
            if not found:
                if not with_data:
                    d.tail_lost = True
                return
            if not with_data:
                d.unreadable_rows += failed
            yield row  # then resume the fast scan after it (this guarantees progress)
            last = probe

    def messages(
        self, connections: Collection[Connection] = (), start: int | None = None, stop: int | None = None
    ) -> Iterator[tuple[Connection, int, bytes | memoryview]]:
        """Readable rows of `connections` (empty = all) in insertion order."""
        ids = {c.id for c in connections}
        conns = {c.id: c for c in self.connections}
        saved = self.damage
        self.damage = Damage("sqlite3", str(self.path), "")  # scratch: the scan's record stays as it was
        read: Counter = Counter()
        try:
            for _rowid, topic_id, t, data in self._rows(with_data=True):
                if topic_id in conns and data is not None:
                    read[topic_id] += 1
                    if not ids or topic_id in ids:
                        yield conns[topic_id], int(t), _payload(data)
        finally:
            self.damage = saved
        # rows whose index entry was readable in the scan but whose data (overflow pages) was not
        missing = sum(c.msgcount for c in self.connections) - sum(read.values())
        if missing > 0:
            if self.damage is None:
                self.damage = Damage("sqlite3", str(self.path), "unreadable message data", self.path.stat().st_size)
            self.damage.unreadable_rows += missing
            self.damage.messages_read -= missing
            log.warning("%s: %d rows with unreadable data skipped", self.path, missing)


def sqlite_quick_check(path: Path) -> str | None:
    """None when SQLite's `PRAGMA quick_check` finds the database consistent, else its first complaint.

    A damaged b-tree page can hide rows without any error on reading (found by `make fuzz`: three zero
    bytes in a leaf page); the check reads every page once, like reading the bag does."""
    try:
        con = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
        try:
            rows = con.execute("PRAGMA quick_check(1)").fetchall()
            first = str(rows[0][0]) if rows else "no result"
            if first != "ok":
                return " ".join(first.split())
            # a topics table whose `id` no longer aliases the rowid (a garbled "INTEGER PRIMARY KEY" in the
            # schema, found by `make fuzz`) reads every id as NULL: rosbags' JOIN then drops every message
            garbled = con.execute("SELECT count(*) FROM topics WHERE id IS NOT rowid").fetchone()[0]
            if garbled:
                return f"{garbled} topics whose id is not their row id (garbled schema)"
            # a row whose topic id was garbled is consistent for SQLite but dropped by rosbags' JOIN; NOT EXISTS,
            # not NOT IN: one NULL id in the subquery makes `NOT IN` false for every row
            orphans = con.execute(
                "SELECT count(*) FROM messages m WHERE NOT EXISTS (SELECT 1 FROM topics t WHERE t.id = m.topic_id)"
            ).fetchone()[0]
        finally:
            con.close()
    except sqlite3.DatabaseError as e:
        return _one_line(e)
    return f"{orphans} messages with a topic id not in the topics table (garbled rows)" if orphans else None


def mcap_summary_crc_ok(path: Path) -> bool | None:
    """True/False: the summary section of a complete MCAP file matches/does not match the CRC in its footer;
    None when there is nothing to check (no summary, or a writer that stores no CRC, as rosbags')."""
    import zlib

    from mcap.data_stream import ReadDataStream
    from mcap.records import Footer

    footer_len = 1 + 8 + 8 + 8 + 4  # opcode, record length, summary_start, summary_offset_start, summary_crc
    size = path.stat().st_size
    if size < 8 + footer_len + 8:
        return None
    with open(path, "rb") as f:
        f.seek(size - 8 - footer_len + 9)
        footer = Footer.read(ReadDataStream(f))
        if not footer.summary_start or not footer.summary_crc or footer.summary_start >= size - 8 - footer_len:
            return None
        f.seek(footer.summary_start)
        # the CRC covers the summary section and the footer record up to (not including) the CRC itself
        data = f.read(size - 8 - 4 - footer.summary_start)
    return zlib.crc32(data) == footer.summary_crc


def open_recovery(path: Path, expected: int | None) -> McapRecovery | Sqlite3Recovery:
    """The recovery reader for one storage file (`.mcap` or `.db3`), opened (scanned)."""
    cls = McapRecovery if path.suffix == ".mcap" else Sqlite3Recovery
    return cls(path, expected).open()
