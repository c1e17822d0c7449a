"""Packing of the model blocks (H, W_1..W_L, b) into one flat state tensor (R, P)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Block:
    """A named block of the state: ``shape`` per run, stored at ``[start, start + size)``."""

    name: str
    shape: tuple[int, ...]
    start: int

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def stop(self) -> int:
        return self.start + self.size


class StateLayout:
    """Ordered blocks of a flat state; ``view`` returns per-block views (R, *shape)."""

    def __init__(self, shapes: list[tuple[str, tuple[int, ...]]]) -> None:
        blocks, start = [], 0
        for name, shape in shapes:
            blocks.append(Block(name, tuple(shape), start))
            start += math.prod(shape)
        self.blocks: tuple[Block, ...] = tuple(blocks)
        self.size = start
        self._by_name = {b.name: b for b in blocks}
        # per block: start, shape and the row-major strides of its shape (in entries)
        self._spans = {b.name: (b.start, b.shape, _row_major_strides(b.shape)) for b in blocks}

    def __getitem__(self, name: str) -> Block:
        return self._by_name[name]

    def __contains__(self, name: str) -> bool:
        return name in self._by_name

    def view(self, state: torch.Tensor, name: str) -> torch.Tensor:
        """View of block ``name`` in ``state`` (R, P): shape (R, *block.shape).

        The same view as ``state[:, start:stop].view(R, *shape)``, made with one
        ``as_strided`` (half the host time: the right-hand sides take several per call)."""
        start, shape, strides = self._spans[name]
        if state.dim() != 2 or state.shape[1] != self.size:
            raise ValueError(f"state must be (R, {self.size}), got {tuple(state.shape)}")
        s0, s1 = state.stride()
        if s1 != 1:
            strides = tuple(x * s1 for x in strides)
        return state.as_strided((state.shape[0], *shape), (s0, *strides),
                                state.storage_offset() + start * s1)

    def pack(self, parts: dict[str, torch.Tensor], out: torch.Tensor | None = None
             ) -> torch.Tensor:
        """Concatenate blocks given as (R, *shape) tensors into a flat (R, P) state (written
        into ``out`` (R, P) when given)."""
        r = next(iter(parts.values())).shape[0]
        if out is None:
            return torch.cat([parts[b.name].reshape(r, b.size) for b in self.blocks], dim=1)
        return self.write({b.name: parts[b.name] for b in self.blocks}, out)

    def write(self, parts: dict[str, torch.Tensor], out: torch.Tensor) -> torch.Tensor:
        """Copy the blocks ``parts`` {name: (R, *shape)} into ``out`` (R, P); blocks not in
        ``parts`` are left as they are (a caller that wrote them in place)."""
        for name, part in parts.items():
            self.view(out, name).copy_(part)
        return out

    def expand_per_block(self, values: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-run, per-block scalars {name: (R,)} broadcast to a flat (R, P) tensor."""
        r = next(iter(values.values())).shape[0]
        cols = [values[b.name].reshape(r, 1).expand(r, b.size) for b in self.blocks]
        return torch.cat(cols, dim=1)


def _row_major_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Strides (in entries) of a contiguous tensor of ``shape``."""
    strides, step = [], 1
    for n in reversed(shape):
        strides.append(step)
        step *= n
    return tuple(reversed(strides))
