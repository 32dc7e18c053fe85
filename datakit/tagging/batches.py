"""Batched tagging: images decoded and preprocessed in threads while the ONNX model runs, one fixed batch shape."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Iterator

import numpy as np

from datakit.errors import ImageError
from datakit.models import taggers
from datakit.pool import Task, TaskResult


def prepare(task: Task, size: int) -> tuple[np.ndarray | None, list[str], TaskResult | None]:
    """Decode + preprocess one image in a pool thread: (array, loader notes, None) or a skipped/failed result."""
    try:
        arr, notes = taggers.load_for_tagger(task.payload.path, size)
        return arr, notes, None
    except ImageError as exc:
        return None, [], TaskResult(key=task.key, status="skipped", reason=str(exc))
    except Exception as exc:  # one odd file must not stop the run
        return None, [], TaskResult(key=task.key, status="failed", reason=f"{type(exc).__name__}: {exc}")


def infer(
    tasks: list[Task], session: taggers.TaggerSession, batch_size: int, workers: int
) -> Iterator[tuple[Task, np.ndarray | None, list[str], TaskResult | None]]:
    """Yield (task, probabilities, loader notes, failure): decoding runs ahead in threads while the model runs.

    Every batch runs at one shape, `batch_size` (the last one padded by TaggerSession.run), whatever
    the number of tasks: an image tagged alone gets the same probabilities as in a full batch.
    """
    batch_size = max(1, batch_size)
    session.batch = batch_size
    lookahead = batch_size * 2 + workers  # enough decoded images to fill the next batch while this one runs
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="datakit-tag")
    try:
        queue: list[tuple[Task, Future]] = []
        it = iter(tasks)

        def refill() -> None:
            for task in it:
                queue.append((task, pool.submit(prepare, task, session.size)))
                if len(queue) >= lookahead:
                    break

        refill()
        # One float32 batch buffer for the run: each uint8 image is converted as it is copied in.
        buffer = np.empty((batch_size, session.size, session.size, 3), dtype=np.float32)
        while queue:
            batch_tasks: list[tuple[Task, list[str]]] = []
            while queue and len(batch_tasks) < batch_size:
                task, fut = queue.pop(0)
                arr, notes, failure = fut.result()
                refill()
                if failure is not None:
                    yield task, None, [], failure
                    continue
                buffer[len(batch_tasks)] = arr
                batch_tasks.append((task, notes))
            if batch_tasks:
                n = len(batch_tasks)
                buffer[n:] = 255.0  # the last batch: white images fill the fixed shape
                probs = session.run(buffer)[:n]
                for (task, notes), p in zip(batch_tasks, probs):
                    yield task, p, notes, None
    finally:
        # Interrupted (Ctrl-C) or done: drop the decoding not started yet instead of finishing it.
        pool.shutdown(wait=True, cancel_futures=True)
