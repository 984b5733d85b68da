"""The evolving-attention (EA) operation, shared by every ea-hf model.

Wang et al., "Convolution-enhanced Evolving Attention Networks" (TPAMI 2023). For attention layer i:

    M_i = (1 - beta) * S_i + beta * E_{i-1}
    E_i = alpha * act(Conv2d(M_i)) + (1 - alpha) * M_i
    A_i = softmax(E_i + mask)

with S_i this layer's logits [B, H, Q, K] (before any mask), E_{i-1} the evolved logits of the previous layer of the
chain, and a Conv2d(H, H, k) over the (query, key) plane with the heads as channels. Unlike the authors' code, padded
positions are zeroed before the conv (so padding never leaks into real positions), the mask is applied only right
before the softmax, and decoders use a conv that is causal along the query axis.

This file holds the operation, the softmax that follows it, and the pieces every EA config and model class shares.
"""

import time

import torch
from torch import nn
from torch.nn import functional as F
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache, EncoderDecoderCache
from transformers.utils import logging


logger = logging.get_logger(__name__)

# applied to the conv's output, which nothing else reads: in place where the activation can be
EA_ACTIVATIONS = {
    "relu": lambda: nn.ReLU(inplace=True),
    "leaky_relu": lambda: nn.LeakyReLU(0.01, inplace=True),
    "gelu": nn.GELU,
    "identity": nn.Identity,
}


def validate_evolving_attention_config(config) -> None:
    """Raise a `ValueError` naming the field when an EA config value is out of range."""
    for name in ("ea_alpha", "ea_beta"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise ValueError(f"`{name}` must be a number in [0, 1], got {value!r}.")
    kernel_size = config.ea_kernel_size
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"`ea_kernel_size` must be an odd positive integer (1, 3, 5, ...), got {kernel_size!r}.")
    if getattr(config, "ea_conv", "raster") not in ("raster", "grid"):
        raise ValueError(f"`ea_conv` must be 'raster' or 'grid', got {config.ea_conv!r}.")
    if config.ea_activation not in EA_ACTIVATIONS:
        raise ValueError(f"`ea_activation` must be one of {sorted(EA_ACTIVATIONS)}, got {config.ea_activation!r}.")


class EAConfigMixin:
    """Shared by the EA configs: validation, and loading a vanilla host config (e.g. `bert`) with EA fields added.

    A subclass sets `host_model_type` (the vanilla `model_type` it converts), `default_auto_map` (the remote-code
    class of every head, so that a saved folder loads each head with `trust_remote_code=True`) and declares the `ea_*`
    fields.
    """

    host_model_type: str
    default_auto_map: dict[str, str]

    def __post_init__(self, **kwargs):
        validate_evolving_attention_config(self)
        if getattr(self, "auto_map", None) is None:
            self.auto_map = dict(self.default_auto_map)
        super().__post_init__(**kwargs)

    @classmethod
    def get_config_dict(cls, pretrained_model_name_or_path, **kwargs):
        config_dict, kwargs = super().get_config_dict(pretrained_model_name_or_path, **kwargs)
        model_type = config_dict.get("model_type")
        if model_type == cls.host_model_type:
            ea_fields = {name: cls.__dataclass_fields__[name].default for name in cls.__dataclass_fields__}
            ea_fields = {name: value for name, value in ea_fields.items() if name.startswith("ea_")}
            logger.warning(
                f"Converting a vanilla `{model_type}` config to `{cls.model_type}` ({cls.__name__}): adding evolving "
                f"attention with {', '.join(f'{k}={kwargs.get(k, v)}' for k, v in ea_fields.items())}; the EA "
                "convolutions are new weights."
            )
            config_dict = {**config_dict, "model_type": cls.model_type}
        elif model_type is not None and model_type != cls.model_type:
            raise ValueError(
                f"{pretrained_model_name_or_path} holds a `{model_type}` checkpoint; {cls.__name__} loads only "
                f"`{cls.model_type}` or vanilla `{cls.host_model_type}` checkpoints."
            )
        return config_dict, kwargs


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


def records_graph(*tensors: torch.Tensor) -> bool:
    """Whether autograd records operations on `tensors` (then no tensor it saves may be modified in place)."""
    return torch.is_grad_enabled() and any(tensor.requires_grad for tensor in tensors)


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


# Exact formulations of the EA conv for eager CPU inference: which is fastest depends on the CPU, oneDNN's build,
# the map's shape and the thread count (at BERT-base's [1, 12, 512, 512] one CPU ran Conv3d 10x slower than Conv2d,
# another 5-9x; at [2, 12, 512, 512] Conv3d was the faster there), so `EvolvingAttentionConv` times them on the running
# machine.
CPU_KERNELS = {
    "conv2d": nn.Conv2d.forward,  # oneDNN's Conv2d on the [B, C, rows, K] map as it lies
    "conv2d_channels_last": channels_last_kernel,
    "conv3d": conv3d_kernel,
    "conv3d_row_blocks": lambda conv, input: conv3d_kernel(conv, input, block_bytes=6 * 2**20),
}


class EvolvingAttentionConv(nn.Conv2d):
    """EA's `nn.Conv2d(H, H, k)` over the (query, key) plane of [B, H, Q, K] maps, heads as channels; zero padding
    (a query-causal conv pads only the key axis: `EvolvingAttention` puts the k-1 rows above the first query on top
    of its input). Initialised as the identity (a Dirac kernel, zero bias), so that EA starts close to its host model.

    Same constructor and forward as `nn.Conv2d`, so that hooks and wrappers (PEFT's LoRA) apply. In eager inference
    on the CPU it runs the fastest of `CPU_KERNELS` on this machine for the map's shape: each is timed once, when a
    shape first occurs (as cuDNN's benchmark mode does; rows and keys rounded up to a power of two), and the choice is
    kept for the process in `cpu_choices`. Set `EvolvingAttentionConv.cpu_kernel` to a name of `CPU_KERNELS` to use
    that one instead. With autograd, on other devices and while tracing it is `nn.Conv2d`'s own forward.
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
        plain = self.stride != (1, 1) or self.dilation != (1, 1) or self.groups != 1 or self.padding_mode != "zeros"
        if plain or input.device.type != "cpu" or is_tracing() or records_graph(input, self.weight):
            return super().forward(input)
        return CPU_KERNELS[self.cpu_kernel or self.fastest_cpu_kernel(input)](self, input)

    def fastest_cpu_kernel(self, input: torch.Tensor) -> str:
        """The name of the fastest of `CPU_KERNELS` for maps like `input`, timed the first time such a map occurs."""
        bucket = [1 << max(size - 1, 0).bit_length() for size in input.shape[2:]]
        key = (*input.shape[:2], *bucket, self.out_channels, *self.kernel_size, *self.padding, input.dtype)
        key += (torch.get_num_threads(),)
        if key not in self.cpu_choices:
            seconds = {}
            for name, kernel in CPU_KERNELS.items():
                kernel(self, input)  # a first call allocates what later calls reuse
                start = time.perf_counter()
                kernel(self, input)
                seconds[name] = time.perf_counter() - start
            self.cpu_choices[key] = min(seconds, key=seconds.get)
        return self.cpu_choices[key]


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

    def forward(self, mixed: torch.Tensor, grid_size: tuple[int, int]) -> torch.Tensor:
        """mixed: M [B, H, N, N] with N = p + h * w tokens (raster order), grid_size = (h, w). Returns [B, H, N, N]."""
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


class EvolvingAttention(nn.Module):
    """One EA step of a chain: mixes this layer's logits with the previous layer's evolved logits and convolves them.

    Models build one for every attention layer of a chain but the first, which has no predecessor (E_0 = S_0) and
    forwards its raw logits; the next layer zeroes their padded positions.

    Args:
        config: an EA config (`ea_alpha`, `ea_beta`, `ea_kernel_size`, `ea_activation`, `ea_conv`).
        num_heads: H, the conv's channels.
        causal: causal self-attention: future key columns (j > i + K - Q) are zeroed and the conv is query-causal.
        query_causal: the conv reads only the current and earlier query rows (the k-1 rows above the first query are
            zeros, or a decoding cache's rows). Defaults to `causal`; decoder cross-attention sets it alone.
    """

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
        if not self.active:
            return logits, None
        keep = valid_positions(logits, query_mask, key_mask, self.causal)
        if previous_logits is None or previous_logits.shape != logits.shape:  # a chain's first map: E_0 = S_0
            return (logits if keep is None else logits.masked_fill(~keep, 0.0)), None
        mixed = torch.lerp(logits, previous_logits, self.beta)  # M = (1 - beta) * S + beta * E_prev
        if keep is not None:
            mixed.masked_fill_(~keep, 0.0)  # zero, the conv's border value, at padded and future positions
        if self.conv is None:  # alpha = 0
            return mixed, None
        rows = None
        if self.grid:
            if grid_size is None:
                raise ValueError("The 2-D grid conv (`ea_conv='grid'`) needs the patch grid size of the image.")
            convolved = self.conv(mixed, grid_size)
        elif self.rows_above:  # query-causal: the rows above the first query (earlier steps', or zeros) on top
            if past_rows is None:
                past_rows = mixed.new_zeros(*mixed.shape[:2], self.rows_above, mixed.shape[-1])
            past_rows = F.pad(past_rows, (0, mixed.shape[-1] - past_rows.shape[-1]))  # zero at keys they did not see
            stacked = torch.cat([past_rows, mixed], dim=2)
            # a copy: a view would keep the whole stacked map alive in the cache
            rows = stacked[:, :, -self.rows_above :].clone() if use_cache else None
            convolved = self.conv(stacked)
        else:
            convolved = self.conv(mixed)
        convolved = self.activation(convolved)
        # E = alpha * act(conv(M)) + (1 - alpha) * M, into M unless autograd saved M for the conv's backward
        if records_graph(mixed, convolved):
            return torch.lerp(mixed, convolved, self.alpha), rows
        return mixed.lerp_(convolved, self.alpha), rows


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
    evolving_attention: EvolvingAttention | None,
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
        past_rows, use_cache, grid_size: see `EvolvingAttention.forward`.
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


class EvolvingAttentionCache(EncoderDecoderCache):
    """transformers' `EncoderDecoderCache` plus, for each EA decoder layer, the last k-1 rows of its mixed map M that
    the query-causal conv reads at the next decoding step (`ea_rows`, keyed "self.<layer>" and "cross.<layer>"). Beam
    search reorders them with the keys and values."""

    def __init__(self, *caches):
        super().__init__(*caches)
        self.ea_rows: dict[str, torch.Tensor] = {}

    @classmethod
    def from_cache(cls, cache: Cache | None, batch_size: int, num_heads: int) -> "EvolvingAttentionCache":
        """Use `cache` if it is one of this model's, for this batch; adopt an empty `EncoderDecoderCache` (as
        `generate()` creates); refuse others with a clear error."""
        if isinstance(cache, cls):
            layers = [layer for layer in cache.self_attention_cache.layers if layer.is_initialized]
            cached = {tuple(layer.keys.shape[:2]) for layer in layers}
            if cached - {(batch_size, num_heads)}:
                raise ValueError(
                    f"The cache holds keys for (batch, heads) {sorted(cached)}, this call has "
                    f"{(batch_size, num_heads)}: it comes from another model or another batch."
                )
            return cache
        if cache is None:
            return cls(DynamicCache(), DynamicCache())
        if isinstance(cache, EncoderDecoderCache) and cache.get_seq_length() == 0:
            return cls(cache.self_attention_cache, cache.cross_attention_cache)
        raise ValueError(
            f"An EA decoder needs an EvolvingAttentionCache (or an empty EncoderDecoderCache), got a "
            f"{type(cache).__name__} holding {cache.get_seq_length()} tokens: it comes from another model, and lacks "
            "the EA rows that the query-causal convolution needs."
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

    def __init__(self, config, *inputs, **kwargs):
        # values set after the config was built (`from_pretrained(path, ea_alpha=...)`) are checked here
        if isinstance(config, EAConfigMixin):
            validate_evolving_attention_config(config)
        super().__init__(config, *inputs, **kwargs)

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
