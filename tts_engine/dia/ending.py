"""Dia's ending rules for one decode step, as a pure function of tensors, and the step's bookkeeping around them
(compiled on CUDA with the other small pieces, fused.py): the EOS countdown of transformers' generation_dia.py
and nari-labs/dia's generate."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from tts_engine.dia.delay import FREE

NOT_ENDED = 2**62  # eos position of a slot whose channel 0 has not ended yet


@dataclass(frozen=True)
class Rules:
    """The constants of Dia's ending rules."""

    max_delay: int
    eos_id: int
    pad_id: int


def advance(
    next_WxC: Tensor, new_pos_W: Tensor, pos_W: Tensor, eos_W: Tensor, last_W: Tensor, live_W: Tensor,
    delays_C: Tensor, forced_WxC: Tensor, current_WxC: Tensor, rules: Rules,
) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    """Dia's ending rules for one step, as a pure function (compiled with the other small pieces on CUDA).

    Channel 0's EOS, or reaching the slot's last position, starts the countdown at the new position; channel c
    then gets EOS delay[c] steps later and PAD after; cells the prefill fixed (`forced_WxC`, FREE elsewhere)
    win over everything. A slot is done once its last channel has ended; done and idle slots keep their cells
    (`current_WxC`). Returns the cells to write at the new position, the new eos positions, and which slots
    advance.
    """
    ended = eos_W < NOT_ENDED
    trigger = (next_WxC[:, 0] == rules.eos_id) | (new_pos_W >= last_W)
    eos = torch.where(~ended & trigger, new_pos_W, eos_W)
    since_Wx1 = (new_pos_W - eos)[:, None]
    counting = (eos < NOT_ENDED)[:, None]
    next_WxC = torch.where(counting & (since_Wx1 == delays_C), rules.eos_id, next_WxC)
    next_WxC = torch.where(counting & (since_Wx1 > delays_C), rules.pad_id, next_WxC)
    next_WxC = torch.where(forced_WxC != FREE, forced_WxC, next_WxC)
    writing = live_W & ~(ended & (pos_W >= eos_W + rules.max_delay))
    return torch.where(writing[:, None], next_WxC, current_WxC), torch.where(writing, eos, eos_W), writing


def step_outputs(
    next_WxC: Tensor, grid_BxPxC: Tensor, forced_BxPxC: Tensor, at_W: Tensor, pos_W: Tensor, eos_W: Tensor,
    last_W: Tensor, live_W: Tensor, delays_C: Tensor, noise_step_1: Tensor, positions: int, rules: Rules,
) -> None:  # fmt: skip
    """A decode step's bookkeeping for slots at_W, in place: the drawn tokens next_WxC, after the ending rules
    (`advance`), go into the grid at each slot's next position (the cells the prefill fixed, in `forced`, win),
    and the slots that advance move their eos and position on; the noise step counts one. pos_W, eos_W are the
    slots' own state (views). Eager about ten small kernels (the gathers, the scatter, the copies); compiled, a
    few."""
    new_pos_W = (pos_W + 1).clamp(max=positions - 1)
    forced_WxC, current_WxC = forced_BxPxC[at_W, new_pos_W], grid_BxPxC[at_W, new_pos_W]
    cells_WxC, eos, writing = advance(
        next_WxC, new_pos_W, pos_W, eos_W, last_W, live_W, delays_C, forced_WxC, current_WxC, rules
    )
    grid_BxPxC[at_W, new_pos_W] = cells_WxC
    eos_W.copy_(eos)
    pos_W.copy_(torch.where(writing, new_pos_W, pos_W))
    noise_step_1.add_(1)
