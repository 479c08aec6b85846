"""`structsent label`: stream a file through the engine, commit output in chunks, resume after a crash.

Exactly-once: each chunk's output is appended and flushed to disk before the manifest records
it; on resume the output is cut back to the last recorded length and reading restarts at the
recorded input position, so the final file equals that of an uninterrupted run byte for byte
(row for row for Parquet).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import itertools
import os
import stat
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from ..batching import padding_fraction
from ..engine import deduplicate
from ..errors import BadInputError, InputChangedError, JobFilesChangedError, JobLockedError, OutputWriteError
from ..io.formats import Format
from ..io.lock import OutputLock
from ..io.manifest import (
    InputLedger,
    Manifest,
    changed_settings,
    file_identity,
    input_fingerprint,
    model_fingerprint,
    model_settings,
    run_settings,
    same_input,
)
from ..io.paths import check_output_is_a_file, check_work_path, mode_of, read_only_once
from ..io.readers import InputRow, RowReader, first_json_fields, only_column_notice, open_reader
from ..io.writers import ChunkEncoder, added_columns, check_prefix, merge_parquet_parts, write_parquet_part
from ..pipeline import BackgroundWorker, Prefetch, quick_gil_handoff
from ..results import LabelResult, to_result
from ..tokenize_processes import CLOSE_WAIT_S, TokenizerProcesses
from .work_files import (
    OutputFiles,
    another_jobs,
    append_durably,
    check_unchanged,
    extend_checksum,
    refuse_another_jobs_work_file,
    refuse_reading_another_jobs_files,
    truncate_to,
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class LabelJobSpec:
    input: str  # a path, or "-" for standard input
    output: str | None  # a path, or None / "-" for standard output
    input_format: Format
    output_format: Format
    text_column: str = "text"
    id_column: str | None = None
    on_bad_row: str = "error"  # "error" or "flag"
    chunk_rows: int = 2048
    resume: bool = False
    overwrite: bool = False
    prefix: str = ""
    cache_size: int = 200_000  # distinct texts whose results are reused within the job
    tokenizer_processes: int = 0  # tokenize in this many worker processes (0: in the job's own process)

    def __post_init__(self) -> None:
        if self.output == "":  # (it named the current directory: "is a directory")
            raise BadInputError("-o: an empty path; name an output file, or - for standard output")
        if not self.text_column:  # JSON Lines took an empty name for "no text column" and flagged every row
            raise BadInputError("--text-column is empty: name the column that holds the text")
        check_prefix(self.prefix)

    def options(self) -> dict:
        """The settings a resumed job must share with the one it continues."""
        # Values as they are (None stays null: a column named "None" is another option).
        return {k: v.value if hasattr(v, "value") else v for k, v in dataclasses.asdict(self).items()
                if k in ("text_column", "id_column", "on_bad_row", "prefix", "input_format", "output_format")}


@dataclasses.dataclass
class PreparedChunk:
    """A chunk read and tokenized ahead of the model."""

    rows: list[InputRow]
    position: tuple[int, int, int]  # reader position, line and rows read just after the chunk
    digest: str | None  # of the input bytes the chunk consumed (None for Parquet)
    resynchronised: int  # malformed multi-line records in the chunk whose later lines were read again
    unique_index: list[int]  # row -> index among unique_texts
    unique_texts: list[object]
    cache_keys: list[bytes | None]  # ResultCache.key per unique text
    encoded: list | None = None  # EncodedText per unique text, None where cached (filled in after reading)

    def uncached(self, cache: "ResultCache") -> list[int]:
        """Indices of the unique texts whose results ``cache`` does not hold yet: the ones to tokenize.

        The cache only grows during a job, so a text cached now is still cached when its chunk is
        labelled; one cached in between is tokenized for nothing, never the other way round."""
        return [i for i, key in enumerate(self.cache_keys) if cache.get(key) is None]

    def fill_encoded(self, indices: list[int], encoded: list) -> None:
        self.encoded = [None] * len(self.unique_texts)
        for i, encoding in zip(indices, encoded, strict=True):
            self.encoded[i] = encoding


@dataclasses.dataclass
class JobSummary:
    rows: int = 0
    flagged: int = 0
    duplicates: int = 0
    labels: Counter = dataclasses.field(default_factory=Counter)
    real_tokens: int = 0
    padded_tokens: int = 0
    rows_this_run: int = 0
    seconds_this_run: float = 0.0
    interrupted: bool = False
    resumed_from: int = 0
    text_column: str | None = None  # the column labelled, as the reader resolved it (not kept in the manifest)
    model_seconds: float = 0.0  # time this run spent in the model stage
    resynchronised: int = 0  # malformed multi-line CSV records after which reading went on at their next line
    already_complete: bool = False  # --resume found the output finished (no unfinished job): nothing ran
    truncated: int = 0  # texts labelled from their first (or with keep_end, last) max_length tokens alone

    @property
    def model_busy_fraction(self) -> float:
        return self.model_seconds / self.seconds_this_run if self.seconds_this_run else 0.0

    def snapshot(self) -> dict:
        return {**self.counters(), "rows_this_run": self.rows_this_run}

    @property
    def padding_fraction(self) -> float:
        return padding_fraction(self.real_tokens, self.padded_tokens)

    @property
    def rows_per_second(self) -> float:
        return self.rows_this_run / self.seconds_this_run if self.seconds_this_run else 0.0

    def counters(self) -> dict:
        return {"rows": self.rows, "flagged": self.flagged, "duplicates": self.duplicates,
                "labels": dict(self.labels), "real_tokens": self.real_tokens, "padded_tokens": self.padded_tokens,
                "resynchronised": self.resynchronised, "truncated": self.truncated}

    @classmethod
    def from_counters(cls, data: dict) -> "JobSummary":
        summary = cls(**{k: v for k, v in data.items() if k not in ("labels", "rows_this_run")})
        summary.labels = Counter(data.get("labels", {}))
        return summary


def _with_encoding(pool: TokenizerProcesses, chunk: PreparedChunk, indices: list[int], future) -> PreparedChunk:
    chunk.fill_encoded(indices, pool.result(future))
    return chunk


# A stopped job waits this long for its reading thread to end once its tokenizer processes are ended
# (their pool's close waits for them at most CLOSE_WAIT_S).
READER_END_S = CLOSE_WAIT_S + 5.0
MAX_CACHED_WINDOWS = 0xFFFF  # a record keeps a text's window count in 16 bits; a text of more is not cached
MIXED = "mixed"  # in run_settings: rows were labelled with other threads or batch sizes by an earlier run


class ResultCache:
    """Results of texts already labelled in this job (streams repeat "好评！" endlessly).

    Keyed by a 128-bit digest, so a long text costs as little as a short one; once full, it
    keeps what it has and stops adding. Entries are also appended to a file at every commit:
    a resumed job reloads exactly the cache the interrupted one had at that point, so it
    computes the same texts in the same batches and writes the same bytes.
    """

    def __init__(self, capacity: int, labels: list[str]) -> None:
        self.capacity = capacity
        self.labels = labels
        self._results: dict[bytes, LabelResult] = {}
        self._unsaved: list[tuple[bytes, LabelResult]] = []
        self._record = struct.Struct(f"<16s{len(labels)}d?H")

    @staticmethod
    def key(text: object) -> bytes | None:
        """The cache key of ``text`` (None for a value that is not a string: never cached).

        Computed once per text, ahead of the model, while the chunk is read and tokenized."""
        if not isinstance(text, str):
            return None
        return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()

    def get(self, key: bytes | None) -> LabelResult | None:
        return self._results.get(key) if key is not None and self._results else None

    def put(self, key: bytes | None, result: LabelResult) -> None:
        if key is not None and result.ok and len(self._results) < self.capacity and key not in self._results \
                and result.windows <= MAX_CACHED_WINDOWS:
            self._results[key] = result
            self._unsaved.append((key, result))

    def take_unsaved(self) -> list[tuple[bytes, LabelResult]]:
        """The entries added since the last call (handed to the writer with their chunk)."""
        entries, self._unsaved = self._unsaved, []
        return entries

    def encode(self, entries: list[tuple[bytes, LabelResult]]) -> bytes:
        """The bytes that record ``entries`` in the cache file (appended at each commit)."""
        return b"".join(
            self._record.pack(key, *(r.scores[label] for label in self.labels), r.truncated, r.windows)
            for key, r in entries
        )

    def load(self, path: Path, length: int) -> None:
        """Reload the first ``length`` bytes of entries saved by an earlier run of the job (and cut
        off what was appended after its last commit: a crash between the append and the manifest)."""
        if not length:
            truncate_to(path, 0)
            return
        size = path.stat().st_size if path.exists() else None
        if size is None or size < length:
            missing = "is missing" if size is None else f"holds {size:,} bytes of the {length:,} committed"
            raise BadInputError(f"cannot resume: {path} (the job's result cache) {missing}; start over with --overwrite")
        with open(path, "r+b") as handle:
            handle.truncate(length)
            data = handle.read()
        for key, *values in self._record.iter_unpack(data):
            probabilities, truncated, windows = values[:-2], values[-2], values[-1]
            self._results[key] = to_result(np.array(probabilities), self.labels, truncated=truncated, windows=windows)


class LabelJob:
    """One run of `structsent label` (a fresh job or a resumed one)."""

    def __init__(self, spec: LabelJobSpec, classifier, *, progress=None, stop: threading.Event | None = None,
                 notify: Callable[[str], None] | None = None):
        self.spec = spec
        self.classifier = classifier
        self.progress = progress
        self.stop = stop or threading.Event()
        self.notify = notify or (lambda message: None)
        self.labels = list(classifier.labels)
        self.cache = ResultCache(spec.cache_size, self.labels)
        self.files = output_files(spec)
        self._reader_in_use = False  # True: the reading thread was still inside the reader when the job stopped
        self._tokenizer_pool: TokenizerProcesses | None = None  # while tokenizer processes run
        # True while the input is opened (in the caller's thread): a stop then cannot wait for a chunk
        # boundary, and a caller that handles signals stops at once (nothing is committed yet).
        self.opening_input = False

    # -- set-up -------------------------------------------------------------------------------
    def _start_manifest(self) -> Manifest:
        spec, files, info = self.spec, self.files, self.classifier.info()
        fresh = Manifest(
            input_fingerprint=input_fingerprint(spec.input, ledger_verified=spec.input_format is not Format.PARQUET),
            model_fingerprint=model_fingerprint(self.classifier.checkpoint.directory, info, chunk_rows=spec.chunk_rows),
            model_settings=model_settings(info, chunk_rows=spec.chunk_rows),
            run_settings=run_settings(info, threads=threads_in_use(info), chunk_rows=spec.chunk_rows),
            options=spec.options(),
            checksums={},
        )
        if files is None:
            if spec.resume:
                raise BadInputError("--resume needs an output file (-o): standard output cannot be resumed")
            return fresh
        if spec.resume and _read_once(fresh):
            raise BadInputError("--resume needs an input file: standard input or a pipe cannot be read again")
        if spec.overwrite:
            # The output it replaces stays until the new one is complete and renamed over it (a job
            # that fails, or is killed, leaves it). The new job's manifest replaces any other at once:
            # with nothing committed, it makes what another job left beside the output no one's work.
            fresh.replaces = file_identity(files.final)
            fresh.save(files.manifest)
            files.remove_work(keep_manifest=True)
            return fresh
        if files.manifest.exists():
            saved = Manifest.load(files.manifest)
            if not spec.resume:
                raise BadInputError(f"{files.manifest} shows an unfinished job: {_how_to_go_on(saved)}")
            return self._check_resumable(saved, fresh)
        if files.final.exists():
            finished = " and no unfinished job" if spec.resume else ""
            raise BadInputError(f"{files.final} exists{finished}; pass --overwrite (overwrite=True in Python) to replace it")
        if spec.resume:
            self.notify(f"nothing was committed yet for {files.final}: starting the job from the beginning")
        files.remove_work()  # whatever a job killed before its first commit left is not committed work
        return fresh

    def _finished_before(self) -> bool:
        """--resume of a job that had finished: its output exists and no manifest says it is unfinished
        (a kill can land after the output is complete, while the work files are being removed; those
        left are removed here). Running the same command again is then a no-op, not an error."""
        files = self.files
        if files is None or not self.spec.resume or files.manifest.exists() or not files.final.is_file():
            return False
        files.remove_work()
        return True

    def _what_changed_in_the_model(self, saved: Manifest, fresh: Manifest) -> str:
        assert fresh.model_settings is not None
        settings = changed_settings(saved.model_settings, fresh.model_settings)
        if settings is not None:
            return f"the model's settings changed ({settings}; each from its flag or STRUCTSENT_* variable)"
        if saved.model_settings is not None:
            return "the model's files changed (another --model, or its weights, config or tokenizer files changed)"
        return ("the model or its settings (--model/--precision/--backend/--max-length/--long-text/--pad-multiple/"
                "--attention) changed, or the job was begun by another structsent version")

    def _check_resumable(self, saved: Manifest, fresh: Manifest) -> Manifest:
        source = _read_once(saved)
        if source is not None:
            raise BadInputError(f"cannot resume: the job began on {source}, which cannot be read again; "
                                "start over with --overwrite")
        if not same_input(saved.input_fingerprint, fresh.input_fingerprint):
            began_on = saved.input_fingerprint.get("path")
            if began_on not in (None, fresh.input_fingerprint.get("path")):
                raise BadInputError(f"cannot resume: the job began on {began_on}, and {self.spec.input} is not that "
                                    "file as it was (another file, or it changed); resume with the input it began on, "
                                    "or start over with --overwrite")
            raise BadInputError(f"cannot resume: {self.spec.input} changed since the job began; start over with --overwrite")
        if saved.model_fingerprint != fresh.model_fingerprint:
            raise BadInputError(f"cannot resume: {self._what_changed_in_the_model(saved, fresh)} since the job "
                                "began (the rows committed were labelled otherwise); resume as it began, or start "
                                "over with --overwrite")
        if saved.options != fresh.options:
            changed = changed_settings(saved.options, fresh.options)
            raise BadInputError(f"cannot resume: options changed since the job began ({changed or saved.options}); "
                                "give the first run's options, or start over with --overwrite")
        self._check_committed_bytes(saved)
        if self.spec.input_format is not Format.PARQUET:
            InputLedger(self._output().ledger).verify(self.spec.input, saved.ledger_bytes)
        self._say_what_changes_the_last_digits(saved, fresh)
        return saved

    def _say_what_changes_the_last_digits(self, saved: Manifest, fresh: Manifest) -> None:
        """Threads and batch sizes change no label, but on PyTorch or a GPU they change how sums are
        split, and so may change the last printed digit of a probability: a resume that changes them
        is accepted (another host's cores) and said, as the file then is not byte for byte what an
        uninterrupted run writes. A job once resumed so stays marked (``mixed``): a later resume with the
        first settings is said too, as the rows between were labelled otherwise."""
        if not fresh.run_settings or saved.run_settings is None:
            return
        before = {k: v for k, v in saved.run_settings.items() if k != MIXED}
        changed = changed_settings(before, fresh.run_settings)
        if changed is not None:
            self.notify(f"resumed with other settings than the last run's ({changed}): the probabilities "
                        "of the rows labelled from here may differ from an uninterrupted run's in their last "
                        "digit (PyTorch and GPUs split their sums by threads and batches)")
        elif saved.run_settings.get(MIXED):
            self.notify("an earlier run of this job labelled some rows with other threads or batch sizes: their "
                        "probabilities may differ from an uninterrupted run's in their last digit")
        if changed is not None or saved.run_settings.get(MIXED):
            saved.run_settings = {**fresh.run_settings, MIXED: True}  # saved with the next commit

    def _output(self) -> OutputFiles:
        if self.files is None:
            named = "Parquet" if self.spec.output_format is Format.PARQUET else self.spec.output_format.value
            raise BadInputError(f"{named} output needs an output file (-o); on standard output, pass "
                                "--output-format jsonl or csv")
        return self.files

    # -- the run ------------------------------------------------------------------------------
    def run(self) -> JobSummary:
        check_job_paths(self.spec)
        if self.files is None:
            return self._run()
        with OutputLock(self.files.lock, str(self.files.final)):
            return self._run()

    def _run(self) -> JobSummary:
        if self._finished_before():
            return JobSummary(already_complete=True)
        manifest = self._start_manifest()
        summary = JobSummary.from_counters(manifest.counts) if manifest.counts else JobSummary()
        summary.resumed_from = manifest.rows_done
        if self.files is not None:  # every check that can refuse the resume before the output is touched
            self.cache.load(self.files.cache, manifest.cache_bytes)
            truncate_to(self.files.ledger, manifest.ledger_bytes)
            self._cut_back_to(manifest)
            self._check_output_path_is_free(manifest)
        self.opening_input = True  # a FIFO's open waits for a writer; a pipe's CSV header for its first line
        try:
            reader = open_reader(self.spec.input, self.spec.input_format, text_column=self.spec.text_column,
                                 on_bad_row=self.spec.on_bad_row, position=manifest.position, line=manifest.line,
                                 rows_done=manifest.rows_done)
        finally:
            self.opening_input = False
        summary.text_column = reader.text_column
        self._say_the_only_column(reader, manifest)
        self._reader_in_use = False
        started = time.perf_counter()
        try:
            self._check_id_column(reader)
            with quick_gil_handoff(self.classifier.runner.device):
                self._label_chunks(reader, manifest, summary, started)
        except InputChangedError as err:
            if self.files is None:  # written to standard output: what went out stays out
                raise
            raise InputChangedError(f"{err}; nothing read since the last commit ({manifest.rows_done:,} rows) is "
                                    "written: label it again (--overwrite) once it no longer changes") from err
        except BadInputError as err:  # a bad row, a type that changed: this input stops this job here
            if self.files is None:
                raise
            if not manifest.rows_done:  # nothing committed: no job to resume (an --overwrite job's manifest
                self.files.remove_work()  # had made the next plain run ask for one), no parts directory left
                raise
            raise BadInputError(f"{err}; {manifest.rows_done:,} rows were committed before it, and a resume would stop "
                                "at the same place: start the job over with --overwrite") from err
        finally:
            if not self._reader_in_use:  # (a pipe's stream is left to the thread that waits on it)
                reader.close()
            summary.seconds_this_run = time.perf_counter() - started
        if not summary.interrupted:
            self._writing(self._finish, manifest)
            self._say_what_was_appended(reader)
        return summary

    def _say_what_was_appended(self, reader: RowReader) -> None:
        """The job labels its input file as it was when opened; what was appended while it ran is not."""
        if reader.appended_after_open:
            self.notify(f"{self.spec.input} grew by {reader.appended_after_open:,} bytes while the job ran: the rows "
                        "appended after it began are not labelled (label them in a job of their own)")

    def _label_chunks(self, reader: RowReader, manifest: Manifest, summary: JobSummary, started: float) -> None:
        """Three overlapped stages: read + tokenize (thread) -> model (here) -> write + commit (thread)."""
        encoder = None
        writer: BackgroundWorker[tuple] = BackgroundWorker(
            lambda item: self._writing(self._commit, *item, reader, manifest, started), depth=2)
        # A stop does not wait for a chunk whose reader waits on a pipe for its next line (for ever, if the
        # pipe stays open; the rows read of it are not written: a pipe's job cannot be resumed anyway), nor
        # for one a tokenizer process has not answered (stopped or hung, it never will; resumed, it is read again).
        prefetch = Prefetch(self._prepared_chunks(reader), depth=2, name="structsent-read",
                            give_up=lambda: self.stop.is_set() and (reader.waiting_for_input or self._tokenizing()))
        try:
            for chunk in prefetch:
                if encoder is None:
                    encoder = self._encoder(reader, chunk.rows, manifest)
                results = self._label_chunk(chunk, summary)
                summary.rows_this_run += len(chunk.rows)
                writer.submit((encoder, chunk, results, summary.snapshot(), self.cache.take_unsaved()))
                if self.stop.is_set():  # (a stop asked during the last chunk: the job is complete)
                    summary.interrupted = not prefetch.at_end()
                    break
        except KeyboardInterrupt:  # stopped at once: a tokenizer process that answers nothing must not hold it
            self._end_tokenizer_processes()
            raise
        finally:
            self._stop_the_stages(prefetch, writer, reader)
        if prefetch.gave_up:
            summary.interrupted = True
        elif encoder is None and manifest.rows_done == 0:
            self._writing(self._write_empty, reader, manifest)

    def _prepared_chunks(self, reader: RowReader) -> Iterator[PreparedChunk]:
        """Read and tokenize chunk after chunk (runs ahead of the model, in its own thread);
        with ``tokenizer_processes``, tokenization runs in worker processes, in order."""
        processes = self.spec.tokenizer_processes
        if not processes:
            for chunk in self._read_chunks(reader):
                indices = chunk.uncached(self.cache)
                chunk.fill_encoded(indices, self.classifier.encode([chunk.unique_texts[i] for i in indices]))
                yield chunk
            return
        pool = TokenizerProcesses(self.classifier.tokenizer, self.classifier.encoding_options(), processes=processes)
        self._tokenizer_pool = pool  # until the pool is closed: a stop may have to end its processes meanwhile
        try:
            with pool:
                yield from self._encoded_in(pool, reader, processes)
        finally:
            self._tokenizer_pool = None

    def _encoded_in(self, pool: TokenizerProcesses, reader: RowReader, processes: int) -> Iterator[PreparedChunk]:
        """Chunks tokenized in ``pool``, in order, with every worker busy and one chunk waiting; from a
        stream, one chunk at a time, as in-process: a read of a pipe may wait for ever, and a stop
        then drops the chunks tokenized behind it (rows read from the pipe that cannot be read again)."""
        ahead = 0 if reader.reads_a_stream else processes
        in_flight: collections.deque = collections.deque()
        chunks = self._read_chunks(reader)
        while True:
            try:
                read = next(chunks, None)
            except Exception:  # a read error: the chunks read before it are labelled first, as in-process
                while in_flight:
                    yield _with_encoding(pool, *in_flight.popleft())
                raise
            if read is None:
                break
            indices = read.uncached(self.cache)
            in_flight.append((read, indices, pool.submit([read.unique_texts[i] for i in indices])))
            if len(in_flight) > ahead:  # every worker busy, and one chunk waiting
                yield _with_encoding(pool, *in_flight.popleft())
        while in_flight:
            yield _with_encoding(pool, *in_flight.popleft())

    def _stop_the_stages(self, prefetch: Prefetch, writer: BackgroundWorker, reader: RowReader) -> None:
        """Stop reading (the chunks read ahead are not written) and finish writing. A reading thread
        still inside its source after the wait may be waiting on a tokenizer process that answers
        nothing (stopped, hung): those processes are ended, or the job would join them for ever as it
        exits. So they are when a second signal comes meanwhile. The thread then ends here, not as
        the interpreter shuts down (where dropping the last reference to the model's tensors aborted
        the process: "terminate called without an active exception")."""
        try:
            self._reader_in_use = not prefetch.close()
            if self._reader_in_use:
                self._end_tokenizer_processes()
                if not reader.waiting_for_input:  # (a pipe's next line may never come)
                    self._reader_in_use = not prefetch.join(READER_END_S)
            writer.close()
        except KeyboardInterrupt:
            self._end_tokenizer_processes()
            raise

    def _tokenizing(self) -> bool:
        """Whether the reading thread waits for a tokenizer process's answer."""
        pool = self._tokenizer_pool
        return pool is not None and pool.waiting

    def _end_tokenizer_processes(self) -> None:
        """End the tokenizer processes now, not after their chunks: one stopped (SIGSTOP) or hung
        would otherwise keep the job, which joins its workers as it exits, for ever."""
        pool = self._tokenizer_pool
        if pool is not None:
            pool.end_now()

    def _read_chunks(self, reader: RowReader) -> Iterator[PreparedChunk]:
        """Chunks as read: rows, position and digest after them, unique texts and cache keys."""
        rows_iter = iter(reader)
        resynchronised = 0
        while chunk := list(itertools.islice(rows_iter, self.spec.chunk_rows)):
            rows = [self._project(row) for row in chunk]
            texts = [row.text if row.error is None else None for row in rows]
            unique_index, unique_texts = deduplicate(texts)
            yield PreparedChunk(
                rows=rows,
                position=(reader.position, reader.line, reader.rows_read),
                digest=reader.take_digest(),
                resynchronised=reader.resynchronised - resynchronised,
                unique_index=unique_index,
                unique_texts=unique_texts,
                cache_keys=[ResultCache.key(text) for text in unique_texts],
            )
            resynchronised = reader.resynchronised

    def _label_chunk(self, chunk: PreparedChunk, summary: JobSummary) -> list[LabelResult]:
        """Results of one chunk: reader errors, cached results, and the model for the rest."""
        assert chunk.encoded is not None  # _prepared_chunks tokenized it
        encoded = chunk.encoded
        cached = [self.cache.get(key) for key in chunk.cache_keys]
        pending = [i for i, r in enumerate(cached) if r is None]
        began = time.perf_counter()
        fresh, stats = self.classifier.label_encoded([encoded[i] for i in pending])
        summary.model_seconds += time.perf_counter() - began
        computed = dict(zip(pending, fresh))
        for i, result in computed.items():
            self.cache.put(chunk.cache_keys[i], result)
        unique_results = [r if r is not None else computed[i] for i, r in enumerate(cached)]
        results = [
            LabelResult.failed(row.error) if row.error is not None else _with_line(row, unique_results[u])
            for row, u in zip(chunk.rows, chunk.unique_index)
        ]
        summary.duplicates += _reused(chunk, results, pending, fresh)
        summary.real_tokens += stats.real_tokens
        summary.padded_tokens += stats.padded_tokens
        summary.rows += len(chunk.rows)
        summary.resynchronised += chunk.resynchronised
        for result in results:
            if result.error is not None:
                summary.flagged += 1
            else:
                summary.labels[result.label] += 1
                summary.truncated += result.truncated
        return results

    def _encoder(self, reader: RowReader, chunk: list[InputRow], manifest: Manifest) -> ChunkEncoder:
        if manifest.header is None:
            manifest.header = self._output_input_columns(reader, chunk)
        encoder = ChunkEncoder(self.spec.output_format, manifest.header, self.labels, self.spec.prefix)
        if self.spec.output_format is Format.PARQUET and manifest.parts and self.files is not None:
            # A resumed job keeps the column types of the parts already committed (JSON Lines input
            # infers them from the first chunk holding values, which this run may not read).
            self._check_parts(manifest.parts, readable=True)
            encoder.resume_parquet_parts([self.files.part(i) for i in range(manifest.parts)])
        return encoder

    def _output_input_columns(self, reader: RowReader, chunk: list[InputRow]) -> list[str]:
        # The fields of the first row read without error, in this chunk or further on: a flagged row
        # (its text field misspelt) does not choose them, whatever --chunk-rows.
        in_chunk: list[str] | None = next((list(r.values) for r in chunk if r.values and r.error is None), None)
        columns = list(reader.columns) or in_chunk or self._fields_further_on(reader, chunk)
        if self.spec.id_column is None:
            return columns
        self._check_id_column_in(columns)
        return [self.spec.id_column]

    def _say_the_only_column(self, reader: RowReader, manifest: Manifest) -> None:
        """A CSV or TSV file of one column not named as --text-column is labelled whole, its line 1 read
        as the column's name: said, since a file of bare reviews has no such line (its first review
        went unlabelled without a word)."""
        if self.spec.input_format in (Format.CSV, Format.TSV) and reader.text_column != self.spec.text_column \
                and not manifest.rows_done:
            self.notify(only_column_notice(reader.text_column))

    def _check_id_column(self, reader: RowReader) -> None:
        """An --id-column a header lacks is refused at once (each row was refused in turn, the
        first with advice to pass --on-bad-row flag, which then refused the header)."""
        if self.spec.id_column is not None and reader.columns:
            self._check_id_column_in(reader.columns)
        self._check_line_number_column_name()

    def _check_line_number_column_name(self) -> None:
        """Plain text's --id-column names the column of line numbers the job adds: one of the added
        columns' names there was refused as a column "the input already has", which it has not."""
        id_column = self.spec.id_column
        if self.spec.input_format is Format.TXT and id_column in added_columns(self.labels, self.spec.prefix):
            raise BadInputError(f"--id-column {id_column!r} names the line numbers of plain text with the name of "
                                "a column the job adds; choose another name (e.g. --id-column line)")

    def _check_id_column_in(self, columns: list[str]) -> None:
        """The --id-column is one of ``columns`` (plain text has none: its id is the line number)."""
        id_column = self.spec.id_column
        if id_column not in columns and self.spec.input_format is not Format.TXT:
            raise BadInputError(f"no id column {id_column!r}; columns are: {', '.join(map(repr, columns))}")

    def _project(self, row: InputRow) -> InputRow:
        """Keep only the id column when --id-column asks for it (plain text: the line number)."""
        id_column = self.spec.id_column
        if id_column is None:
            return row
        values: dict
        if self.spec.input_format is Format.TXT:
            values = {id_column: row.number}
        elif row.values is None:  # a line that could not be read (bad JSON): flagged, its id unknown
            values = {id_column: None}
        elif id_column in row.values:
            values = {id_column: row.values[id_column]}
        else:
            missing = f"row {row.number} has no id column {id_column!r}; its fields are: {', '.join(map(repr, row.values))}"
            if self.spec.on_bad_row != "flag":
                raise BadInputError(f"{missing}; fix the file or pass --on-bad-row flag")
            return dataclasses.replace(row, values={id_column: None}, text=None, error=row.error or missing)
        return dataclasses.replace(row, values=values)

    # -- output -------------------------------------------------------------------------------
    def _writing(self, write: Callable, *args) -> None:
        """Run one step that writes the output; an OS error (disk full...) becomes OutputWriteError."""
        try:
            write(*args)
        except OSError as err:
            if isinstance(err, BrokenPipeError) and self.files is None:
                raise  # standard output's reader went away (`| head`): the command line ends quietly
            resumable = self.files is not None and not read_only_once(self.spec.input)
            target = self.spec.output if self.files else "standard output"
            kept = "; every committed chunk is kept" if resumable else ""
            raise OutputWriteError(f"cannot write {target}: {err.strerror or err} (errno {err.errno}){kept}") from err

    def _commit(self, encoder, chunk: PreparedChunk, results, counters: dict, cache_entries,
                reader: RowReader, manifest: Manifest, started: float) -> None:
        """Write one chunk and record it (runs in the writer thread, chunk after chunk)."""
        first = manifest.rows_done == 0
        rows = chunk.rows
        if self.spec.output_format is Format.PARQUET:
            if self.files is None:
                raise BadInputError("Parquet output needs an output file (-o); on standard output, pass "
                                    "--output-format jsonl or csv")
            self._check_parts(manifest.parts)
            self._write_part(encoder.table(rows, results, _arrow_schema(reader)), manifest)
        else:
            data = (encoder.header() if first else b"") + encoder.encode(rows, results)
            if self.files is None:
                sys.stdout.buffer.write(data)
                sys.stdout.buffer.flush()
            else:
                manifest.output_bytes = self._append(manifest, "output", self.files.partial, data, manifest.output_bytes)
        manifest.position, manifest.line, manifest.rows_done = chunk.position
        manifest.counts = counters
        if self.files is not None:
            data = self.cache.encode(cache_entries)
            manifest.cache_bytes = self._append(manifest, "cache", self.files.cache, data, manifest.cache_bytes)
            if chunk.digest is not None:
                entry = InputLedger(self.files.ledger).entry(manifest.rows_done, manifest.position, manifest.line, chunk.digest)
                manifest.ledger_bytes = self._append(manifest, "ledger", self.files.ledger, entry, manifest.ledger_bytes)
            manifest.save(self.files.manifest)
        if self.progress is not None:
            self.progress.update(counters, manifest.position, reader.total, started)

    @staticmethod
    def _append(manifest: Manifest, role: str, path: Path, data: bytes, committed: int) -> int:
        """Append a commit's bytes to one work file, durably, and add them to its checksum."""
        length = append_durably(path, data, committed)
        extend_checksum(manifest.checksums, role, data)
        return length

    def _write_part(self, table, manifest: Manifest) -> None:
        """Write the next Parquet part and add its bytes (read back: Arrow wrote them) to the checksum."""
        part = self._output().part(manifest.parts)
        write_parquet_part(table, part)
        if manifest.checksums is not None:
            extend_checksum(manifest.checksums, "parts", part.read_bytes())
        manifest.parts += 1

    def _check_committed_bytes(self, saved: Manifest) -> None:
        """Refuse a resume whose work files no longer hold what was committed, even at the same
        length (one file missing or short is left to the checks that name it)."""
        files = self._output()
        check_unchanged(saved.checksums, "ledger", [files.ledger], saved.ledger_bytes)
        check_unchanged(saved.checksums, "cache", [files.cache], saved.cache_bytes)
        if self.spec.output_format is Format.PARQUET:
            check_unchanged(saved.checksums, "parts", [files.part(i) for i in range(saved.parts)])
        else:  # a crash after the final rename left the committed bytes under the final name
            output = files.partial if files.partial.exists() else files.final
            check_unchanged(saved.checksums, "output", [output], saved.output_bytes)

    def _check_parts(self, committed: int, *, readable: bool = False) -> None:
        """The parts directory holds the ``committed`` parts (another program may have removed it).
        At a commit the last part stands for the directory (one look per commit, not one per part
        so far); with ``readable`` every part is looked at, and must be a Parquet file whose footer
        reads (before they are read: at a resume and at the merge)."""
        files = self._output()
        if committed == 0:
            files.parts.mkdir(parents=True, exist_ok=True)
            return
        if not readable and files.part(committed - 1).is_file():
            return
        missing = [i for i in range(committed) if not files.part(i).is_file()]
        if missing:
            raise JobFilesChangedError(
                f"{files.parts}: {len(missing)} of the {committed} committed part files are gone (e.g. "
                f"{files.part(missing[0]).name}): another program removed them while the job ran; start over with "
                "--overwrite")
        if readable:
            import pyarrow.parquet as pq

            for i in range(committed):
                try:
                    pq.read_metadata(files.part(i))
                except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
                    raise JobFilesChangedError(f"{files.part(i)}: a committed part that no longer reads ({err}); "
                                               "another program changed it; start over with --overwrite") from err

    def _cut_back_to(self, manifest: Manifest) -> None:
        """Discard output written after the last commit (a crash between append and manifest)."""
        files = self._output()
        if self.spec.output_format is Format.PARQUET:
            if files.parts.exists():
                for part in files.parts.glob("part-*"):
                    index = part.name.removeprefix("part-").split(".")[0]
                    if not index.isdigit() or int(index) >= manifest.parts or part.suffix == ".tmp":
                        part.unlink()
            return
        if files.partial.exists():
            size = files.partial.stat().st_size
            if size < manifest.output_bytes:  # a truncate would pad it with zero bytes
                raise BadInputError(f"cannot resume: {files.partial} holds {size:,} bytes of the "
                                    f"{manifest.output_bytes:,} committed; start over with --overwrite")
            with open(files.partial, "r+b") as handle:
                handle.truncate(manifest.output_bytes)
        elif manifest.output_bytes and files.final.exists() and files.final.stat().st_size == manifest.output_bytes:
            files.final.replace(files.partial)  # a crash after the final rename: finish cleanly
        elif manifest.output_bytes:
            raise BadInputError(f"cannot resume: {files.partial} is missing; start over with --overwrite")

    def _fields_further_on(self, reader: RowReader, chunk: list[InputRow]) -> list[str]:
        """JSON Lines whose first chunk holds no row read without error: the fields of the first
        such row further on (else of the first row with fields), so that the output does not
        depend on --chunk-rows. Standard input or a pipe cannot be read twice: its first chunk decides."""
        if read_only_once(self.spec.input):
            return next((list(r.values) for r in chunk if r.values), None) or [reader.text_column]
        return first_json_fields(self.spec.input, reader.text_column) or [reader.text_column]

    def _write_empty(self, reader: RowReader, manifest: Manifest) -> None:
        """An input without rows still gets a valid output (a CSV header, an empty Parquet file), with
        the columns a run with rows would write (the id column alone with --id-column)."""
        columns = list(reader.columns) or [reader.text_column]
        if self.spec.id_column is not None:  # checked against a CSV header; JSON Lines without rows has none
            columns = self._output_input_columns(reader, []) if reader.columns else [self.spec.id_column]
        encoder = ChunkEncoder(self.spec.output_format, columns, self.labels, self.spec.prefix)
        if self.spec.output_format is Format.PARQUET:
            files = self._output()
            files.parts.mkdir(parents=True, exist_ok=True)
            self._write_part(encoder.table([], [], _arrow_schema(reader)), manifest)
        elif self.files is None:
            sys.stdout.buffer.write(encoder.header())
        else:
            manifest.output_bytes = self._append(manifest, "output", self.files.partial, encoder.header(), 0)

    def _finish(self, manifest: Manifest) -> None:
        files = self.files
        if files is None:
            return
        self._check_output_path_is_free(manifest)
        if self.spec.output_format is Format.PARQUET:
            self._check_parts(manifest.parts, readable=True)

            def check_then_record(merged: Path) -> None:  # just before the rename (a merge takes seconds)
                self._check_output_path_is_free(manifest)  # (the file there may be an earlier run's merge)
                manifest.written = file_identity(merged)  # a kill after the rename: the file there is ours
                manifest.save(files.manifest)

            merge_parquet_parts([files.part(i) for i in range(manifest.parts)], files.final, check_then_record)
        else:
            if not files.partial.exists():
                files.partial.touch()
            self._check_output_path_is_free(manifest)
            files.partial.replace(files.final)
        files.remove_work()

    def _check_output_path_is_free(self, manifest: Manifest) -> None:
        """The output's path holds nothing, or the file --overwrite was to replace: a file another
        program (or command) wrote there while the job ran is not renamed over."""
        files = self._output()
        found = file_identity(files.final)
        if found is None or found in (manifest.replaces, manifest.written):
            return
        if not read_only_once(self.spec.input):
            then = "the labelled rows are kept: move that file away and run the same command with --resume"
        elif self.spec.output_format is not Format.PARQUET:
            left = [p.name for p in (files.manifest, files.cache, files.ledger) if p.exists()]
            then = (f"the labelled rows are in {files.partial}: move that file away, rename {files.partial.name} to "
                    f"{files.final.name}, then remove {_listed(left)} (a job reading once cannot be resumed)")
        else:
            then = "its input cannot be read again: move that file away and label it again"
        raise JobLockedError(f"{files.final} was written by another program since the job began, so the job does not "
                             f"replace it; {then}")


def threads_in_use(info: dict) -> int | None:
    """The threads a classifier's model runs on: the set number, else PyTorch's own (OMP_NUM_THREADS
    or the cores); None for ONNX Runtime's own."""
    if info.get("num_threads") or info.get("backend") != "torch":
        return info.get("num_threads")
    import torch

    return torch.get_num_threads()


def _listed(names: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return " and ".join(filter(None, [", ".join(names[:-1]), names[-1]]))


def _reused(chunk: PreparedChunk, results: list[LabelResult], pending: list[int], fresh: list[LabelResult]) -> int:
    """Rows labelled without computing them: repeats inside the chunk and cache hits."""
    labelled = sum(1 for row, r in zip(chunk.rows, results) if row.error is None and r.ok)
    computed = sum(1 for r in fresh if r.ok)
    return labelled - computed


def output_files(spec: LabelJobSpec) -> OutputFiles | None:
    """The job's files, or None when it writes to standard output."""
    return None if spec.output is None or spec.output == "-" else OutputFiles(spec.output)


def job_paths(spec: LabelJobSpec) -> dict[str, str]:
    """Every path the job reads or writes, with what it is (for commands that write beside it)."""
    paths = {spec.input: "the job's input"}
    if spec.output not in (None, "-"):
        paths[spec.output] = "the job's output"
        files = OutputFiles(spec.output)
        paths.update({str(path): "a work file of the job" for path in [*files.work(), *files.touched()]})
    return paths


def _read_once(manifest: Manifest) -> str | None:
    """What a job's input was when it could be read only once ("standard input", "a pipe"), else None."""
    fingerprint = manifest.input_fingerprint or {}
    if fingerprint.get("path") == "-":
        return "standard input"
    return "a pipe" if fingerprint.get("stream") else None


def _how_to_go_on(manifest: Manifest) -> str:
    """What a run that finds another's unfinished work files may do."""
    source = _read_once(manifest)
    if source is not None:
        return f"it read {source}, so it cannot be resumed: pass --overwrite to start over"
    return "pass --resume to finish it, or --overwrite to start over"


def check_job_paths(spec: LabelJobSpec) -> None:
    """Refuse, before touching anything, an input that cannot be read or an output onto it."""
    check_input_path(spec.input)
    if spec.input != "-":
        refuse_reading_another_jobs_files(spec.input, command="label")
    files = output_files(spec)
    if files is None:
        if sys.stdout is None and spec.output_format is not Format.PARQUET:  # started with `>&-`
            raise BadInputError("-: standard output is closed; name an output file with -o")
        return
    check_output_directory(str(files.final))
    assert spec.output is not None  # (output_files gives None for standard output)
    check_output_is_a_file(Path(spec.output))  # as named: /dev/stdout on a pipe resolves to no path ("pipe:[N]")
    check_output_is_a_file(files.final)
    check_not_another_jobs_work(files)
    for path in files.work():
        check_work_path(path, directory=path == files.parts)
    if spec.input == "-":
        check_standard_input_apart(files)
        return
    for path in files.touched():
        if _same_file(spec.input, path):
            if path == files.final:  # (said as "the job's own output file": read as blaming some other file)
                raise BadInputError(f"{spec.input} is both the input and the output (-o {spec.output}): write the "
                                    "output to another path")
            raise BadInputError(f"{spec.input} is the job's own output file {path}: write the output to another path")
    if files.parts.is_dir() and Path(os.path.realpath(spec.input)).is_relative_to(os.path.realpath(files.parts)):
        raise BadInputError(f"{spec.input} is inside the job's own work directory {files.parts}: write the output "
                            "to another path")


def standard_input_file() -> str | None:
    """A name of the file standard input is redirected from ("/dev/stdin": it names fd 0's file),
    or None where standard input is no regular file (a pipe, a terminal, closed)."""
    try:
        return STANDARD_INPUT if stat.S_ISREG(os.fstat(0).st_mode) else None
    except OSError:
        return None


STANDARD_INPUT = "/dev/stdin"


def check_standard_input_apart(files: OutputFiles) -> None:
    """Standard input redirected from one of the job's own files (`label - -o out.csv < out.csv.lock`,
    `< out.csv.partial`, `< out.csv --overwrite`) is refused as that file named as the input is: the
    lock's truncation emptied it, the start's clean-up deleted it, the output replaced it. Compared
    by identity, so a link to a part of OUT.parts is refused too."""
    given = standard_input_file()
    if given is None:
        return
    for path in files.touched():
        if _same_file(given, path):
            raise BadInputError(f"-: standard input is the job's own output file {path}: write the output to "
                                "another path")
    for path in _files_in(files.parts):
        if _same_file(given, path):
            raise BadInputError(f"-: standard input is {path}, inside the job's own work directory {files.parts}: "
                                "write the output to another path")


def _files_in(directory: Path) -> list[Path]:
    try:
        return [entry for entry in directory.iterdir() if entry.is_file()] if directory.is_dir() else []
    except OSError:
        return []


def check_not_another_jobs_work(files: OutputFiles) -> None:
    """Refuse an output named as a work file of another job, running or unfinished (``out.csv.lock``,
    ``out.csv.partial``): written, it replaced that job's lock (a second job on ``out.csv`` then ran
    beside the first) or its committed rows. And the other way round: an output whose work files
    (``out.csv.partial``) another job is writing as its output (the two would replace each other's)."""
    path = str(files.final)
    refuse_another_jobs_work_file(path, "output")
    for work_file in [*files.work(), *files.touched()]:
        if work_file != files.final:
            why = another_jobs(OutputFiles(str(work_file)))
            if why is not None:
                raise BadInputError(f"{path}: its work file {work_file} is the output of {why}; write the output "
                                    "to another path")


def check_input_path(path: str) -> None:
    """The input exists and is not a directory (standard input, '-', always is)."""
    if path == "-":
        return
    mode = mode_of(Path(path))  # a loop of links, or a name through a file: said so
    if mode is None:
        raise BadInputError(f"{path}: no such file")
    if stat.S_ISDIR(mode):
        raise BadInputError(f"{path}: is a directory, not a file (label its files one by one, or use --engine ray)")
    if not os.access(path, os.R_OK):
        raise BadInputError(f"{path}: not readable (permission denied)")


def check_output_directory(output: str) -> None:
    directory = os.path.dirname(os.path.abspath(output))
    mode = mode_of(Path(directory))  # a loop of links, or a name through a file: said so
    if mode is None:
        raise BadInputError(f"{output}: directory {directory} does not exist")
    if not stat.S_ISDIR(mode):
        raise BadInputError(f"{output}: {directory} is not a directory")
    if not os.access(directory, os.W_OK):
        raise BadInputError(f"{output}: directory {directory} is not writable")
    if os.path.isdir(output):
        raise BadInputError(f"{output}: is a directory; name an output file")


def _same_file(a: str, b: Path) -> bool:
    """True when both paths name one file (through symbolic or hard links too)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _arrow_schema(reader: RowReader):
    file = getattr(reader, "file", None)
    return file.schema_arrow if file is not None else None


def _with_line(row: InputRow, result: LabelResult) -> LabelResult:
    """A JSON Lines value that is no text (null, a number) flagged with its line, as the reader's
    own flags are ("line 3: not a string (got int)")."""
    if result.error is None or row.line is None or isinstance(row.text, str):
        return result
    return LabelResult.failed(f"line {row.line}: {result.error}")
