"""A kill simulated at the start of a training epoch, for the resume tests."""
from __future__ import annotations

import contextlib


@contextlib.contextmanager
def killed_as_epoch_starts(epoch: int):
    """Within the block, ``pipeline.train_dataset`` (called once per epoch) raises
    ``KeyboardInterrupt`` on its ``epoch``-th call, as a kill would stop training as that epoch
    starts; the real function is back afterwards."""
    from rfcxlib.features import pipeline

    real, calls = pipeline.train_dataset, {"n": 0}

    def crash(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == epoch:
            raise KeyboardInterrupt("simulated kill")
        return real(*args, **kwargs)

    pipeline.train_dataset = crash
    try:
        yield
    finally:
        pipeline.train_dataset = real
