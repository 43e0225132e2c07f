"""TensorBoard event files of a resumed run: the events written after the step it resumes from are dropped, so its
curves continue from there with no step written twice (and no ``outoforder_steps`` in readers of the raw files)."""

from __future__ import annotations

from pathlib import Path

from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.summary.writer.record_writer import RecordWriter

from ebmm_rl.runs.atomic import write_atomically

EVENT_FILE_GLOB = "events.out.tfevents.*"


def drop_events_after(folder: str | Path, step: int) -> int:
    """Rewrite every event file under ``folder`` (atomically, one at a time) without its events after ``step``; a record
    cut short by a killed writer goes too. Files left with no event are removed.

    :param folder: a run's TensorBoard folder (may be missing).
    :param step: the last step to keep.
    :return: the number of events dropped.
    """
    dropped = 0
    for path in sorted(Path(folder).rglob(EVENT_FILE_GLOB)):
        records = list(RawEventFileLoader(str(path)).Load())
        kept = [record for record in records if Event.FromString(record).step <= step]
        dropped += len(records) - len(kept)
        if len(kept) == len(records) and path.stat().st_size == sum(len(record) + 16 for record in records):
            continue  # nothing to drop and no partial record at the end

        def write(temporary: Path, kept: list[bytes] = kept) -> None:
            with open(temporary, "wb") as file:
                writer = RecordWriter(file)
                for record in kept:
                    writer.write(record)

        if kept:
            write_atomically(path, write)
        else:
            path.unlink()
    return dropped
