"""Offline teachers: a teacher's top-k log-probabilities written once to safetensors shards, read back as
:class:`kldiv.nn.TopK` teachers aligned with the training examples.

Folder layout (``save_teacher_topk``)::

    manifest.json            format tag, k, vocabulary size, examples, and per shard its file, SHA-256,
                             example and token counts
    shard-00000.safetensors  input_ids (N,) int64, offsets (E + 1,) int64, indices (N, k) int32,
                             logprobs (N, k) float32 (N tokens of E examples; example e is rows
                             offsets[e]:offsets[e + 1])

Per token that is 8 + 8k bytes (264 bytes at k = 32). Each shard's SHA-256 is checked when it is read, on the
bytes that are then parsed. The input ids are stored so that training can check that example i of the
training set is the example the teacher saw.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import torch

from .. import _validate
from ..nn import TopK
from ._objective import TOPK_INDICES, TOPK_LOGPROBS

FORMAT, VERSION = "kldiv-teacher-topk", 1
_MANIFEST = "manifest.json"


def _safetensors():
    try:
        import safetensors.torch
    except ImportError as error:  # pragma: no cover
        raise _validate.hf_missing("safetensors") from error
    return safetensors.torch


def _ids(index: int, example: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    ids = example.get("input_ids") if isinstance(example, dict) else None
    _validate.check_example_ids(index, ids)
    mask = example.get("attention_mask")
    ids = torch.as_tensor(ids, dtype=torch.long).reshape(-1)
    return ids, None if mask is None else torch.as_tensor(mask, dtype=torch.long).reshape(-1)


@torch.no_grad()
def save_teacher_topk(model: Any, dataset: Iterable[Any], out: str | os.PathLike, k: int = 32, *,
                      batch_size: int = 8, examples_per_shard: int = 4096, vocab_size: int | None = None,
                      device: Any = None) -> TeacherTopK:
    """Write a teacher's top-k next-token log-probabilities for every position of every example.

    For example e and position t: ``indices[t], logprobs[t] = topk(log_softmax(z_t[:V]), k)`` with z_t the
    model's logits there (soft-capped or scaled by the model itself, as in its forward) and V = ``vocab_size``
    (default: all the logits' entries; pass the tokenizer's size for padded vocabularies). The tail mass,
    ``1 - sum(exp(logprobs[t]))``, is what :class:`kldiv.nn.TopK` treats as the extra outcome.

    Args:
      model: the teacher; run in eval mode without gradient (its mode is restored afterwards).
      dataset: examples, each a dict with ``input_ids`` (and optionally ``attention_mask``), in the order the
        training dataset will have.
      out: a new or empty folder; an existing non-empty one is refused (nothing is overwritten).
      k: tokens kept per position, 1 <= k <= V.
      batch_size: examples per teacher forward (right-padded; padding does not change a causal LM's logits at
        the real positions).
      examples_per_shard: examples per safetensors file.
      vocab_size: the leading entries of the logits that are the vocabulary.
      device: where to run the teacher (default: where its parameters are).

    Returns:
      A :class:`TeacherTopK` reading the folder.
    """
    _validate.check_new_folder(out)
    batch_size = _validate.check_integer_at_least("batch_size", batch_size, 1)
    examples_per_shard = _validate.check_integer_at_least("examples_per_shard", examples_per_shard, 1)
    st = _safetensors()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    os.makedirs(out, exist_ok=True)
    was_training = model.training
    model.eval()
    shards: list[dict[str, Any]] = []
    pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    width = None

    def flush() -> None:
        if not pending:
            return
        name = f"shard-{len(shards):05d}.safetensors"
        lengths = torch.tensor([0] + [len(p[0]) for p in pending], dtype=torch.long)
        tensors = {
            "input_ids": torch.cat([p[0] for p in pending]),
            "offsets": torch.cumsum(lengths, 0),
            "indices": torch.cat([p[1] for p in pending]).to(torch.int32),
            "logprobs": torch.cat([p[2] for p in pending]).to(torch.float32),
        }
        path = os.path.join(out, name)
        st.save_file({key: value.contiguous() for key, value in tensors.items()}, path)
        with open(path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        shards.append({"file": name, "sha256": digest, "num_examples": len(pending),
                       "num_tokens": int(lengths.sum())})
        pending.clear()

    try:
        batch: list[tuple[torch.Tensor, torch.Tensor | None]] = []
        examples = iter(dataset)
        index = 0
        while True:
            example = next(examples, None)
            if example is not None:
                batch.append(_ids(index, example))
                index += 1
            if batch and (len(batch) == batch_size or example is None):
                longest = max(len(ids) for ids, _ in batch)
                ids = torch.zeros((len(batch), longest), dtype=torch.long)
                mask = torch.zeros((len(batch), longest), dtype=torch.long)
                for row, (x, m) in enumerate(batch):
                    ids[row, : len(x)] = x
                    mask[row, : len(x)] = 1 if m is None else m
                logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
                if width is None:
                    width = logits.shape[-1] if vocab_size is None else _validate.check_vocab_size(
                        logits.shape[-1], logits.shape[-1], vocab_size)
                    k = _validate.check_topk_k(k, width)
                logprobs, indices = torch.log_softmax(logits[..., :width].float(), -1).topk(k, dim=-1)
                for row, (x, _) in enumerate(batch):
                    pending.append((x, indices[row, : len(x)].cpu(), logprobs[row, : len(x)].cpu()))
                    if len(pending) == examples_per_shard:
                        flush()
                batch = []
            if example is None:
                break
        flush()
    finally:
        model.train(was_training)
    manifest = {"format": FORMAT, "version": VERSION, "k": k, "vocab_size": width,
                "num_examples": sum(s["num_examples"] for s in shards),
                "num_tokens": sum(s["num_tokens"] for s in shards), "shards": shards}
    with open(os.path.join(out, _MANIFEST), "w") as f:
        json.dump(manifest, f, indent=1)
    return TeacherTopK(out)


class TeacherTopK(torch.utils.data.Dataset):
    """The top-k teacher written by :func:`save_teacher_topk`: item e is example e's :class:`kldiv.nn.TopK`
    (indices (T_e, k) int64, logprobs (T_e, k) float32), one per position of the example.

    Each shard's SHA-256 is verified against the manifest when the shard is read (a corrupt or edited file
    is an error, never a silently different teacher); a few recently read shards are kept in memory.

    Args:
      path: the folder.
      tail: the :class:`kldiv.nn.TopK` tail mode of the items ("bucket" or "renormalize"; None: the loss's).
      cached_shards: shards kept in memory.
    """

    def __init__(self, path: str | os.PathLike, tail: str | None = None, cached_shards: int = 4) -> None:
        self.path, self.tail = os.fspath(path), tail
        if tail is not None:
            _validate.check_choice("tail", tail, _validate.TOPK_TAILS)
        manifest_path = os.path.join(self.path, _MANIFEST)
        if not os.path.isfile(manifest_path):
            raise FileNotFoundError(f"{self.path} has no {_MANIFEST}; it is not a folder written by save_teacher_topk "
                                    "(or the writing was interrupted: write it again)")
        with open(manifest_path) as f:
            try:
                self.manifest = json.load(f)
            except json.JSONDecodeError:
                self.manifest = None
        _validate.check_topk_manifest(self.path, self.manifest)
        self.k, self.vocab_size = self.manifest["k"], self.manifest["vocab_size"]
        starts, total = [], 0
        for shard in self.manifest["shards"]:
            starts.append(total)
            total += shard["num_examples"]
        self._starts, self._length = starts, total
        self._cache: OrderedDict[int, dict[str, torch.Tensor]] = OrderedDict()
        self._cached = max(1, int(cached_shards))

    def __len__(self) -> int:
        return self._length

    def _shard(self, number: int) -> dict[str, torch.Tensor]:
        if number in self._cache:
            self._cache.move_to_end(number)
            return self._cache[number]
        shard = self.manifest["shards"][number]
        path = os.path.join(self.path, shard["file"])
        with open(path, "rb") as f:
            data = f.read()
        _validate.check_shard_digest(path, shard["sha256"], hashlib.sha256(data).hexdigest())
        tensors = _safetensors().load(data)
        self._cache[number] = tensors
        if len(self._cache) > self._cached:
            self._cache.popitem(last=False)
        return tensors

    def _locate(self, index: int) -> tuple[dict[str, torch.Tensor], slice]:
        index = _validate.check_integer("index", index)
        if not -self._length <= index < self._length:
            raise IndexError(f"example {index} is out of range: the teacher top-k file has {self._length} examples")
        index %= self._length
        number = max(i for i, s in enumerate(self._starts) if s <= index)
        tensors = self._shard(number)
        e = index - self._starts[number]
        offsets = tensors["offsets"]
        return tensors, slice(int(offsets[e]), int(offsets[e + 1]))

    def __getitem__(self, index: int) -> TopK:
        tensors, rows = self._locate(index)
        return TopK(tensors["indices"][rows].long(), tensors["logprobs"][rows], self.tail)

    def input_ids(self, index: int) -> torch.Tensor:
        """The input ids of example ``index`` as the teacher saw them."""
        tensors, rows = self._locate(index)
        return tensors["input_ids"][rows]


class WithTeacherTopK(torch.utils.data.Dataset):
    """``dataset``'s items with their example's teacher top-k added under the keys the trainer reads; item i's
    input ids must be those the teacher saw for example i."""

    def __init__(self, dataset: Any, topk: TeacherTopK) -> None:
        _validate.check_topk_length(len(dataset), len(topk))
        self.dataset, self.topk = dataset, topk

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = dict(self.dataset[index])
        ids, _ = _ids(index, item)
        _validate.check_topk_alignment(index, torch.equal(ids, self.topk.input_ids(index)))
        teacher = self.topk[index]
        item[TOPK_INDICES], item[TOPK_LOGPROBS] = teacher.indices, teacher.logprobs
        return item


def collate_with_topk(collator: Callable, ignore_index: int, shifted: bool) -> Callable:
    """Wrap a data collator: the teacher top-k of each example is padded on the right to the batch's length
    (padding rows: ids 0..k-1 with log-probability -inf, which the loss never reads, as their labels must be
    ``ignore_index``); everything else goes through ``collator``."""

    def collate(features: list[dict[str, Any]]) -> dict[str, Any]:
        if not features or TOPK_INDICES not in features[0]:
            return collator(features)
        teachers = [(f.pop(TOPK_INDICES), f.pop(TOPK_LOGPROBS)) for f in features]
        batch = collator(features)
        ids = batch["input_ids"]
        length, k = ids.shape[1], teachers[0][0].shape[-1]
        indices = torch.arange(k, dtype=torch.long).expand(len(features), length, k).clone()
        logprobs = torch.full((len(features), length, k), -float("inf"))
        labels = batch.get("labels")
        for row, (idx, lp) in enumerate(teachers):
            n = idx.shape[0]
            same = n <= length and torch.equal(ids[row, :n].cpu(), torch.as_tensor(features[row]["input_ids"]).reshape(-1))
            if same and labels is not None:  # what the padding positions predict is never trained on
                # shifted: padding row t >= n predicts label t + 1
                same = bool((labels[row, n + int(shifted):] == ignore_index).all())
            _validate.check_right_padded(same)
            indices[row, :n], logprobs[row, :n] = idx, lp
        batch[TOPK_INDICES], batch[TOPK_LOGPROBS] = indices, logprobs
        return batch

    return collate
