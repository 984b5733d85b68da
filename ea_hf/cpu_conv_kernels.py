"""Exact CPU formulations of the EA conv for eager inference, and the autotuner that picks the fastest of them.

Which formulation of the same Conv2d(H, H, k) over a [B, H, rows, K] map is fastest depends on the CPU, oneDNN's
build, the map's shape and the thread count (at BERT-base's [1, 12, 512, 512] one CPU ran Conv3d 10x slower than
Conv2d, another 5-9x; at [2, 12, 512, 512] Conv3d was the faster there). So `fastest_kernel` times each on the
running machine once per map shape, as cuDNN's benchmark mode does, and `EvolvingAttentionConv` runs the winner.
Every kernel computes the same sums as `nn.Conv2d.forward` (the tests check each against it). The fused EA step's
backward runs them too, for the conv's input gradient (the conv with the flipped, transposed weight).
"""

import functools
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F


def channels_last_kernel(conv: nn.Conv2d, input: torch.Tensor) -> torch.Tensor:
    """Conv2d on a channels-last copy of the map (the layout oneDNN prefers), the output back in the map's layout."""
    output = F.conv2d(
        input.contiguous(memory_format=torch.channels_last), conv.weight, conv.bias, padding=conv.padding
    )
    return output.contiguous()


def conv3d_kernel(conv: nn.Conv2d, input: torch.Tensor, block_bytes: int | None = None) -> torch.Tensor:
    """The same sums as a Conv3d with one input channel and a kernel spanning the C channels, read from the map as it
    lies; with `block_bytes`, in blocks of query rows whose output is about that size (each block reads the rows next
    to it), which keeps oneDNN's output buffer small."""
    (pad_rows, pad_keys), reach = conv.padding, conv.kernel_size[0] - 1  # a block reads `reach` more input rows
    num_rows = input.shape[2] + 2 * pad_rows - reach
    row_bytes = input.shape[0] * conv.out_channels * input.shape[3] * input.element_size()
    step = num_rows if block_bytes is None else max(1, block_bytes // row_bytes)
    weight, blocks = conv.weight.unsqueeze(1), []
    for start in range(0, num_rows, step):
        end = min(start + step, num_rows)
        # output row r reads input rows r - pad_rows ... r - pad_rows + reach; the same padding on a slice of the
        # input beginning at `low` gives output rows from `low` on, exact for rows [start, end)
        low = max(start - pad_rows, 0)
        rows = input[:, :, low : end - pad_rows + reach].unsqueeze(1)
        output = F.conv3d(rows, weight, conv.bias, padding=(0, pad_rows, pad_keys)).squeeze(2)
        blocks.append(output[:, :, start - low : end - low])
    return blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=2)


CPU_KERNELS = {  # each called as kernel(conv, input); `conv` needs weight, bias, padding, kernel_size, out_channels
    "conv2d": lambda conv, input: F.conv2d(input, conv.weight, conv.bias, padding=conv.padding),  # the map as it lies
    "conv2d_channels_last": channels_last_kernel,
    "conv3d": conv3d_kernel,
    "conv3d_row_blocks": lambda conv, input: conv3d_kernel(conv, input, block_bytes=6 * 2**20),
}


def shape_bucket(shape) -> list[int]:
    """Each of a map's rows and keys (its last two sizes) rounded up to a power of two: maps in one bucket share a
    timed choice."""
    return [1 << max(size - 1, 0).bit_length() for size in shape[-2:]]


def fastest(key: tuple, runs: dict[str, Callable[[], object]], choices: dict[tuple, str], repeats: int = 1) -> str:
    """The name of the fastest of `runs`: looked up under `key` in `choices`, or timed once (a first call of each
    allocates what later calls reuse, then the best of `repeats` calls) and recorded there."""
    if key not in choices:
        seconds = {}
        for name, run in runs.items():
            run()
            for _ in range(repeats):
                start = time.perf_counter()
                run()
                seconds[name] = min(seconds.get(name, float("inf")), time.perf_counter() - start)
        choices[key] = min(seconds, key=seconds.get)
    return choices[key]


def fastest_kernel(conv: nn.Conv2d, input: torch.Tensor, choices: dict[tuple, str]) -> str:
    """The name of the fastest of `CPU_KERNELS` for maps like `input` [B, C, rows, K] (`fastest`, keyed by the batch,
    channels, `shape_bucket`, kernel, padding, dtype and threads)."""
    key = (*input.shape[:2], *shape_bucket(input.shape), conv.out_channels, *conv.kernel_size, *conv.padding)
    key += (input.dtype, torch.get_num_threads())
    runs = {name: functools.partial(kernel, conv, input) for name, kernel in CPU_KERNELS.items()}
    return fastest(key, runs, choices)
