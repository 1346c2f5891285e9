"""Reading rosbag2 bags (sqlite3 or mcap, zstd file/message/chunk compression) with the project typestore.

`rosbags.rosbag2.Reader` does the storage work: both storage plugins, rosbag2 file and message compression
(zstd) and MCAP chunk compression (zstd, lz4). This module adds what bag evaluation needs on top:

- type names declared without `/msg/` ("sensor_msgs/Image", seen in hand-made and converted bags) are
  normalised before lookup;
- messages decode with our typestore (stock Humble/Jazzy + vision_msgs 4.x + msg/*.msg); a type we do
  not know, or whose hash in the bag differs from ours (another layout), decodes with the definition
  embedded in the bag when there is one;
- every user-facing problem is a `BagError` with one clear line (missing or truncated file, topic not in
  the bag -- listing the topics that are), never a traceback; a message that does not decode is counted
  and logged (throttled) by `decode_or_none`, and the run goes on.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from rosbags.interfaces import Connection, MessageDefinitionFormat
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_types_from_msg
from rosbags.typesys import get_typestore as stock_typestore
from rosbags.typesys.store import Typestore

from shapemask_ros.ros_bridge.typestore import get_typestore, normalize_type_name

log = logging.getLogger(__name__)

_STORAGE_SUFFIXES = (".mcap", ".db3")
_LOG_EVERY_S = 5.0


class BagError(Exception):
    """A problem with the user's bag or arguments: shown as one line, exit code 2, no traceback."""


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


def _resolve_bag_path(path: Path) -> Path:
    """The bag directory, or a lone .mcap/.db3 inside a directory whose metadata.yaml is missing (a
    recorder that was killed never writes it)."""
    if not path.exists():
        raise BagError(f"bag not found: {path}")
    if path.is_dir() and not (path / "metadata.yaml").exists():
        files = sorted(p for p in path.iterdir() if p.suffix in _STORAGE_SUFFIXES)
        if len(files) == 1:
            log.warning("%s has no metadata.yaml; reading %s directly", path, files[0].name)
            return files[0]
        raise BagError(
            f"{path} is not a rosbag2 directory: no metadata.yaml and "
            f"{'no' if not files else len(files)} .mcap/.db3 storage files"
        )
    if path.is_file() and path.suffix not in _STORAGE_SUFFIXES:
        raise BagError(f"{path}: not a rosbag2 bag (want a bag directory, a .mcap or a .db3 file)")
    return path


class BagReader:
    """A rosbag2 bag opened for reading (use as a context manager)."""

    def __init__(self, path: str | Path, distro: str = "humble", typestore: Typestore | None = None) -> None:
        self.path = Path(path)
        self.typestore = typestore or get_typestore(distro)
        self._reader: Reader | None = None
        self._decoders: dict[tuple[str, str], tuple[Typestore, str] | None] = {}
        self._private: Typestore | None = None  # types taken from the bag's own definitions
        self.dropped: Counter = Counter()  # undecodable messages by topic ("undecodable:/topic")
        self.read_counts: Counter = Counter()  # messages read by topic
        self._last_logged: dict[str, float] = {}

    # ----------------------------------------------------------------------------------------- open
    def open(self) -> BagReader:
        """Open the bag; BagError when it is missing, truncated, corrupt or of an unsupported kind."""
        target = _resolve_bag_path(self.path)
        try:
            reader = Reader(target)
            reader.open()
        except FileNotFoundError as e:
            raise BagError(f"cannot open bag {self.path}: {e}") from None
        except Exception as e:  # rosbags ReaderError, sqlite3/yaml errors, ...: one line for the user
            raise BagError(
                f"cannot read bag {self.path}: {e} (truncated or corrupt? a recording that was killed "
                "can be repaired with `ros2 bag reindex` or `mcap recover`)"
            ) from None
        self._reader = reader
        return self

    def close(self) -> None:
        if self._reader is not None:
            try:
                self._reader.close()
            finally:
                self._reader = None

    def __enter__(self) -> BagReader:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def reader(self) -> Reader:
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
            raise BagError(
                f"{role} topic {topic!r} is not in {self.path}. Available: {self.describe_topics()}.{hint}"
            )
        if info.msgtype not in accepted:
            raise BagError(
                f"{role} topic {topic!r} has type {info.declared_type!r}; expected one of {list(accepted)}"
            )
        if info.count == 0:
            log.warning("%s topic %s has no messages", role, topic)
        return info

    # -------------------------------------------------------------------------------------- messages
    def messages(self, topics: Iterable[str] | None = None) -> Iterator[BagMessage]:
        """Raw messages of `topics` (None = all) in the order rosbags reads them (bag time per file).

        A storage error part-way (corrupt chunk, truncated database page) is a BagError.
        """
        wanted = None if topics is None else set(topics)
        conns = [c for c in self.reader.connections if wanted is None or c.topic in wanted]
        if wanted is not None and not conns:
            return
        it = iter(self.reader.messages(connections=conns))
        while True:
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                conn, log_time, raw = next(it)
            except StopIteration:
                return
            except Exception as e:  # storage-level failure: the rest of the bag is unreadable
                n = sum(self.read_counts.values())
                raise BagError(
                    f"reading {self.path} failed after {n} messages: {e} (truncated or corrupt?)"
                ) from None
            self.read_counts[conn.topic] += 1
            yield BagMessage(
                conn.topic,
                _normalise(conn.msgtype),
                int(log_time),
                raw,
                conn,
                time.perf_counter() - t0,
                time.thread_time() - c0,
            )

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
                log.warning(
                    "skipped an undecodable message (%s total on %s): %s", self.dropped[key], msg.topic, e
                )
            return None
