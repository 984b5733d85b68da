"""The EA step fused: what `EvolvingAttentionStep`'s reference forward computes, in fewer passes over the maps and,
in training, one `torch.autograd.Function` that saves only what its backward needs.

For S, E_prev [B, H, Q, K] the reference records five autograd nodes and keeps two [B, H, Q, K] maps a layer (M, the
conv's input, and act(conv(M))). `fused_forward` writes M once, into the conv's input X [B, H, r + Q, K] (below the
r = k-1 rows above the first query of a query-causal conv), runs the conv, the activation in place and the final lerp
into the activation's memory; in training it saves X and the activation's sign bits (a bool map; GELU saves its
input). The backward: one pass for the activation's derivative, the conv's input gradient (on the CPU by the fastest
of `cpu_conv_kernels`, a conv with the flipped, transposed weight; alpha folded into the weight), the weight and bias
gradients by aten's convolution backward, then one pass for dM and one for each input's gradient.

X's memory format is a choice: oneDNN's conv and its backward run several times faster on a channels-last map (heads
innermost) on some CPUs, not on others, and converting costs a pass each way. On the CPU, `EvolvingAttentionStep`
times both once per map shape (inference and training apart) and keeps the choice for the process. Both compute the
same sums.
"""

from dataclasses import dataclass
from types import SimpleNamespace

import torch
from torch import nn
from torch.nn import functional as F

from .cpu_conv_kernels import CPU_KERNELS, fastest_kernel


LAYOUTS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
LEAKY_SLOPE = 0.01  # nn.LeakyReLU's, as EA_ACTIVATIONS builds it
FUSED_ACTIVATIONS = ("relu", "leaky_relu", "gelu", "identity")


@dataclass(frozen=True)
class FusedStep:
    """What the fused step needs beside its tensors: the conv (its forward runs the step's conv; its padding serves
    the backward), alpha, beta, the activation's name, the query rows r above the map, X's layout (a key of
    `LAYOUTS`), and whether to return the last r rows of X for a decoding cache."""

    conv: nn.Conv2d
    alpha: float
    beta: float
    activation: str
    rows_above: int
    layout: str
    use_cache: bool


def fused_forward(
    step: FusedStep,
    logits: torch.Tensor,
    previous: torch.Tensor,
    top: torch.Tensor | None,
    keep: torch.Tensor | None,
    save: bool,
):
    """E [B, H, Q, K] from S = `logits` and E_prev = `previous`; `top` [B, H, r, K] the rows above the first query
    (None: zeros), `keep` the bool mask of valid positions. Returns E, X [B, H, r + Q, K] (M below r rows), what the
    activation's backward needs (`save`: sign bits, or GELU's input; else None) and the rows to cache (or None).
    E is written into the memory of act(conv(X)), which nothing else reads."""
    batch_size, num_heads, num_queries, num_keys = logits.shape
    rows, layout = step.rows_above, LAYOUTS[step.layout]
    shape = (batch_size, num_heads, rows + num_queries, num_keys)
    stacked = torch.empty(shape, dtype=logits.dtype, device=logits.device, memory_format=layout)
    if rows:
        stacked[:, :, :rows] = 0.0 if top is None else top
    # M = (1 - beta) * S + beta * E_prev, zero at masked positions: into X, or first as the logits lie and then
    # copied (a lerp that writes another layout is several times slower than one that does not, and than the copy)
    as_it_lies = layout == torch.contiguous_format
    mixed = stacked[:, :, rows:] if as_it_lies else torch.empty_like(logits)
    torch.lerp(logits, previous, step.beta, out=mixed)
    if keep is not None:
        mixed.masked_fill_(~keep, 0.0)
    if not as_it_lies:
        stacked[:, :, rows:] = mixed
    cached = stacked[:, :, -rows:].clone(memory_format=torch.contiguous_format) if step.use_cache and rows else None
    convolved = step.conv(stacked)  # no autograd here: EvolvingAttentionConv's CPU kernels apply
    convolved = convolved.to(mixed.dtype)  # under autocast the conv may compute in another dtype
    saved = convolved if save and step.activation == "gelu" else None
    if step.activation == "gelu":
        convolved = F.gelu(convolved)
    elif step.activation == "relu":
        convolved.relu_()
    elif step.activation == "leaky_relu":
        F.leaky_relu_(convolved, LEAKY_SLOPE)
    activated = convolved.contiguous()
    if save and step.activation in ("relu", "leaky_relu"):
        saved = activated > 0
    # E = alpha * act(conv(X)) + (1 - alpha) * M, into act(conv(X))'s memory
    return activated.lerp_(mixed, 1 - step.alpha), stacked, saved, cached


class EvolvingAttentionFunction(torch.autograd.Function):
    """`fused_forward` with its backward: saves X (M below the rows above) and the activation's sign bits."""

    @staticmethod
    def forward(ctx, logits, previous, top, weight, bias, keep, step: FusedStep):
        evolved, stacked, saved, cached = fused_forward(step, logits, previous, top, keep, save=True)
        ctx.save_for_backward(stacked, saved, weight, keep)
        ctx.step, ctx.has_bias = step, bias is not None
        return evolved, cached

    @staticmethod
    def backward(ctx, grad_evolved, grad_cached):
        stacked, saved, weight, keep = ctx.saved_tensors
        step = ctx.step
        rows, layout = step.rows_above, LAYOUTS[step.layout]
        # dC = act'(C) * dE (alpha is folded into the conv's weight below), computed as dE lies, then in X's layout
        if step.activation == "gelu":
            grad_conv = torch.ops.aten.gelu_backward(grad_evolved, saved)
        elif step.activation == "relu":
            grad_conv = grad_evolved * saved
        elif step.activation == "leaky_relu":
            grad_conv = torch.where(saved, grad_evolved, grad_evolved * LEAKY_SLOPE)
        else:
            grad_conv = grad_evolved
        grad_conv = grad_conv.contiguous(memory_format=layout)
        # alpha * conv(X): the conv with the weight scaled, in X's dtype (autocast's, where the forward ran under it)
        scaled = weight.to(stacked.dtype) * step.alpha
        wanted = ctx.needs_input_grad
        grad_input = any(wanted[:3])
        transposed = None
        if grad_input and layout == torch.contiguous_format and grad_conv.device.type == "cpu":
            # dX is the conv of dC with the flipped, transposed weight: one of the tuned CPU kernels (oneDNN's
            # backward-data is slower than its forward on some CPUs), and the backward below gives dW and db only
            kernel_size = weight.shape[2:]
            padding = [size - 1 - pad for size, pad in zip(kernel_size, step.conv.padding)]
            weight_t = scaled.flip(2, 3).transpose(0, 1).contiguous()
            transposed = SimpleNamespace(weight=weight_t, bias=None, padding=padding, kernel_size=kernel_size,
                                         out_channels=weight.shape[1])  # fmt: skip
            grad_input = False
        grad_stacked, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
            grad_conv,
            stacked,
            scaled,
            [weight.shape[0]] if ctx.has_bias else None,
            [1, 1],
            list(step.conv.padding),
            [1, 1],
            False,
            [0, 0],
            1,
            [grad_input, wanted[3], ctx.has_bias and wanted[4]],
        )
        if transposed is not None:  # the conv's class pins or keeps the kernel choices, as for its forward
            conv_class = type(step.conv)
            kernel = conv_class.cpu_kernel or fastest_kernel(transposed, grad_conv, conv_class.cpu_choices)
            grad_stacked = CPU_KERNELS[kernel](transposed, grad_conv)
        grad_logits = grad_previous = grad_top = None
        if grad_weight is not None:
            grad_weight = (grad_weight * step.alpha).to(weight.dtype)
        if grad_bias is not None:
            grad_bias = (grad_bias * step.alpha).to(weight.dtype)
        if grad_stacked is not None:
            if grad_cached is not None:
                grad_stacked[:, :, -rows:] += grad_cached
            if wanted[2]:
                grad_top = grad_stacked[:, :, :rows]
            # dM = (1 - alpha) * dE + (the conv's input gradient), zero at masked positions
            grad_mixed = grad_stacked[:, :, rows:].contiguous().add_(grad_evolved, alpha=1 - step.alpha)
            if keep is not None:
                grad_mixed.masked_fill_(~keep, 0.0)
            if wanted[0]:
                grad_logits = grad_mixed * (1 - step.beta) if wanted[1] else grad_mixed.mul_(1 - step.beta)
            if wanted[1]:
                grad_previous = grad_mixed.mul_(step.beta)
        return grad_logits, grad_previous, grad_top, grad_weight, grad_bias, None, None
