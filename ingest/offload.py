"""Decoding in a child process, so that one ingest worker uses two cores.

An ingest worker's CPU goes about half to paho's network thread and half to decoding and
validating (bench/ingest.py; a profile of the thread holding the interpreter lock). In one process
the two take turns on one core. With `ingest.decode_process: true` the `Pipeline` (decode,
validate, line protocol, split-packet reassembly) runs in a child process. The worker's commit
thread sends it the raw messages of one batch, collects the next batch while the child decodes,
then makes the decoded batch durable and acks it, exactly as in-process
(ingest.consumer.Ingest._commit).

Only the raw messages go to the child, and only the outcome comes back: lines, dead letters (with
their raw payload), and the messages to ack, without their payload. The child holds the parts of
split packets until the packet is complete or expires, as the in-process Pipeline does. If the
child dies, a new one is started and the batch is decoded again. Split-packet parts that the dead
child was holding are not acked, so the broker delivers them again after the next reconnect.
"""

from __future__ import annotations

import logging
import multiprocessing
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace

from config.lookup import Lookup
from config.schema import Settings
from ingest.pipeline import Batch, Message, Pipeline

log = logging.getLogger("envwatch.ingest")

_pipeline: Pipeline | None = None  # the child's own, built once by _start


def _start(settings: Settings, split_timeout_s: float) -> None:
    global _pipeline
    _pipeline = Pipeline(settings, Lookup(settings.registry), split_timeout_s)


def _decode(msgs: list[Message]) -> Batch:
    """In the child: one batch through the Pipeline; an empty list still expires split groups."""
    assert _pipeline is not None, "decode process not initialised"
    batch = Batch()
    _pipeline.expire(batch)
    for m in msgs:
        _pipeline.feed(m, batch)
    batch.done = [replace(m, payload=b"") for m in batch.done]  # acked by mid: no need to send bytes back
    batch.clock = None
    return batch


@dataclass(frozen=True, slots=True)
class Job:
    """A batch sent to the child: what to decode again if the child dies before answering."""

    future: Future[Batch]
    msgs: list[Message]
    pool: ProcessPoolExecutor


class DecodeProcess:
    """One child process running a Pipeline: `result(submit(msgs))` is the decoded Batch."""

    def __init__(self, settings: Settings, split_timeout_s: float) -> None:
        self._args = (settings, split_timeout_s)
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        # spawn, not fork: the worker has threads (paho, writer) that a forked child would inherit half-done.
        return ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_start, initargs=self._args)

    def submit(self, msgs: list[Message]) -> Job:
        try:
            return Job(self._pool.submit(_decode, msgs), msgs, self._pool)
        except BrokenProcessPool:  # the child died since the last batch
            self._restart(self._pool)
            return Job(self._pool.submit(_decode, msgs), msgs, self._pool)

    def result(self, job: Job) -> Batch:
        """The decoded batch; if the child died, a new child decodes the job's messages again."""
        try:
            return job.future.result()
        except BrokenProcessPool:
            self._restart(job.pool)
            return self._pool.submit(_decode, job.msgs).result()

    def _restart(self, broken: ProcessPoolExecutor) -> None:
        if broken is not self._pool:
            return  # another job already started the new child
        log.error("the decode process died; starting a new one and decoding its batches again "
                  "(split-packet parts it held come back after the next reconnect)")
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = self._new_pool()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
