"""Properties of the EA step itself (docs/mechanism.md), over shapes, kernel sizes and alpha/beta; and the
2-D grid conv of image models against a naive 4-D convolution."""

import functools
import itertools
import time

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import PreTrainedConfig

from ea_hf import EABertConfig, EvolvingAttentionStep, attention_probabilities
from ea_hf.cpu_conv_kernels import CPU_KERNELS, conv3d_kernel
from ea_hf.evolving_attention import EvolvingAttentionConv, EvolvingAttentionGridConv


def ea_config(alpha=0.5, beta=0.5, kernel_size=3, activation="relu"):
    return EABertConfig(ea_alpha=alpha, ea_beta=beta, ea_kernel_size=kernel_size, ea_activation=activation)


def make_chain(num_heads, alpha, beta, kernel_size, causal=False, query_causal=None, num_layers=3, seed=0):
    torch.manual_seed(seed)
    layers = [
        EvolvingAttentionStep(ea_config(alpha, beta, kernel_size), num_heads, causal=causal, query_causal=query_causal)
        for _ in range(num_layers)
    ]
    for layer in layers:  # move away from the identity init so the conv really mixes neighbours and heads
        if layer.conv is not None:
            torch.nn.init.normal_(layer.conv.weight, std=0.3)
            torch.nn.init.normal_(layer.conv.bias, std=0.3)
    return layers


def run_chain(layers, logits_per_layer, query_mask=None, key_mask=None, causal=False):
    """Returns the evolved logits and the probabilities of each layer."""
    evolved, outputs = None, []
    for layer, logits in zip(layers, logits_per_layer):
        evolved, _ = layer(logits, evolved, query_mask, key_mask)
        outputs.append((evolved, attention_probabilities(evolved, key_mask, causal)))
    return outputs


alphas_betas = st.tuples(st.sampled_from([0.0, 0.3, 1.0]), st.sampled_from([0.0, 0.5, 1.0]))


@settings(max_examples=25, deadline=None)
@given(
    length=st.integers(1, 9),
    padding=st.integers(1, 6),
    num_heads=st.integers(1, 4),
    kernel_size=st.sampled_from([1, 3, 5]),
    alpha_beta=alphas_betas,
    left_padding=st.booleans(),
)
def test_padding_invariance(length, padding, num_heads, kernel_size, alpha_beta, left_padding):
    """A sequence alone and padded (right or left) gives the same evolved logits and probabilities."""
    alpha, beta = alpha_beta
    layers = make_chain(num_heads, alpha, beta, kernel_size)
    alone = [torch.randn(1, num_heads, length, length) for _ in layers]
    total = length + padding
    real = slice(padding, total) if left_padding else slice(0, length)
    padded = []
    for logits in alone:
        garbage = torch.randn(1, num_heads, total, total) * 100  # what padded tokens would produce
        garbage[:, :, real, real] = logits
        padded.append(garbage)
    mask = torch.zeros(1, total, dtype=torch.bool)
    mask[:, real] = True

    expected = run_chain(layers, alone)
    got = run_chain(layers, padded, mask, mask)
    for (e_evolved, e_probs), (g_evolved, g_probs) in zip(expected, got):
        torch.testing.assert_close(g_evolved[:, :, real, real], e_evolved, atol=1e-5, rtol=0)
        torch.testing.assert_close(g_probs[:, :, real, real], e_probs, atol=1e-5, rtol=0)
        assert g_probs[:, :, real][..., ~mask[0]].abs().max() == 0  # no weight on padded keys


@settings(max_examples=25, deadline=None)
@given(
    length=st.integers(2, 10),
    num_heads=st.integers(1, 4),
    kernel_size=st.sampled_from([1, 3, 5]),
    alpha_beta=alphas_betas,
    data=st.data(),
)
def test_causal_no_future_leak(length, num_heads, kernel_size, alpha_beta, data):
    """Causal self-attention: changing token t+1.. (rows and columns > t of every layer's logits) leaves every
    evolved logit and probability of rows <= t bit-identical."""
    t = data.draw(st.integers(0, length - 2))
    alpha, beta = alpha_beta
    layers = make_chain(num_heads, alpha, beta, kernel_size, causal=True)
    logits = [torch.randn(2, num_heads, length, length) for _ in layers]
    perturbed = []
    for layer_logits in logits:
        changed = layer_logits.clone()
        changed[:, :, t + 1 :, :] = torch.randn_like(changed[:, :, t + 1 :, :]) * 50
        changed[:, :, :, t + 1 :] = torch.randn_like(changed[:, :, :, t + 1 :]) * 50
        perturbed.append(changed)
    for (e_evolved, e_probs), (g_evolved, g_probs) in zip(
        run_chain(layers, logits, causal=True), run_chain(layers, perturbed, causal=True)
    ):
        assert torch.equal(g_evolved[:, :, : t + 1, : t + 1], e_evolved[:, :, : t + 1, : t + 1])
        assert torch.equal(g_probs[:, :, : t + 1], e_probs[:, :, : t + 1])
        assert torch.all(torch.triu(e_probs[0, 0], diagonal=1) == 0)


@pytest.mark.parametrize("kernel_size", [3, 5])
def test_query_causal_conv_for_cross_attention(kernel_size):
    """Cross-attention (query-causal only): later decoder rows never change earlier rows; all keys stay visible."""
    layers = make_chain(4, 0.7, 0.5, kernel_size, query_causal=True)
    logits = [torch.randn(1, 4, 6, 8) for _ in layers]
    perturbed = [x.clone() for x in logits]
    for x in perturbed:
        x[:, :, 3:] += 10
    for (e_evolved, _), (g_evolved, _) in zip(run_chain(layers, logits), run_chain(layers, perturbed)):
        assert torch.equal(g_evolved[:, :, :3], e_evolved[:, :, :3])
        assert not torch.equal(g_evolved[:, :, 3:], e_evolved[:, :, 3:])


@pytest.mark.parametrize("causal", [False, True])
def test_alpha_beta_zero_is_identity(causal):
    layer = make_chain(4, 0.0, 0.0, 3, causal=causal, num_layers=1)[0]
    logits, previous = torch.randn(2, 4, 5, 5), torch.randn(2, 4, 5, 5)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(layer(logits, previous, mask, mask)[0], logits)


def test_first_layer_and_new_chain_forward_the_logits():
    """E_0 = S_0: no mixing and no conv without a predecessor or when the previous map's shape differs."""
    layer = make_chain(2, 1.0, 0.5, 3, num_layers=1)[0]
    logits = torch.randn(1, 2, 4, 4)
    assert torch.equal(layer(logits, None)[0], logits)
    assert torch.equal(layer(logits, torch.randn(1, 2, 3, 3))[0], logits)
    assert not torch.equal(layer(logits, torch.randn(1, 2, 4, 4))[0], logits)


def test_recurrence_matches_the_formula():
    """E = alpha * act(conv(M)) + (1 - alpha) * M with M = (1 - beta) * S + beta * E_prev, zero-padded conv."""
    alpha, beta = 0.3, 0.6
    layer = make_chain(3, alpha, beta, 3, num_layers=1)[0]
    logits, previous = torch.randn(2, 3, 5, 7), torch.randn(2, 3, 5, 7)
    mixed = (1 - beta) * logits + beta * previous
    conv = torch.nn.functional.conv2d(mixed, layer.conv.weight, layer.conv.bias, padding=1)
    expected = alpha * torch.relu(conv) + (1 - alpha) * mixed
    torch.testing.assert_close(layer(logits, previous)[0], expected, atol=1e-6, rtol=1e-6)


def test_conv_starts_as_identity():
    """The conv is initialised as a Dirac kernel: with alpha = 1, beta = 0 and no activation, E = S."""
    config = EABertConfig(ea_alpha=1.0, ea_beta=0.0, ea_activation="identity")
    layer = EvolvingAttentionStep(config, num_heads=4)
    logits = torch.randn(2, 4, 6, 6)
    torch.testing.assert_close(layer(logits, torch.randn(2, 4, 6, 6))[0], logits)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("causal", [False, True])
def test_half_precision_has_no_inf_or_nan(dtype, causal):
    layers = [layer.to(dtype) for layer in make_chain(4, 0.5, 0.5, 3, causal=causal)]
    logits = [(torch.randn(3, 4, 6, 6) * 30).to(dtype) for _ in layers]
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[1, 2:] = False
    mask[2] = False  # a row whose keys are all masked
    for evolved, probs in run_chain(layers, logits, mask, mask, causal=causal):
        assert evolved.dtype == probs.dtype == dtype
        assert torch.isfinite(evolved).all() and torch.isfinite(probs).all()
        torch.testing.assert_close(probs.float().sum(-1), torch.ones(3, 4, 6), atol=1e-2, rtol=0)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("ea_alpha", 1.5, "ea_alpha"),
        ("ea_alpha", -0.1, "ea_alpha"),
        ("ea_beta", 2, "ea_beta"),
        ("ea_kernel_size", 4, "odd"),
        ("ea_kernel_size", 0, "odd"),
        ("ea_activation", "swish", "relu"),
    ],
)
def test_invalid_config_values_raise_value_error(field, value, message):
    with pytest.raises(ValueError, match=message):
        EABertConfig(**{field: value})


def test_values_set_after_the_config_was_built_are_checked(tmp_path):
    """`from_pretrained(folder, ea_alpha=...)` sets the value after the config was built: it is checked when set."""
    from ea_hf import EABertModel

    EABertModel(
        EABertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37)
    ).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="ea_alpha"):
        EABertModel.from_pretrained(tmp_path, ea_alpha=5.0)
    config = EABertConfig()
    with pytest.raises(ValueError, match="ea_kernel_size"):
        config.ea_kernel_size = 2


def test_wrongly_typed_config_value_names_the_field():
    with pytest.raises(Exception, match="ea_alpha"):
        EABertConfig(ea_alpha="high")


def test_ea_config_is_a_pretrained_config():
    config = EABertConfig(ea_alpha=0.2)
    assert isinstance(config, PreTrainedConfig)
    assert EABertConfig.from_dict(config.to_dict()).ea_alpha == 0.2


@pytest.mark.parametrize("kernel_size", [1, 3, 5])
@pytest.mark.parametrize("causal", [True, False], ids=["self-attention", "cross-attention"])
def test_incremental_rows_equal_the_full_computation(kernel_size, causal):
    """Decoding a query block at a time, with the rows each step returns fed to the next, gives the full map."""
    length, num_keys = 7, 5
    layers = make_chain(3, 0.6, 0.4, kernel_size, causal=causal, query_causal=True)
    keys = length if causal else num_keys
    logits = [torch.randn(2, 3, length, keys) for _ in layers]
    key_mask = torch.ones(2, keys, dtype=torch.bool)
    key_mask[1, :1] = False  # a padded key (left padding of the decoder, or encoder padding)
    query_mask = key_mask if causal else None
    full = [evolved for evolved, _ in run_chain(layers, logits, query_mask, key_mask)]
    rows = [None] * len(layers)
    for start, stop in [(0, 3), (3, 4), (4, 5), (5, 7)]:
        evolved = None
        width = stop if causal else keys
        for i, (layer, layer_logits) in enumerate(zip(layers, logits)):
            step_keys = key_mask[:, :width]
            step_queries = query_mask[:, start:stop] if causal else None
            step_logits = layer_logits[:, :, start:stop, :width]
            evolved, rows[i] = layer(step_logits, evolved, step_queries, step_keys, past_rows=rows[i], use_cache=True)
            torch.testing.assert_close(evolved, full[i][:, :, start:stop, :width], atol=1e-5, rtol=0)


@pytest.mark.parametrize("kernel", list(CPU_KERNELS) + ["row blocks of 1, 2 and 3 rows"])
@pytest.mark.parametrize("causal, query_causal", [(False, False), (True, True), (False, True)])
def test_cpu_kernels_equal_the_autograd_conv(monkeypatch, kernel, causal, query_causal):
    """Without autograd the CPU conv runs one of `CPU_KERNELS` (row blocks read their neighbours' rows): each gives the
    map of the one conv2d that autograd runs, for full maps and for cached decoding steps."""
    length, num_heads, batch_size = 7, 3, 2
    layers = make_chain(num_heads, 0.6, 0.4, 5, causal=causal, query_causal=query_causal)
    logits = [torch.randn(batch_size, num_heads, length, length) for _ in layers]
    key_mask = torch.ones(batch_size, length, dtype=torch.bool)
    key_mask[1, :2] = False
    reference = [evolved.detach() for evolved, _ in run_chain(layers, logits, key_mask, key_mask, causal)]
    kernels = {kernel: CPU_KERNELS.get(kernel)}
    if kernel not in CPU_KERNELS:
        row_bytes = batch_size * num_heads * length * logits[0].element_size()
        kernels = {rows: functools.partial(conv3d_kernel, block_bytes=rows * row_bytes) for rows in (1, 2, 3)}
    for name, function in kernels.items():
        calls = []
        monkeypatch.setitem(CPU_KERNELS, "under test", lambda conv, x: calls.append(1) or function(conv, x))
        monkeypatch.setattr(EvolvingAttentionConv, "cpu_kernel", "under test")
        with torch.no_grad():
            blocked = [evolved for evolved, _ in run_chain(layers, logits, key_mask, key_mask, causal)]
            assert len(calls) == len(layers) - 1  # the first layer has no conv
            for expected, got in zip(reference, blocked):
                torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5, msg=name)
            if query_causal:  # two decoding steps of 4 and 3 queries, the first's conv rows cached for the second
                rows = [None] * len(layers)
                for start, stop in [(0, 4), (4, 7)]:
                    evolved = None
                    for i, (layer, layer_logits) in enumerate(zip(layers, logits)):
                        width = stop if causal else length  # self-attention sees the keys up to its last query
                        step, keys = layer_logits[:, :, start:stop, :width], key_mask[:, :width]
                        evolved, rows[i] = layer(step, evolved, key_mask[:, start:stop], keys, rows[i], use_cache=True)
                        expected = reference[i][:, :, start:stop, :width]
                        torch.testing.assert_close(evolved, expected, atol=1e-5, rtol=1e-5, msg=name)


def test_cpu_kernel_is_chosen_by_timing_once_per_shape(monkeypatch):
    """The first map of a shape times every kernel and keeps the fastest; later maps of that shape (rows and keys in
    the same power-of-two bucket) reuse the choice without timing."""
    conv = EvolvingAttentionConv(4, 4, 3, padding=1)
    monkeypatch.setattr(EvolvingAttentionConv, "cpu_choices", {})
    calls = []
    for name, function in list(CPU_KERNELS.items()):
        monkeypatch.setitem(CPU_KERNELS, name, lambda c, x, n=name, f=function: calls.append(n) or f(c, x))
    now = [0.0]

    def clock():  # a kernel call takes 1 s, conv3d's 0.1 s
        now[0] += 0.1 if calls and calls[-1] == "conv3d" else 1.0
        return now[0]

    monkeypatch.setattr(time, "perf_counter", clock)
    x = torch.randn(2, 4, 9, 11)
    with torch.no_grad():
        torch.testing.assert_close(conv(x), torch.nn.functional.conv2d(x, conv.weight, conv.bias, padding=1))
        assert calls == [name for name in CPU_KERNELS for _ in range(2)] + ["conv3d"]  # warm-up and timed, then run
        assert list(EvolvingAttentionConv.cpu_choices.values()) == ["conv3d"]
        calls.clear()
        conv(torch.randn(2, 4, 12, 16))  # the same bucket (16 x 16): no timing, the kernel chosen runs once
        assert calls == ["conv3d"]
        conv(torch.randn(2, 4, 17, 16))  # another bucket: timed again
        assert len(EvolvingAttentionConv.cpu_choices) == 2


def naive_grid_conv(conv, mixed, grid_size):
    """The zero-padded 4-D convolution over (query row, query column, key row, key column), the first p tokens being
    isolated points (their only neighbour is themselves, at offset 0), by explicit loops."""
    (height, width), k = grid_size, conv.kernel_size
    batch_size, num_heads, num_tokens, _ = mixed.shape
    prefix, centre = num_tokens - height * width, k // 2

    def neighbour(token, dy, dx):
        if token < prefix:
            return token if dy == dx == 0 else None
        y, x = divmod(token - prefix, width)
        y, x = y + dy, x + dx
        return prefix + y * width + x if 0 <= y < height and 0 <= x < width else None

    out = conv.bias[None, :, None, None].expand(batch_size, num_heads, num_tokens, num_tokens).clone()
    for query, key in itertools.product(range(num_tokens), repeat=2):
        for a, b, c, d in itertools.product(range(k), repeat=4):
            q, kk = neighbour(query, a - centre, b - centre), neighbour(key, c - centre, d - centre)
            if q is not None and kk is not None:
                out[:, :, query, key] += mixed[:, :, q, kk] @ conv.weight[:, :, a, b, c, d].T
    return out


@pytest.mark.parametrize("prefix, grid_size", [(1, (2, 3)), (0, (3, 2)), (2, (2, 2))])
def test_grid_conv_is_the_4d_convolution_over_the_patch_grid(prefix, grid_size):
    torch.manual_seed(0)
    conv = EvolvingAttentionGridConv(3, 3)
    assert conv.weight.shape == (3, 3, 3, 3, 3, 3)
    num_tokens = prefix + grid_size[0] * grid_size[1]
    mixed = torch.randn(2, 3, num_tokens, num_tokens, dtype=torch.float64)
    torch.testing.assert_close(conv.double()(mixed, grid_size), mixed)  # identity at init
    with torch.no_grad():
        conv.weight.normal_()
        conv.bias.normal_()
        torch.testing.assert_close(conv(mixed, grid_size), naive_grid_conv(conv, mixed, grid_size))


def test_grid_conv_needs_a_grid_that_fits():
    conv = EvolvingAttentionGridConv(2, 3)
    with pytest.raises(ValueError, match="3x3 patch grid"):
        conv(torch.randn(1, 2, 5, 5), (3, 3))
