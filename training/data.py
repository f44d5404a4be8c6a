"""Training batches of the shapes data: chunks of scenes with their caption tokens, made in worker processes.

Chunk i of a run is a pure function of (seed, i), so a resumed run sees exactly the data it would have seen.
"""
import concurrent.futures
import multiprocessing
from collections import deque

import numpy as np
import torch

from ..networks.clip_text import END_TOKEN
from ..networks.clip_tokenizer import default_tokenizer
from ..networks.prompt_syntax import tokenize_prompt
from .render import SceneBatch, pack_arrays
from .scenes import sample_scenes

_CAPTION_IDS = {}


def caption_ids(caption):
    """A caption's 77 token ids exactly as the text encoder reads a prompt (start, BPE, end, end-padding)."""
    if caption not in _CAPTION_IDS:
        window = tokenize_prompt(caption, default_tokenizer(), END_TOKEN, width=0).windows[0]
        _CAPTION_IDS[caption] = np.array([token.value for token in window], dtype=np.int32)
    return _CAPTION_IDS[caption]


def make_chunk(seed, index, size):
    """`size` training scenes (never a held-out combination) as numpy arrays, plus their token ids."""
    scenes = sample_scenes(seed * 1_000_003 + index, size)
    return (*pack_arrays(scenes), np.stack([caption_ids(scene.caption) for scene in scenes]))


class ChunkStream:
    """Chunks start, start + 1, ... in order, made `workers` at a time ahead (0 workers: in this process)."""

    def __init__(self, seed, start, size, workers):
        self.seed, self.next, self.size = seed, start, size
        self.pool = (concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
                     if workers else None)
        self.pending = deque()
        for _ in range(2 * workers):
            self._submit()

    def _submit(self):
        self.pending.append(self.pool.submit(make_chunk, self.seed, self.next, self.size))
        self.next += 1

    def get(self):
        """(SceneBatch, tokens) of the next chunk, as CPU tensors."""
        if self.pool is None:
            arrays = make_chunk(self.seed, self.next, self.size)
            self.next += 1
        else:
            self._submit()
            arrays = self.pending.popleft().result()
        tensors = [torch.from_numpy(a) for a in arrays]
        return SceneBatch(*tensors[:5]), tensors[5].long()

    def close(self):
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)
