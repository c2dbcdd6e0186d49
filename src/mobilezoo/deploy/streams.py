"""Run one ONNX Runtime session on several slices of a batch at once ("streams"), one slice per thread.

ONNX Runtime's CPU kernels parallelize inside one image, not across the batch. The fp32 convolutions split their
work over enough dimensions to keep every thread busy, but the int8 ``QLinearConv`` splits only one image's output
pixels: for the small feature maps of these nets (14x14, 7x7) and grouped or depthwise convs there is too little work
to share. Profiled at batch 32 on 2 cores (ShuffleNet V1 g3), going from 1 to 2 threads made the int8 grouped 1x1 convs
1.16x faster and the depthwise ones 1.05x, against 1.5x for the fp32 convs. Running two 1-thread slices of the batch
side by side uses both cores fully: ShuffleNet V1 int8 at batch 32 went from 105.6 ms to 73.2 ms (fp32: 103.6 ->
96.2 ms). Each slice is an ``InferenceSession.run`` call, which releases the GIL.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np


class StreamedSession:
    """An ``InferenceSession`` look-alike whose ``run`` splits the batch into ``streams`` slices run concurrently.

    Every input is split along its first (batch) axis and every output is concatenated along it, so the model's inputs
    and outputs must all lead with the batch axis (true of every mobilezoo export). A batch smaller than ``streams``
    uses one slice per image. Give ``session`` ``threads // streams`` intra-op threads: the slices share the cores.
    """

    def __init__(self, session: Any, streams: int) -> None:
        if not isinstance(streams, int) or streams < 2:
            raise ValueError(f"streams must be an integer >= 2 for a StreamedSession, got {streams!r}")
        self.session = session
        self.streams = streams
        self._pool = ThreadPoolExecutor(max_workers=streams - 1, thread_name_prefix="mobilezoo-stream")

    def get_inputs(self) -> Any:
        return self.session.get_inputs()

    def get_outputs(self) -> Any:
        return self.session.get_outputs()

    def run(self, output_names: list[str] | None, feed: dict[str, np.ndarray], run_options: Any = None) -> list:
        batches = {len(v) for v in feed.values()}
        if len(batches) != 1:
            raise ValueError(f"every input of a StreamedSession needs the same batch size, got {sorted(batches)}")
        n = min(self.streams, batches.pop())
        if n <= 1:
            return self.session.run(output_names, feed, run_options)
        slices = [
            {k: part for k, part in zip(feed, parts)} for parts in zip(*(np.array_split(v, n) for v in feed.values()))
        ]
        # the first slice runs in the calling thread, the others in the pool
        futures = [self._pool.submit(self.session.run, output_names, s, run_options) for s in slices[1:]]
        results = [self.session.run(output_names, slices[0], run_options)] + [f.result() for f in futures]
        return [np.concatenate(outs) for outs in zip(*results)]

    def close(self) -> None:
        """Stop the worker threads (they also stop when the interpreter exits)."""
        self._pool.shutdown(wait=True)
