"""The evolving-attention (EA) operation, shared by every ea-hf model.

Wang et al., "Convolution-enhanced Evolving Attention Networks" (TPAMI 2023). For attention layer i:

    M_i = (1 - beta) * S_i + beta * E_{i-1}
    E_i = alpha * act(Conv2d(M_i)) + (1 - alpha) * M_i
    A_i = softmax(E_i + mask)

with S_i this layer's logits [B, H, Q, K] (before any mask), E_{i-1} the evolved logits of the previous layer of the
chain, and a Conv2d(H, H, k) over the (query, key) plane with the heads as channels. Unlike the authors' code, padded
positions are zeroed before the conv (so padding never leaks into real positions), the mask is applied only right
before the softmax, and decoders use a conv that is causal along the query axis.

This file holds the step (`EvolvingAttentionStep`, with its convs), the attention around it
(`evolving_attention_forward`, `attention_probabilities`), the decoders' cache and what every EA model class shares;
the configs' EA fields are in `configuration_evolving_attention.py`, the conv's CPU kernels in `cpu_conv_kernels.py`.
"""

import functools
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache, EncoderDecoderCache

from .cpu_conv_kernels import CPU_KERNELS, fastest, fastest_kernel, shape_bucket
from .fused_evolving_attention import FUSED_ACTIVATIONS, LAYOUTS, EvolvingAttentionFunction, FusedStep, fused_forward


# applied to the conv's output, which nothing else reads: in place where the activation can be
EA_ACTIVATIONS = {
    "relu": lambda: nn.ReLU(inplace=True),
    "leaky_relu": lambda: nn.LeakyReLU(0.01, inplace=True),
    "gelu": nn.GELU,
    "identity": nn.Identity,
}


def is_tracing() -> bool:
    """Whether the forward is being traced, compiled or exported (`torch.jit.trace`, `torch.compile`,
    `torch.export`, either ONNX exporter): then no Python branch may read tensor values, since the graph would keep
    only the branch of the example input. Eager-only checks are skipped, and masks are always applied."""
    return (
        torch.jit.is_tracing()
        or torch.onnx.is_in_onnx_export()
        or torch.compiler.is_compiling()
        or torch.compiler.is_exporting()
    )


def check_token_ids(input_ids: torch.Tensor, vocab_size: int, name: str = "input_ids") -> None:
    """Raise a clear error for token ids that are not an integer [batch, seq_len] tensor of ids in the vocabulary
    (ids out of range mean a tokenizer that does not match the model). The range check reads the ids: eager only."""
    if input_ids.is_floating_point() or input_ids.is_complex() or input_ids.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer token ids, got dtype {input_ids.dtype}.")
    if input_ids.dim() != 2:
        raise ValueError(f"{name} must have shape [batch, seq_len], got {tuple(input_ids.shape)}.")
    if is_tracing() or not input_ids.numel():
        return
    if input_ids.min() < 0 or input_ids.max() >= vocab_size:
        raise ValueError(
            f"{name} holds ids in [{int(input_ids.min())}, {int(input_ids.max())}], outside the model's vocabulary "
            f"[0, {vocab_size}): the tokenizer does not match the model."
        )


def padding_mask_from(attention_mask: torch.Tensor | None, shape: tuple[int, int], name: str) -> torch.Tensor | None:
    """The bool padding mask [batch, seq_len] (True at real tokens) of a 0/1 `attention_mask`; None when none is
    given, or (in eager mode) when nothing is padded. Raises a `ValueError` for any other shape (EA needs the padding
    itself, not a 4-D additive mask)."""
    if attention_mask is None:
        return None
    if tuple(attention_mask.shape) != tuple(shape):
        raise ValueError(
            f"{name} must have shape [batch, seq_len] = {tuple(shape)} (1 at real tokens, 0 at padding), got "
            f"{tuple(attention_mask.shape)}."
        )
    mask = attention_mask.bool()
    return None if not is_tracing() and torch.all(mask) else mask


class EvolvingAttentionConv(nn.Conv2d):
    """EA's `nn.Conv2d(H, H, k)` over the (query, key) plane of [B, H, Q, K] maps, heads as channels; zero padding
    (a query-causal conv pads only the key axis: `EvolvingAttentionStep` puts the k-1 rows above the first query on
    top of its input). Initialised as the identity (a Dirac kernel, zero bias), so that EA starts close to its host.

    Same constructor and forward as `nn.Conv2d`, so that hooks and wrappers (PEFT's LoRA) apply. One branch differs:
    eager inference on the CPU runs the fastest exact formulation on this machine (`cpu_conv_kernels`), chosen by
    timing once per map shape and kept for the process in `cpu_choices`; set `EvolvingAttentionConv.cpu_kernel` to a
    name of `CPU_KERNELS` to use that one instead.
    """

    cpu_kernel: str | None = None
    cpu_choices: dict[tuple, str] = {}

    def reset_parameters(self):
        # transformers' init helpers skip tensors already loaded from a checkpoint
        init.dirac_(self.weight, groups=self.groups)
        if self.bias is not None:
            init.zeros_(self.bias)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """input: [B, C_in, rows, K] -> [B, C_out, rows + 2 * padding[0] - k + 1, K]."""
        if self.runs_cpu_kernels(input):
            return CPU_KERNELS[self.cpu_kernel or fastest_kernel(self, input, self.cpu_choices)](self, input)
        return super().forward(input)

    def runs_cpu_kernels(self, input: torch.Tensor) -> bool:
        """Eager CPU inference with a plain stride-1 conv on a map as it lies (`EvolvingAttentionStep`'s fused
        path may hand it a channels-last one, which oneDNN's Conv2d takes as it is): no autograd, tracing or other
        device."""
        plain = self.stride == (1, 1) and self.dilation == (1, 1) and self.groups == 1 and self.padding_mode == "zeros"
        records_graph = torch.is_grad_enabled() and (input.requires_grad or self.weight.requires_grad)
        cpu_map = input.device.type == "cpu" and input.is_contiguous()
        return plain and cpu_map and not records_graph and not is_tracing()


class EvolvingAttentionGridConv(nn.Module):
    """The conv over the (query, key) plane of an image's tokens that respects its 2-D patch grid: a 4-D conv with a
    k x k neighbourhood of the query patch times a k x k neighbourhood of the key patch (k^4 H^2 + H parameters).

    The map's first `p` tokens (CLS) are not on the grid: each is a point whose neighbours are all zero padding, so
    the CLS row is convolved over the key grid only, the CLS column over the query grid only, and the CLS-CLS entries
    by the centre tap. Initialised as the identity, like `EvolvingAttentionConv`.
    """

    def __init__(self, num_heads: int, kernel_size: int):
        super().__init__()
        self.kernel_size = kernel_size
        self.weight = nn.Parameter(torch.empty(num_heads, num_heads, *(kernel_size,) * 4))
        self.bias = nn.Parameter(torch.empty(num_heads))
        self.reset_parameters()

    def reset_parameters(self):
        # transformers' init helpers skip tensors already loaded from a checkpoint
        centre = self.kernel_size // 2
        identity = torch.zeros_like(self.weight)
        identity[..., centre, centre, centre, centre] = torch.eye(
            len(identity), dtype=identity.dtype, device=identity.device
        )
        init.copy_(self.weight, identity)
        init.zeros_(self.bias)

    def forward(self, mixed: torch.Tensor, grid_size: tuple[int, int] | None) -> torch.Tensor:
        """mixed: M [B, H, N, N] with N = p + h * w tokens (raster order), grid_size = (h, w). Returns [B, H, N, N]."""
        if grid_size is None:
            raise ValueError("The 2-D grid conv (`ea_conv='grid'`) needs the patch grid size of the image.")
        batch_size, num_heads, num_tokens = mixed.shape[:3]
        height, width = grid_size
        prefix = num_tokens - height * width
        if prefix < 0:
            raise ValueError(
                f"A {height}x{width} patch grid needs at least {height * width} tokens, got {num_tokens}."
            )
        k, centre = self.kernel_size, self.kernel_size // 2
        weight, bias = self.weight, self.bias[:, None, None]  # bias broadcast over [B, H, rows, columns]
        out = torch.empty_like(mixed)

        # patch queries x patch keys: for each query offset, a 2-D conv over the key grid of the shifted queries
        patches = mixed[:, :, prefix:, prefix:].reshape(batch_size, num_heads, height, width, height, width)
        patches = F.pad(patches.permute(0, 2, 3, 1, 4, 5), (0, 0, 0, 0, 0, 0, centre, centre, centre, centre))
        grid = 0
        for row in range(k):
            for column in range(k):
                shifted = patches[:, row : row + height, column : column + width].reshape(-1, num_heads, height, width)
                grid = grid + F.conv2d(shifted, weight[:, :, row, column], padding=centre)
        grid = grid.view(batch_size, height, width, num_heads, height * width).permute(0, 3, 1, 2, 4)
        out[:, :, prefix:, prefix:] = grid.reshape(batch_size, num_heads, height * width, height * width) + bias
        if prefix:
            # CLS queries x patch keys: the key grid only; patch queries x CLS keys: the query grid only
            rows = mixed[:, :, :prefix, prefix:].transpose(1, 2).reshape(-1, num_heads, height, width)
            rows = F.conv2d(rows, weight[:, :, centre, centre], padding=centre)
            out[:, :, :prefix, prefix:] = rows.view(batch_size, prefix, num_heads, -1).transpose(1, 2) + bias
            columns = mixed[:, :, prefix:, :prefix].permute(0, 3, 1, 2).reshape(-1, num_heads, height, width)
            columns = F.conv2d(columns, weight[..., centre, centre], padding=centre)
            columns = columns.view(batch_size, prefix, num_heads, -1).permute(0, 2, 3, 1)
            out[:, :, prefix:, :prefix] = columns + bias
            corner = torch.einsum(
                "oi,bipq->bopq", weight[:, :, centre, centre, centre, centre], mixed[:, :, :prefix, :prefix]
            )
            out[:, :, :prefix, :prefix] = corner + bias
        return out


class EvolvingAttentionStep(nn.Module):
    """One step of an EA chain, between a layer's logits and its softmax: mixes them with the previous layer's evolved
    logits and convolves the mixture.

    Models build one for every attention layer of a chain but the first, which has no predecessor (E_0 = S_0) and
    forwards its raw logits.

    Args:
        config: an EA config (`ea_alpha`, `ea_beta`, `ea_kernel_size`, `ea_activation`, `ea_conv`).
        num_heads: H, the conv's channels.
        causal: causal self-attention: future key columns (j > i + K - Q) are zeroed and the conv is query-causal.
        query_causal: the conv reads only the current and earlier query rows (the k-1 rows above the first query are
            zeros, or a decoding cache's rows). Defaults to `causal`; decoder cross-attention sets it alone.

    The forward below is the reference: it reads like the equations, and autograd differentiates it. With a plain
    `EvolvingAttentionConv` (no hooks, no wrapper such as PEFT's) outside tracing and export, the step runs the same
    computation fused (`fused_evolving_attention`): fewer passes over the maps, and in training one autograd node that
    keeps 1.25 maps a layer instead of 2. Set `fused = False` (on the class or a step) for the reference, and `layout`
    to a name of `fused_evolving_attention.LAYOUTS` to fix the fused step's memory format instead of timing both.
    """

    fused: bool = True
    layout: str | None = None
    layout_choices: dict[tuple, str] = {}

    def __init__(self, config, num_heads: int, causal: bool = False, query_causal: bool | None = None):
        super().__init__()
        self.alpha = float(config.ea_alpha)
        self.beta = float(config.ea_beta)
        self.causal = causal
        self.query_causal = causal if query_causal is None else query_causal
        self.rows_above = config.ea_kernel_size - 1 if self.query_causal else 0
        self.grid = getattr(config, "ea_conv", "raster") == "grid"
        if self.grid and self.query_causal:
            raise ValueError("The 2-D grid conv (`ea_conv='grid'`) is for image encoders, not causal maps.")
        if self.alpha == 0:  # the conv branch has no weight: no parameters that would never receive a gradient
            self.conv = None
        elif self.grid:
            self.conv = EvolvingAttentionGridConv(num_heads, config.ea_kernel_size)
        else:
            half = config.ea_kernel_size // 2
            padding = (0 if self.query_causal else half, half)
            self.conv = EvolvingAttentionConv(num_heads, num_heads, config.ea_kernel_size, padding=padding)
        self.activation_name = config.ea_activation
        self.activation = EA_ACTIVATIONS[config.ea_activation]()

    @property
    def active(self) -> bool:
        """False when alpha = beta = 0: the step is the identity and the layer computes what its host model does."""
        return self.alpha != 0.0 or self.beta != 0.0

    def forward(
        self,
        logits: torch.Tensor,
        previous_logits: torch.Tensor | None = None,
        query_mask: torch.Tensor | None = None,
        key_mask: torch.Tensor | None = None,
        past_rows: torch.Tensor | None = None,
        use_cache: bool = False,
        grid_size: tuple[int, int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """
        Args:
            logits: S_i, [B, H, Q, K], this layer's logits with any position term, before any mask.
            previous_logits: E_{i-1}, [B, H, Q, K], or None (or another shape) to start a new chain.
            query_mask: [B, Q], True (or 1) at real query positions; None when none is padded.
            key_mask: [B, K], True (or 1) at real key positions; None when none is padded.
            past_rows: [B, H, k-1, K'] with K' <= K, the last rows of M from earlier decoding steps (query-causal
                conv with a cache only); None at the first step.
            use_cache: return the rows that the next decoding step's conv reads.
            grid_size: (h, w), the patch grid of an image's last h * w tokens (needed by the grid conv only).
        Returns:
            E_i [B, H, Q, K], the evolved logits, to be softmaxed with `attention_probabilities` and forwarded; and,
            with `use_cache` on a query-causal conv, the last k-1 rows of M [B, H, k-1, K] (else None).
        """
        if not self.active:  # alpha = beta = 0: the identity
            return logits, None
        keep = valid_positions(logits, query_mask, key_mask, self.causal)  # zero, the conv's border, elsewhere
        if previous_logits is None or previous_logits.shape != logits.shape:  # a chain's first map: E_0 = S_0
            return (logits if keep is None else logits.masked_fill(~keep, 0.0)), None
        if self.runs_fused():
            return self.fused_forward(logits, previous_logits, keep, past_rows, use_cache)
        mixed = torch.lerp(logits, previous_logits, self.beta)  # M = (1 - beta) * S + beta * E_prev
        if keep is not None:
            mixed.masked_fill_(~keep, 0.0)
        if self.conv is None:  # alpha = 0: E = M
            return mixed, None
        conv_input, rows = self.rows_on_top(mixed, past_rows, use_cache)
        convolved = self.activation(self.conv(conv_input, grid_size) if self.grid else self.conv(conv_input))
        # E = alpha * act(conv(M)) + (1 - alpha) * M; in inference into M's memory, which keeps one map less
        inference = not (torch.is_grad_enabled() and (mixed.requires_grad or convolved.requires_grad))
        return (mixed.lerp_(convolved, self.alpha) if inference else torch.lerp(mixed, convolved, self.alpha)), rows

    def runs_fused(self) -> bool:
        """Whether the fused computation applies: a plain `EvolvingAttentionConv` without hooks (PEFT's wrappers and
        hooks need the conv called by the reference), outside tracing and export."""
        conv = self.conv
        if not self.fused or type(conv) is not EvolvingAttentionConv or self.activation_name not in FUSED_ACTIVATIONS:
            return False
        hooked = conv._forward_hooks or conv._forward_pre_hooks or conv._backward_hooks or conv._backward_pre_hooks
        return not hooked and not is_tracing()

    def fused_forward(
        self,
        logits: torch.Tensor,
        previous_logits: torch.Tensor,
        keep: torch.Tensor | None,
        past_rows: torch.Tensor | None,
        use_cache: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The reference's E and cached rows, by `fused_evolving_attention` (in X's faster memory format)."""
        top = None
        if self.rows_above and past_rows is not None:
            top = F.pad(past_rows, (0, logits.shape[-1] - past_rows.shape[-1]))
        conv = self.conv
        tensors = (logits, previous_logits, top, conv.weight, conv.bias)
        training = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
        layout = self.layout
        if layout is None and logits.device.type != "cpu":
            layout = "contiguous"
        elif layout is None:  # timed once per shape, on detached copies in training (with the backward)
            key = (training, *logits.shape[:2], *shape_bucket(logits.shape), *conv.kernel_size, self.rows_above)
            key += (logits.dtype, torch.get_num_threads())

            def time_one(name: str):
                copies = [t if t is None or not training else t.detach().requires_grad_() for t in tensors]
                self.run_fused(name, copies, keep, use_cache, training, backward=True)

            runs = {name: functools.partial(time_one, name) for name in LAYOUTS}
            layout = fastest(key, runs, self.layout_choices, repeats=2)
        return self.run_fused(layout, tensors, keep, use_cache, training)

    def run_fused(
        self, layout: str, tensors, keep: torch.Tensor | None, use_cache: bool, training: bool, backward: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The fused step in `layout` on (S, E_prev, top rows, weight, bias); in training the autograd Function (and
        with `backward` its backward, for timing)."""
        step = FusedStep(self.conv, self.alpha, self.beta, self.activation_name, self.rows_above, layout, use_cache)
        if not training:
            evolved, _, _, rows = fused_forward(step, *tensors[:3], keep, save=False)
            return evolved, rows
        evolved, rows = EvolvingAttentionFunction.apply(*tensors, keep, step)
        if backward:
            evolved.backward(torch.ones_like(evolved))
        return evolved, rows

    def rows_on_top(
        self, mixed: torch.Tensor, past_rows: torch.Tensor | None, use_cache: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The conv's input: M [B, H, Q, K], below the k-1 rows above its first query for a query-causal conv (the
        earlier steps' rows, zero at keys they did not see, or zeros); and with `use_cache` the rows to cache."""
        if not self.rows_above:
            return mixed, None
        if past_rows is None:
            past_rows = mixed.new_zeros(*mixed.shape[:2], self.rows_above, mixed.shape[-1])
        stacked = torch.cat([F.pad(past_rows, (0, mixed.shape[-1] - past_rows.shape[-1])), mixed], dim=2)
        # a copy: a view would keep the whole stacked map alive in the cache
        return stacked, stacked[:, :, -self.rows_above :].clone() if use_cache else None


def valid_positions(
    logits: torch.Tensor, query_mask: torch.Tensor | None, key_mask: torch.Tensor | None, causal: bool
) -> torch.Tensor | None:
    """Bool mask broadcastable to `logits` [B, H, Q, K]: True where query and key are real (and not future)."""
    num_queries, num_keys = logits.shape[-2:]
    keep = None
    if key_mask is not None:
        keep = key_mask.bool()[:, None, None, :]
    if query_mask is not None:
        rows = query_mask.bool()[:, None, :, None]
        keep = rows if keep is None else keep & rows
    if causal:
        future = torch.ones(num_queries, num_keys, dtype=torch.bool, device=logits.device)
        past = torch.tril(future, diagonal=num_keys - num_queries)
        keep = past if keep is None else keep & past
    return keep


def attention_probabilities(
    logits: torch.Tensor, key_mask: torch.Tensor | None = None, causal: bool = False
) -> torch.Tensor:
    """Softmax over keys of (evolved) logits [B, H, Q, K], masked keys excluded; computed in fp32, returned in the
    input dtype. A row whose keys are all masked gets a uniform row, never NaN."""
    allowed = valid_positions(logits, None, key_mask, causal)
    if allowed is not None:
        logits = logits.masked_fill(~allowed, torch.finfo(logits.dtype).min)
    return F.softmax(logits, dim=-1, dtype=torch.float32).to(logits.dtype)


def evolving_attention_forward(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    evolving_attention: EvolvingAttentionStep | None,
    previous_logits: torch.Tensor | None = None,
    *,
    scaling: float,
    position_bias: torch.Tensor | None = None,
    query_mask: torch.Tensor | None = None,
    key_mask: torch.Tensor | None = None,
    causal: bool = False,
    dropout: float = 0.0,
    past_rows: torch.Tensor | None = None,
    use_cache: bool = False,
    grid_size: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Eager attention with an EA step between the logits and the softmax; every EA model's attention calls it.

    Args:
        query: [B, H, Q, D]; key, value: [B, H, K, D].
        evolving_attention: this layer's EA step, or None (a chain's first layer, or EA off).
        previous_logits: [B, H, Q, K], the previous layer's evolved logits.
        position_bias: added to the logits before EA (e.g. T5's relative position bias), broadcastable to [B, H, Q, K].
        query_mask, key_mask: [B, Q], [B, K], True at real positions. causal: mask future keys (offset K - Q).
        past_rows, use_cache, grid_size: see `EvolvingAttentionStep.forward`.
    Returns:
        output [B, Q, H, D], probabilities [B, H, Q, K] (after EA and dropout), evolved logits [B, H, Q, K] for the
        next layer, and the conv rows to cache (or None).
    """
    if scaling == 1.0:
        logits = torch.matmul(query, key.transpose(2, 3))
    elif evolving_attention is None or not evolving_attention.active:  # the host model's arithmetic, bit for bit
        logits = torch.matmul(query, key.transpose(2, 3)) * scaling
    else:  # scaling the queries is the same product, and reads L / D times less memory
        logits = torch.matmul(query * scaling, key.transpose(2, 3))
    if position_bias is not None:
        logits = logits + position_bias
    rows = None
    if evolving_attention is not None:
        if past_rows is not None and past_rows.shape[:2] != logits.shape[:2]:
            raise ValueError(
                f"The cache holds EA rows for batch and heads {tuple(past_rows.shape[:2])}, this layer computes "
                f"{tuple(logits.shape[:2])}: the cache comes from another model or another batch."
            )
        logits, rows = evolving_attention(
            logits, previous_logits, query_mask, key_mask, past_rows, use_cache, grid_size
        )
    probabilities = attention_probabilities(logits, key_mask, causal)
    if dropout > 0.0:
        probabilities = F.dropout(probabilities, p=dropout)
    output = torch.matmul(probabilities, value).transpose(1, 2)
    return output, probabilities, logits, rows


class EvolvingAttentionRows:
    """The part of an EA decoder's cache that transformers' caches lack: for each EA layer, the last k-1 rows of its
    mixed map M that the query-causal conv reads at the next decoding step (`ea_rows`, keyed by (layer index, is
    cross-attention)), reordered with the keys and values by beam search. `EvolvingAttentionCache` (encoder-decoders)
    and `EvolvingAttentionDynamicCache` (decoder-only models) add it to transformers' caches."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.ea_rows: dict[tuple[int, bool], torch.Tensor] = {}

    @property
    def key_value_layers(self) -> list:
        """The cache layers of the (self-attention) keys and values."""
        raise NotImplementedError

    @classmethod
    def adopt(cls, cache: Cache) -> "EvolvingAttentionRows | None":
        """This class's cache for an empty cache of the kind `generate()` makes, else None."""
        raise NotImplementedError

    @classmethod
    def from_cache(cls, cache: Cache | None, batch_size: int, num_heads: int) -> "EvolvingAttentionRows":
        """Use `cache` if it is one of this model's, for this batch and `num_heads` key/value heads; adopt an empty
        cache of the kind `generate()` makes; refuse others with a clear error."""
        if isinstance(cache, cls):
            layers = [layer for layer in cache.key_value_layers if layer.is_initialized]
            cached = {tuple(layer.keys.shape[:2]) for layer in layers}
            if cached - {(batch_size, num_heads)}:
                raise ValueError(
                    f"The cache holds keys for (batch, heads) {sorted(cached)}, this call has "
                    f"{(batch_size, num_heads)}: it comes from another model or another batch."
                )
            return cache
        adopted = cls.adopt(cache)
        if adopted is not None:
            return adopted
        empty = cache.get_seq_length() == 0
        raise ValueError(
            f"An EA model needs its {cls.__name__} (or an empty {cls.__bases__[-1].__name__}, as `generate()` makes), "
            f"got a {type(cache).__name__} holding {cache.get_seq_length()} tokens: "
            + (
                "static and other fixed-size caches (`cache_implementation=...`) cannot hold the EA rows that the "
                "query-causal convolution needs; use the default dynamic cache."
                if empty
                else "it comes from another model, and lacks the EA rows that the query-causal convolution needs."
            )
        )

    def reorder_cache(self, beam_idx: torch.LongTensor):
        super().reorder_cache(beam_idx)
        self.ea_rows = {k: rows.index_select(0, beam_idx.to(rows.device)) for k, rows in self.ea_rows.items()}

    def batch_repeat_interleave(self, repeats: int):
        super().batch_repeat_interleave(repeats)
        self.ea_rows = {k: rows.repeat_interleave(repeats, dim=0) for k, rows in self.ea_rows.items()}

    def batch_select_indices(self, indices: torch.Tensor):
        super().batch_select_indices(indices)
        self.ea_rows = {k: rows[indices] for k, rows in self.ea_rows.items()}

    def reset(self):
        super().reset()
        self.ea_rows.clear()

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("An EA cache keeps only the conv rows of the last step and cannot be cropped.")

    @property
    def is_croppable(self) -> bool:
        return False


class EvolvingAttentionCache(EvolvingAttentionRows, EncoderDecoderCache):
    """transformers' `EncoderDecoderCache` plus the EA rows of each decoder layer's self- and cross-attention;
    shared by the EA encoder-decoders' attention modules."""

    @property
    def key_value_layers(self) -> list:
        return self.self_attention_cache.layers

    @classmethod
    def adopt(cls, cache: Cache | None) -> "EvolvingAttentionCache | None":
        if cache is None:
            return cls(DynamicCache(), DynamicCache())
        if type(cache) is EncoderDecoderCache and cache.get_seq_length() == 0:
            if type(cache.self_attention_cache) is DynamicCache:
                return cls(cache.self_attention_cache, cache.cross_attention_cache)
        return None

    def keys_and_values(
        self, layer_idx: int, is_cross_attention: bool, project: Callable[[], tuple[torch.Tensor, torch.Tensor]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A decoder layer's keys and values [B, H, K, D]: for cross-attention those the first step stored; else
        `project()`'s new ones [B, H, L, D], appended to the layer's cached ones."""
        if is_cross_attention and self.is_updated.get(layer_idx):
            layer = self.cross_attention_cache.layers[layer_idx]
            return layer.keys, layer.values
        layer_cache = self.cross_attention_cache if is_cross_attention else self.self_attention_cache
        key, value = layer_cache.update(*project(), layer_idx)
        if is_cross_attention:
            self.is_updated[layer_idx] = True
        return key, value


class EvolvingAttentionDynamicCache(EvolvingAttentionRows, DynamicCache):
    """transformers' `DynamicCache` plus the EA rows of each layer's causal self-attention; the cache of the EA
    decoder-only models (EA-Llama, EA-Qwen2)."""

    @property
    def key_value_layers(self) -> list:
        return self.layers

    @classmethod
    def adopt(cls, cache: Cache | None) -> "EvolvingAttentionDynamicCache | None":
        if cache is None or (type(cache) is DynamicCache and cache.get_seq_length() == 0):
            return cls()
        return None


def decoder_cache_and_masks(
    cache: Cache | None,
    use_cache: bool | None,
    num_heads: int,
    shape: tuple[int, int],
    attention_mask: torch.Tensor | None,
    encoder_hidden_states: torch.Tensor | None,
    encoder_attention_mask: torch.Tensor | None,
    mask_name: str = "decoder_attention_mask",
):
    """What an EA decoder needs for `shape` = (B, L) new tokens: its `EvolvingAttentionCache` (None without caching),
    the number of cached positions `past`, and the padding masks: queries [B, L], keys [B, past + L] and encoder
    keys [B, S] (None where nothing is padded)."""
    batch_size, length = shape
    if cache is not None or use_cache:
        cache = EvolvingAttentionCache.from_cache(cache, batch_size, num_heads)
    past_length = cache.get_seq_length() if cache is not None else 0
    key_mask = padding_mask_from(attention_mask, (batch_size, past_length + length), mask_name)
    query_mask = key_mask[:, past_length:] if key_mask is not None else None
    encoder_mask = None
    if encoder_hidden_states is not None:
        expected = (batch_size, encoder_hidden_states.shape[1])
        encoder_mask = padding_mask_from(encoder_attention_mask, expected, "encoder_attention_mask")
    return cache, past_length, query_mask, key_mask, encoder_mask


class EAPreTrainedMixin:
    """Class flags and behaviour shared by every EA `PreTrainedModel`: eager attention only, EA conv init, and a loss
    that Trainer must not rescale under gradient accumulation."""

    _supports_sdpa = False
    _supports_flash_attn = False
    _supports_flex_attn = False
    _supports_attention_backend = False
    # Heads whose loss is a mean over examples: Trainer must not treat it as a sum over `num_items_in_batch`. Heads
    # with a token-level loss set it to True and normalise by `num_items_in_batch` themselves.
    accepts_loss_kwargs = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        wrapped = [base for base in cls.__bases__ if issubclass(base, EAPreTrainedMixin)]
        if cls.__module__.startswith("torch.") and wrapped:
            # a wrapper class made at run time (FSDP2's `fully_shard` turns a model into `FSDP<Name>`, defined in
            # torch): it takes the wrapped EA class's name and module, so that `save_pretrained` writes that class's
            # `auto_map` entry and code, and the folder loads as remote code
            cls.__module__, cls.__name__, cls.__qualname__ = (
                wrapped[0].__module__,
                wrapped[0].__name__,
                wrapped[0].__qualname__,
            )

    def get_correct_attn_implementation(self, requested_attention: str | None, is_init_check: bool = False) -> str:
        if requested_attention not in (None, "eager"):
            raise ValueError(
                f"{type(self).__name__} cannot use attn_implementation={requested_attention!r}: evolving attention "
                "needs every layer's attention logits, which fused kernels (sdpa, flash, flex) never materialise. "
                "Use attn_implementation='eager' (the default)."
            )
        return "eager"

    def _init_weights(self, module):
        if isinstance(module, (EvolvingAttentionConv, EvolvingAttentionGridConv)):
            module.reset_parameters()
        else:
            super()._init_weights(module)
