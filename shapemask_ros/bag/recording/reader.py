"""Reading rosbag2 bags (sqlite3 or mcap, zstd file/message/chunk compression) with the project typestore.

`rosbags.rosbag2.Reader` does the storage work: both storage plugins, rosbag2 file and message compression
(zstd) and MCAP chunk compression (zstd, lz4). This module adds what bag evaluation needs on top:

- type names declared without `/msg/` ("sensor_msgs/Image", seen in hand-made and converted bags) are
  normalised before lookup;
- messages decode with our typestore (stock Humble/Jazzy + vision_msgs 4.x + msg/*.msg); a type we do
  not know, or whose hash in the bag differs from ours (another layout), decodes with the definition
  embedded in the bag when there is one;
- every user-facing problem is a `BagError` with one clear line (missing file, topic not in the bag --
  listing the topics that are), never a traceback; a message that does not decode is counted and logged
  (throttled) by `decode_or_none`, and the run goes on;
- a damaged recording (an MCAP cut by a killed recorder, a corrupt chunk, an sqlite3 database with a
  write-ahead log or unreadable pages) is read up to -- and where possible past -- the damage by
  `recover.py`; what was lost is in `BagReader.damage` and logged. `strict=True` makes damage a BagError.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from rosbags.interfaces import Connection, MessageDefinitionFormat
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_types_from_msg
from rosbags.typesys import get_typestore as stock_typestore
from rosbags.typesys.store import Typestore

from shapemask_ros.bag.recording.errors import BagError  # raised here; importable from here too
from shapemask_ros.bag.recording.pieces import PiecewiseReader, bag_layout, is_storage_file, is_zstd_file
from shapemask_ros.bag.recording.recover import (
    Damage,
    McapRecovery,
    Sqlite3Recovery,
    decompress_message,
    mcap_summary_crc_ok,
    open_recovery,
    sqlite_quick_check,
)
from shapemask_ros.ros_bridge.typestore import get_typestore, normalize_type_name

log = logging.getLogger(__name__)

_STORAGE_SUFFIXES = (".mcap", ".db3")
_LOG_EVERY_S = 5.0
_REPAIR_HINT = "a recording that was killed can be repaired with `ros2 bag reindex` or `mcap recover`"


class MessageDecodeError(ValueError):
    """Raw bytes that do not deserialise as their connection's type."""


@dataclass(frozen=True)
class TopicInfo:
    """One topic of a bag."""

    name: str
    msgtype: str  # normalised 'pkg/msg/Type' ('' when the declared name is not a ROS type name)
    declared_type: str  # as written in the bag
    count: int
    has_definition: bool  # the bag embeds a message definition (rosbag2 >= Iron, MCAP)

    def describe(self) -> str:
        return f"{self.name} [{self.declared_type}, {self.count} msgs]"


@dataclass
class BagMessage:
    """One raw message: what `BagReader.messages` yields."""

    topic: str
    msgtype: str  # normalised
    log_time_ns: int  # receive/record time (rosbag2 timestamp), not the header stamp
    raw: bytes | memoryview  # CDR bytes, already decompressed
    connection: Connection
    read_s: float = 0.0  # wall time spent reading (I/O + decompression) this message
    read_cpu_s: float = 0.0  # CPU time of this thread for the same


def _normalise(name: str) -> str:
    try:
        return normalize_type_name(name)
    except ValueError:
        return ""


def _has_wal(db: Path) -> bool:
    wal = Path(f"{db}-wal")
    return wal.exists() and wal.stat().st_size > 0


def _resolve_bag_path(path: Path) -> Path:
    """The bag directory, or a lone .mcap/.db3 inside a directory whose metadata.yaml is missing (a
    recorder that was killed never writes it); a directory of split or compressed pieces stays a directory."""
    if not path.exists():
        raise BagError(f"bag not found: {path}")
    if path.is_dir() and not (path / "metadata.yaml").exists():
        files = sorted(p for p in path.iterdir() if p.is_file() and is_storage_file(p))
        if not files:
            raise BagError(f"{path} is not a rosbag2 directory: no metadata.yaml and no .mcap/.db3 storage files")
        if len(files) == 1 and files[0].suffix in _STORAGE_SUFFIXES:
            log.warning("%s has no metadata.yaml; reading %s directly", path, files[0].name)
            return files[0]
        log.warning("%s has no metadata.yaml; reading its %d storage files in name order", path, len(files))
        return path
    if path.is_file() and not is_storage_file(path):
        raise BagError(f"{path}: not a rosbag2 bag (want a bag directory, a .mcap or a .db3 file)")
    return path


class BagReader:
    """A rosbag2 bag opened for reading (use as a context manager).

    `strict=False` (default) reads damaged recordings up to the damage and records what was lost in
    `damage`; `strict=True` refuses them with a BagError.
    """

    def __init__(
        self, path: str | Path, distro: str = "humble", typestore: Typestore | None = None, strict: bool = False
    ) -> None:
        self.path = Path(path)
        self.strict = strict
        self.typestore = typestore or get_typestore(distro)
        self._reader: Any = None  # rosbags Reader, or a recovery reader with the same interface
        self._decoders: dict[tuple[str, str], tuple[Typestore, str] | None] = {}
        self._private: Typestore | None = None  # types taken from the bag's own definitions
        self.dropped: Counter = Counter()  # undecodable messages by topic ("undecodable:/topic")
        self.read_counts: Counter = Counter()  # messages read by topic
        self._last_logged: dict[str, float] = {}
        self.damage: Damage | None = None  # set when the bag is damaged (read as far as possible)

    # ----------------------------------------------------------------------------------------- open
    def _storage_files(self, target: Path) -> list[Path]:
        """The storage files of the bag (the one file of a lone .mcap/.db3)."""
        if target.is_file():
            return [target]
        try:
            meta = yaml.safe_load((target / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
            return [target / Path(p).name for p in meta["relative_file_paths"]]
        except (OSError, KeyError, TypeError, yaml.YAMLError):
            return sorted(p for p in target.iterdir() if p.suffix in _STORAGE_SUFFIXES)

    def _expected_count(self) -> int | None:
        """Total message count from metadata.yaml, when there is one."""
        try:
            meta = yaml.safe_load((self.path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
            return int(meta["message_count"])
        except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError):
            return None

    def _recovery_file(self, target: Path) -> Path | None:
        """The single uncompressed storage file a recovery reader can read, else None."""
        files = self._storage_files(target)
        if len(files) != 1 or not files[0].is_file() or files[0].suffix not in _STORAGE_SUFFIXES:
            return None  # split bags and rosbag2 file compression (.mcap.zstd) are not recovered
        if target.is_dir() and self.storage_id not in ("mcap", "sqlite3", "unknown"):
            return None
        return files[0]

    def _note_damage(self, damage: Damage) -> None:
        self.damage = damage
        log.warning("%s", damage.describe())

    def open(self) -> BagReader:
        """Open the bag; BagError when it is missing, of an unsupported kind, or damaged and strict."""
        target = _resolve_bag_path(self.path)
        if target.is_dir() or is_zstd_file(target):
            layout = bag_layout(target)
            if not layout.simple:  # split, piece missing, or zstd per file: one reader per piece
                self._open_pieces(layout)
                return self
        storage_file = self._recovery_file(target)
        if storage_file is not None and storage_file.suffix == ".db3" and _has_wal(storage_file):
            # rosbags opens databases immutable, which ignores the log: its rows would be silently lost
            if self.strict:
                raise BagError(
                    f"cannot read bag {self.path}: {storage_file.name} has a write-ahead log "
                    f"(the recorder did not finish; without --strict its rows are read). {_REPAIR_HINT}"
                )
            self._open_recovery(storage_file, "a write-ahead log")
            return self
        try:
            reader = Reader(target)
            reader.open()
        except FileNotFoundError as e:
            raise BagError(f"cannot open bag {self.path}: {e}") from None
        except Exception as e:  # rosbags ReaderError, sqlite3/yaml errors, ...: one line for the user
            if self.strict or storage_file is None:
                raise BagError(
                    f"cannot read bag {self.path}: {e} (truncated or corrupt? {_REPAIR_HINT}"
                    + ("" if self.strict else "; only single-file bags are recovered")
                    + ")"
                ) from None
            self._open_recovery(storage_file, str(e))
            return self
        self._reader = reader
        if storage_file is not None and storage_file.suffix == ".mcap":
            self._check_mcap_summary(storage_file)
        elif storage_file is not None and storage_file.suffix == ".db3":
            problem = sqlite_quick_check(storage_file)
            if problem is not None:  # pages SQLite reads without error may still hide rows
                self.close()
                if self.strict:
                    raise BagError(f"cannot read bag {self.path}: {problem} (truncated or corrupt? {_REPAIR_HINT})")
                self._open_recovery(storage_file, f"integrity check: {problem}")
                if self.damage is None:
                    rec = self._reader
                    rec.damage = Damage(
                        "sqlite3",
                        str(storage_file),
                        f"integrity check: {problem}",
                        file_bytes=storage_file.stat().st_size,
                        messages_read=sum(c.msgcount for c in rec.connections),
                        messages_expected=self._expected_count(),
                    )
                    self._note_damage(rec.damage)
        return self

    def _open_pieces(self, layout: Any) -> None:
        """A split and/or file-compressed bag: each present piece read by its own single-file BagReader."""

        def open_piece(path: Path) -> BagReader:
            return BagReader(path, typestore=self.typestore, strict=self.strict).open()

        self._reader = PiecewiseReader(layout, open_piece, strict=self.strict).open()
        if self._reader.damage is not None:
            self._note_damage(self._reader.damage)

    def _check_mcap_summary(self, storage_file: Path) -> None:
        """rosbags reads an MCAP file through its summary (index) section and trusts it: a damaged summary
        silently drops or mislabels messages (found by `make fuzz`). Check it: by the footer's CRC when the
        writer stored one (ros2 bag does), else by streaming the data section once and comparing topics,
        types and counts. A mismatch is damage: read with the streaming reader, or a BagError when strict."""
        ok = mcap_summary_crc_ok(storage_file)
        scanned = None
        if ok is None:
            scanned = McapRecovery(storage_file, None).open()
            index = Counter({(c.topic, c.msgtype): c.msgcount for c in self.reader.connections})
            data: Counter[tuple[str, str]] = Counter()
            for c in scanned.connections:
                data[(c.topic, c.msgtype)] += c.msgcount
            ok = scanned.damage is None and +index == +data
        if ok:
            return
        why = "the MCAP summary (index) does not match the data"
        if self.strict:
            self.close()
            raise BagError(f"cannot read bag {self.path}: {why} (truncated or corrupt? {_REPAIR_HINT})")
        log.warning("%s: %s; reading the data section directly", self.path, why)
        self.close()
        if scanned is None:
            scanned = McapRecovery(storage_file, self._expected_count()).open()
        if scanned.damage is None:
            scanned.damage = Damage(
                "mcap",
                str(storage_file),
                why,
                file_bytes=storage_file.stat().st_size,
                messages_read=sum(c.msgcount for c in scanned.connections),
                messages_expected=self._expected_count(),
            )
        self._reader = scanned
        self._note_damage(scanned.damage)

    def _open_recovery(self, storage_file: Path, why: str, expected: int | None = None) -> None:
        log.warning("%s: %s; reading what is readable with the recovery reader", self.path, why)
        try:
            rec = open_recovery(storage_file, self._expected_count() if expected is None else expected)
        except Exception as e:  # nothing readable at all (no header, no topics table)
            raise BagError(f"cannot read bag {self.path}: {e} (truncated or corrupt? {_REPAIR_HINT})") from None
        self._reader = rec
        if rec.damage is not None:
            self._note_damage(rec.damage)

    def close(self) -> None:
        if self._reader is not None:
            try:
                self._reader.close()
            finally:
                self._reader = None
                if self.damage is not None:  # the data pass can find more (sqlite3 overflow pages)
                    self.damage.messages_read = max(self.damage.messages_read, sum(self.read_counts.values()))

    def __enter__(self) -> BagReader:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def recovered(self) -> bool:
        """True when the bag is read by a recovery reader (see recover.py)."""
        return isinstance(self._reader, McapRecovery | Sqlite3Recovery)

    @property
    def reader(self) -> Any:
        if self._reader is None:
            raise RuntimeError("BagReader is not open")
        return self._reader

    # ---------------------------------------------------------------------------------------- topics
    @property
    def connections(self) -> list[Connection]:
        return list(self.reader.connections)

    @property
    def topics(self) -> dict[str, TopicInfo]:
        """Topic name -> TopicInfo (counts summed over connections)."""
        out: dict[str, TopicInfo] = {}
        for c in self.reader.connections:
            prev = out.get(c.topic)
            has_def = c.msgdef.format != MessageDefinitionFormat.NONE and bool(c.msgdef.data)
            out[c.topic] = TopicInfo(
                c.topic,
                _normalise(c.msgtype),
                c.msgtype,
                c.msgcount + (prev.count if prev else 0),
                has_def or (prev.has_definition if prev else False),
            )
        return dict(sorted(out.items()))

    @property
    def compression(self) -> str:
        """'none' or '<mode>:<format>' of rosbag2 compression (MCAP chunk compression is not listed here)."""
        mode = self.reader.compression_mode
        return f"{mode}:{self.reader.compression_format}" if mode else "none"

    @property
    def storage_id(self) -> str:
        """'mcap' or 'sqlite3' (from metadata.yaml, else the storage file's suffix)."""
        target = _resolve_bag_path(self.path)
        if isinstance(self._reader, PiecewiseReader):
            return self._reader.layout.storage
        if target.is_file():
            return {".mcap": "mcap", ".db3": "sqlite3"}.get(target.suffix, target.suffix)
        try:
            meta = yaml.safe_load((target / "metadata.yaml").read_text())
            return str(meta["rosbag2_bagfile_information"]["storage_identifier"])
        except (OSError, KeyError, TypeError, yaml.YAMLError):
            return "unknown"

    def describe_topics(self) -> str:
        return "; ".join(t.describe() for t in self.topics.values()) or "(no topics)"

    def require_topic(self, topic: str, accepted: Iterable[str], role: str) -> TopicInfo:
        """TopicInfo of `topic`, checking its type is one of `accepted`; BagError naming the bag's topics."""
        accepted = tuple(normalize_type_name(a) for a in accepted)
        info = self.topics.get(topic)
        if info is None:
            candidates = [t.name for t in self.topics.values() if t.msgtype in accepted]
            hint = f" Topics of a suitable type: {', '.join(candidates)}." if candidates else ""
            raise BagError(f"{role} topic {topic!r} is not in {self.path}. Available: {self.describe_topics()}.{hint}")
        if info.msgtype not in accepted:
            raise BagError(f"{role} topic {topic!r} has type {info.declared_type!r}; expected one of {list(accepted)}")
        if info.count == 0:
            log.warning("%s topic %s has no messages", role, topic)
        return info

    # -------------------------------------------------------------------------------------- messages
    def messages(self, topics: Iterable[str] | None = None) -> Iterator[BagMessage]:
        """Raw messages of `topics` (None = all) in the order rosbags reads them (bag time per file).

        A storage error part-way (corrupt chunk, unreadable database page) is a BagError when strict;
        otherwise reading goes on with the recovery reader (file order), skipping what was already
        yielded, and the loss is recorded in `damage`.
        """
        wanted = None if topics is None else set(topics)
        conns = [c for c in self.reader.connections if wanted is None or c.topic in wanted]
        if wanted is not None and not conns:
            return
        yielded: Counter = Counter()  # (topic, log time) already given out, to skip after a switch
        it = iter(self.reader.messages(connections=conns))
        while True:
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                conn, log_time, raw = next(it)
            except StopIteration:
                expected = sum(c.msgcount for c in conns)
                got = sum(yielded.values())
                late = getattr(self._reader, "damage", None)
                if late is not None and self.damage is None:  # found only while reading (e.g. unreadable data)
                    self._note_damage(late)
                if self.recovered or isinstance(self._reader, PiecewiseReader) or got >= expected:
                    return
                # the index (MCAP summary, metadata) promised more: a damaged index silently skips messages
                e: Exception = BagError(f"only {got} of the {expected} messages the bag's index counts were readable")
                n = got
                target = _resolve_bag_path(self.path)
                storage_file = self._recovery_file(target)
                if self.strict or storage_file is None:
                    raise BagError(f"reading {self.path}: {e} (truncated or corrupt? {_REPAIR_HINT})") from None
                it = self._switch_to_recovery(storage_file, wanted, yielded, n, e)
                continue
            except Exception as e:  # storage-level failure part-way
                n = sum(self.read_counts.values())
                target = _resolve_bag_path(self.path)
                storage_file = None if self.recovered else self._recovery_file(target)
                if self.strict or storage_file is None:
                    raise BagError(
                        f"reading {self.path} failed after {n} messages: {e} (truncated or corrupt? {_REPAIR_HINT})"
                    ) from None
                it = self._switch_to_recovery(storage_file, wanted, yielded, n, e)
                continue
            if not self.recovered:
                yielded[(conn.topic, int(log_time))] += 1
            self.read_counts[conn.topic] += 1
            yield BagMessage(
                conn.topic,
                _normalise(conn.msgtype),
                int(log_time),
                self._payload(raw),
                conn,
                time.perf_counter() - t0,
                time.thread_time() - c0,
            )

    def _switch_to_recovery(
        self, storage_file: Path, wanted: set[str] | None, yielded: Counter, n: int, error: Exception
    ) -> Iterator[tuple[Connection, int, Any]]:
        """After a failure part-way: the recovery reader's messages not yielded yet."""
        log.warning(
            "reading %s failed after %d messages (%s); continuing with the recovery reader", self.path, n, error
        )
        old = self._reader
        # how many messages the bag had: metadata.yaml, else what rosbags counted from the index
        expected = self._expected_count()
        if expected is None:
            expected = sum(c.msgcount for c in old.connections) or None
        try:
            self._open_recovery(storage_file, f"failed after {n} messages: {error}", expected)
        except BagError:
            self._reader = old
            raise
        try:
            old.close()
        except Exception as e:  # the broken reader: nothing more to do with it
            log.debug("closing the failed reader: %s", e)
        rec = self._reader
        if rec.damage is None:  # the recovery scan found nothing wrong, yet rosbags failed: say so
            rec.damage = Damage(
                self.storage_id,
                str(storage_file),
                f"{type(error).__name__}: {error}",
                file_bytes=storage_file.stat().st_size,
                messages_read=sum(c.msgcount for c in rec.connections),
                messages_expected=expected,
            )
            self._note_damage(rec.damage)
        conns = [c for c in self._reader.connections if wanted is None or c.topic in wanted]

        def rest() -> Iterator[tuple[Connection, int, Any]]:
            if not conns:
                return
            for conn, t, raw in self._reader.messages(connections=conns):
                key = (conn.topic, int(t))
                if yielded[key] > 0:
                    yielded[key] -= 1
                    continue
                yield conn, t, raw

        return rest()

    def _decoder(self, conn: Connection) -> tuple[Typestore, str] | None:
        """(typestore, type name) to deserialise `conn`'s messages; None when the type is unknown."""
        key = (conn.topic, conn.msgtype)
        if key in self._decoders:
            return self._decoders[key]
        name = _normalise(conn.msgtype)
        has_def = conn.msgdef.format == MessageDefinitionFormat.MSG and bool(conn.msgdef.data)
        ours = name in self.typestore.fielddefs if name else False
        mismatch = False
        if ours and conn.digest and conn.digest.startswith("RIHS01_"):
            mismatch = conn.digest != self.typestore.hash_rihs01(name)
        result: tuple[Typestore, str] | None = (self.typestore, name) if ours else None
        if name and has_def and (not ours or mismatch):
            try:
                if self._private is None:
                    self._private = stock_typestore(Stores.EMPTY)
                if name not in self._private.fielddefs:
                    self._private.register(get_types_from_msg(conn.msgdef.data, name))
                result = (self._private, name)
                if mismatch:
                    log.warning(
                        "%s: the bag's definition of %s differs from ours (hash %s); decoding with the bag's",
                        conn.topic,
                        name,
                        conn.digest,
                    )
            except Exception as e:  # a broken embedded definition: fall back to ours (if any)
                log.warning("%s: cannot use the bag's definition of %s: %s", conn.topic, name, e)
        self._decoders[key] = result
        return result

    def can_decode(self, topic: str) -> bool:
        """True when every connection of `topic` has a known type (ours or the bag's definition)."""
        conns = [c for c in self.reader.connections if c.topic == topic]
        return bool(conns) and all(self._decoder(c) is not None for c in conns)

    def warm_up(self, topics: Sequence[str]) -> None:
        """Generate the deserialisers of these topics' types now: rosbags compiles each type's code on first
        use (tens of milliseconds), which would otherwise land in the first message's read time."""
        for conn in self.reader.connections:
            dec = self._decoder(conn) if conn.topic in topics else None
            if dec is not None:
                store, name = dec
                store.get_msgdef(name)

    def _payload(self, raw: bytes | memoryview) -> bytes | memoryview:
        """A stored message's CDR bytes: rosbags decompresses per-message zstd itself when metadata.yaml says so;
        without it (a missing metadata.yaml) the frames are recognised by their magic here."""
        return raw if self.reader.compression_mode == "message" else decompress_message(raw)

    def first_message(self, topic: str) -> Any | None:
        """The first decodable message of `topic` in reading order, for start-up work (bag-eval's warm-up);
        None when there is none or it cannot be read. Nothing is counted: `messages` reads it again."""
        conns = [c for c in self.reader.connections if c.topic == topic]
        if not conns:
            return None
        it = self.reader.messages(connections=conns)
        try:
            conn, log_time, raw = next(it)
            return self.decode(
                BagMessage(conn.topic, _normalise(conn.msgtype), int(log_time), self._payload(raw), conn)
            )
        except Exception as e:  # a damaged or empty topic: the read loop meets and counts it
            log.debug("first message of %s: %s", topic, e)
            return None
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    def decode(self, msg: BagMessage) -> Any:
        """Deserialise `msg`; MessageDecodeError when its type is unknown or its bytes are malformed."""
        dec = self._decoder(msg.connection)
        if dec is None:
            raise MessageDecodeError(f"{msg.topic}: unknown message type {msg.connection.msgtype!r}")
        store, name = dec
        try:
            return store.deserialize_cdr(msg.raw, name)
        except Exception as e:  # rosbags raises struct/index/unicode/assertion errors on bad bytes
            raise MessageDecodeError(f"{msg.topic}: {type(e).__name__}: {e}") from None

    def decode_or_none(self, msg: BagMessage) -> Any | None:
        """`decode`, but a failure is counted in `dropped['undecodable:<topic>']`, logged and returns None."""
        try:
            return self.decode(msg)
        except MessageDecodeError as e:
            key = f"undecodable:{msg.topic}"
            self.dropped[key] += 1
            now = time.monotonic()
            if now - self._last_logged.get(key, -1e9) >= _LOG_EVERY_S:
                self._last_logged[key] = now
                log.warning("skipped an undecodable message (%s total on %s): %s", self.dropped[key], msg.topic, e)
            return None
