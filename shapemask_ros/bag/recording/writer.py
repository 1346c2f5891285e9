"""Writing outputs atomically: a directory assembled next to its destination, and rosbag2 bags in it.

`AtomicOutputDir` builds everything (output bag, report, overlays) in a hidden temporary sibling of the
destination and renames it into place only on `commit()`; any exception before that removes it, so a
failed or interrupted run never leaves a partial output behind (the rename is atomic on one filesystem).

`BagWriter` wraps `rosbags.rosbag2.Writer` (rosbag2 version 9) with what `ros2 bag` needs to read a bag
written without ROS: every connection carries its complete message definition and RIHS01 hash (ours from
`ros_bridge.typestore.message_definition`, copied topics keep the definition stored in the input bag) and
type names in the 'pkg/msg/Type' form. MCAP bags use zstd chunk compression by default (what
`ros2 bag record --storage mcap` users get with the default "zstd_fast" profile), sqlite3 bags zstd
per-message compression.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

from rosbags.interfaces import Connection, ConnectionExtRosbag2, MessageDefinitionFormat
from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg
from rosbags.typesys import get_typestore as stock_typestore
from rosbags.typesys.store import Typestore

from shapemask_ros.ros_bridge.typestore import message_definition, normalize_type_name
from shapemask_ros.utils.io import AtomicDir

log = logging.getLogger(__name__)

STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}


# Assembled in a hidden sibling and renamed into place; stale ones of killed runs are removed (utils/io.py).
AtomicOutputDir = AtomicDir


def _hash_from_definition(msgdef: str, name: str) -> str:
    """RIHS01 hash of `name` computed from a full ros2msg definition (for old bags that store none)."""
    store = stock_typestore(Stores.EMPTY)
    store.register(get_types_from_msg(msgdef, name))
    return store.hash_rihs01(name)


class BagWriter:
    """A rosbag2 bag being written (version 9). Use as a context manager, or open()/close()/abort()."""

    def __init__(self, path: str | Path, typestore: Typestore, storage: str = "mcap", compress: bool = True) -> None:
        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {sorted(STORAGES)}, got {storage!r}")
        self.path = Path(path)
        self.typestore = typestore
        self.storage = storage
        self._writer = Writer(self.path, version=9, storage_plugin=STORAGES[storage])
        if compress:
            mode = CompressionMode.STORAGE if storage == "mcap" else CompressionMode.MESSAGE
            self._writer.set_compression(mode, CompressionFormat.ZSTD)
        self._outputs: dict[str, Connection] = {}
        self._copies: dict[tuple[str, str], Connection | None] = {}
        self.counts: Counter = Counter()  # messages written by topic
        self.not_copied: Counter = Counter()  # input topics that could not be copied (no definition)

    def open(self) -> BagWriter:
        self._writer.open()
        return self

    def close(self) -> None:
        """Finish the bag (index, metadata.yaml)."""
        self._writer.close()

    def abort(self) -> None:
        """Stop without finishing; the caller deletes the directory."""
        try:
            self._writer.abort()
        except Exception as e:  # already broken: nothing more to save
            log.debug("abort: %s", e)

    def __enter__(self) -> BagWriter:
        return self.open()

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # ----------------------------------------------------------------------------------- connections
    def add_output(self, topic: str, msgtype: str) -> Connection:
        """Connection for one of our output topics, with our full message definition."""
        name = normalize_type_name(msgtype)
        if topic in self._outputs:
            return self._outputs[topic]
        msgdef, digest = message_definition(self.typestore, name)
        conn = self._writer.add_connection(topic, name, msgdef=msgdef, rihs01=digest)
        self._outputs[topic] = conn
        return conn

    def copy_connection(self, conn: Connection) -> Connection | None:
        """Output connection mirroring an input one (same topic, type and QoS, the bag's own definition).

        None when neither the input bag nor our typestore has a definition of the type (counted in
        `not_copied`): rosbag2 readers need one.
        """
        key = (conn.topic, conn.msgtype)
        if key in self._copies:
            return self._copies[key]
        out = None
        try:
            name = normalize_type_name(conn.msgtype)
        except ValueError:
            name = ""
        msgdef, digest = self._definition(conn, name)
        if msgdef is None:
            self.not_copied[conn.topic] += 1
            log.warning("not copying %s: no message definition for %r", conn.topic, conn.msgtype)
        else:
            qos = conn.ext.offered_qos_profiles if isinstance(conn.ext, ConnectionExtRosbag2) else []
            try:
                out = self._writer.add_connection(
                    conn.topic, name, msgdef=msgdef, rihs01=digest, offered_qos_profiles=qos
                )
            except Exception as e:  # e.g. a second connection of the same topic and type
                log.warning("not copying %s (%s): %s", conn.topic, conn.msgtype, e)
                self.not_copied[conn.topic] += 1
        self._copies[key] = out
        return out

    def _definition(self, conn: Connection, name: str) -> tuple[str | None, str]:
        """(message definition, RIHS01) for an input connection: the bag's, else ours, else (None, '')."""
        if not name:
            return None, ""
        data = conn.msgdef.data if conn.msgdef.format != MessageDefinitionFormat.NONE else ""
        digest = conn.digest if conn.digest.startswith("RIHS01_") else ""
        if data:
            if not digest:
                try:
                    digest = (
                        self.typestore.hash_rihs01(name)
                        if name in self.typestore.fielddefs
                        else _hash_from_definition(data, name)
                    )
                except Exception as e:  # unparsable definition: let ours take over below
                    log.debug("hash of %s from the bag's definition: %s", name, e)
                    digest = ""
            if digest:
                return data, digest
        if name in self.typestore.fielddefs:
            return message_definition(self.typestore, name)
        return None, ""

    # ------------------------------------------------------------------------------------------ write
    def write_raw(self, conn: Connection, log_time_ns: int, raw: bytes | memoryview) -> None:
        self._writer.write(conn, int(log_time_ns), raw)
        self.counts[conn.topic] += 1

    def write(self, conn: Connection, log_time_ns: int, msg: Any) -> int:
        """Serialise `msg` as `conn`'s type and write it; returns the number of bytes."""
        raw = self.typestore.serialize_cdr(msg, conn.msgtype)
        self.write_raw(conn, log_time_ns, raw)
        return len(raw)
