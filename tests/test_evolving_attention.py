"""Properties of the EA step itself (docs/mechanism.md), over shapes, kernel sizes and alpha/beta; and the
2-D grid conv of image models against a naive 4-D convolution."""

import copy
import functools
import itertools
import time

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import PreTrainedConfig

from ea_hf import EABertConfig, EvolvingAttentionStep, attention_probabilities, evolving_attention
from ea_hf.cpu_conv_kernels import CPU_KERNELS, conv3d_kernel
from ea_hf.evolving_attention import EvolvingAttentionConv, EvolvingAttentionGridConv
from ea_hf.fused_evolving_attention import LAYOUTS


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
        monkeypatch.setattr(EvolvingAttentionStep, "layout", "contiguous")  # the kernels take maps as they lie
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


def fused_case(activation, causal, query_causal, past, padded, dtype=torch.float64, shape=(2, 3, 5, 7), seed=0):
    """An EA step away from its identity init, and (S, E_prev, past rows or None) requiring grad with its masks."""
    torch.manual_seed(seed)
    batch_size, num_heads, num_queries, num_keys = shape
    config = ea_config(0.4, 0.3, 3, activation)
    step = EvolvingAttentionStep(config, num_heads, causal=causal, query_causal=query_causal).to(dtype)
    torch.nn.init.normal_(step.conv.weight, std=0.3)
    torch.nn.init.normal_(step.conv.bias, std=0.3)
    if causal:
        num_keys = num_queries + (2 if past else 0)  # a decoding step sees the cached keys too
    tensors = [torch.randn(batch_size, num_heads, num_queries, num_keys, dtype=dtype) for _ in range(2)]
    if past and step.rows_above:
        tensors.append(torch.randn(batch_size, num_heads, step.rows_above, num_keys - 1, dtype=dtype))
    query_mask = key_mask = None
    if padded:
        key_mask = torch.ones(batch_size, num_keys, dtype=torch.bool)
        key_mask[0, -2:] = False
        query_mask = key_mask[:, num_keys - num_queries :].clone() if causal else torch.ones(batch_size, num_queries)
        query_mask = query_mask.bool()
        query_mask[-1, -1] = False
    return step, [t.requires_grad_() for t in tensors], query_mask, key_mask


def step_outputs(step, tensors, query_mask, key_mask, fused):
    """E and the rows to cache of `step` (fused or its reference forward) on (S, E_prev[, past rows])."""
    step.fused = fused
    past_rows = tensors[2] if len(tensors) > 2 else None
    evolved, rows = step(tensors[0], tensors[1], query_mask, key_mask, past_rows, use_cache=bool(step.rows_above))
    return (evolved,) if rows is None else (evolved, rows)


def output_gradients(step, tensors, outputs):
    """Gradients of sum(outputs * fixed random weights) with respect to the inputs and the conv's parameters."""
    generator = torch.Generator().manual_seed(1)
    loss = sum((o * torch.randn(o.shape, generator=generator).to(o.dtype)).sum() for o in outputs)
    return torch.autograd.grad(loss, [*tensors, step.conv.weight, step.conv.bias])


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "gelu", "identity"])
@pytest.mark.parametrize(
    "causal, query_causal, past",
    [(False, False, False), (True, True, False), (True, True, True), (False, True, True)],
    ids=["encoder", "causal", "causal cached rows", "cross-attention cached rows"],
)
def test_fused_step_equals_the_reference(monkeypatch, layout, activation, causal, query_causal, past):
    """The fused step (one autograd Function in training) gives the reference forward's E, cached rows and gradients
    (inputs, cached rows, conv weight and bias) in fp64, with padding, causal maps and cached decoder rows; its own
    backward passes gradcheck."""
    monkeypatch.setattr(EvolvingAttentionStep, "layout", layout)
    step, tensors, query_mask, key_mask = fused_case(activation, causal, query_causal, past, padded=True)
    reference = step_outputs(step, tensors, query_mask, key_mask, fused=False)
    fused = step_outputs(step, tensors, query_mask, key_mask, fused=True)
    assert len(fused) == len(reference)
    for got, expected in zip(fused, reference):
        torch.testing.assert_close(got, expected, atol=1e-12, rtol=0)
    expected = output_gradients(step, tensors, reference)
    for got, want in zip(output_gradients(step, tensors, fused), expected):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=0)
    if activation != "gelu" and layout == "contiguous":  # gelu's backward is aten's; the layouts share the math
        parameters = [step.conv.weight, step.conv.bias]
        assert torch.autograd.gradcheck(
            lambda *inputs: step_outputs(step, list(inputs[: len(tensors)]), query_mask, key_mask, fused=True),
            [*tensors, *parameters],
        )


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("shape", [(4, 12, 128, 128), (1, 12, 512, 512)], ids=["4x128", "1x512"])
def test_fused_step_on_bert_base_maps_in_fp32(monkeypatch, layout, shape):
    """On BERT-base's maps in fp32 the fused step's E and input gradients are the reference's within 1e-5; the conv's
    weight and bias gradients (sums over the whole map, where fp32 itself errs by about 1e-5 of their size) are as
    close to the exact fp64 values as the reference's, within 1e-5 of their size."""
    monkeypatch.setattr(EvolvingAttentionStep, "layout", layout)
    step, tensors, _, _ = fused_case("relu", False, False, False, padded=False, dtype=torch.float32, shape=shape)
    reference = step_outputs(step, tensors, None, None, fused=False)
    fused = step_outputs(step, tensors, None, None, fused=True)
    torch.testing.assert_close(fused[0], reference[0], atol=1e-5, rtol=1e-5)
    got, want = output_gradients(step, tensors, fused), output_gradients(step, tensors, reference)
    for name, a, b in zip(["logits", "previous logits"], got, want):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=name)
    step64, tensors64 = copy.deepcopy(step).double(), [t.detach().double().requires_grad_() for t in tensors]
    exact = output_gradients(step64, tensors64, step_outputs(step64, tensors64, None, None, fused=False))
    for name, a, b, truth in zip(["weight", "bias"], got[2:], want[2:], exact[2:]):
        error, reference_error = ((t.double() - truth).abs().max().item() for t in (a, b))
        assert error <= 2 * reference_error + 1e-5 * truth.abs().max().item(), (name, error, reference_error)


def test_fused_step_under_autocast():
    """Under autocast (what Trainer's `--bf16` uses) the conv computes in bfloat16 on float32 weights: the fused step
    gives the reference's E and gradients, the weight's in float32."""
    step, tensors, query_mask, key_mask = fused_case("relu", True, True, False, padded=True, dtype=torch.float32)
    tensors = [t.detach().bfloat16().requires_grad_() for t in tensors]  # the logits of matmuls under autocast
    results = []
    for fused in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outputs = step_outputs(step, tensors, query_mask, key_mask, fused)
        results.append((outputs, output_gradients(step, tensors, outputs)))
    (reference, expected), (fused, got) = results
    for a, b in zip([*fused, *got], [*reference, *expected]):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b, atol=2e-2, rtol=2e-2)
    assert got[-2].dtype == torch.float32


def saved_bytes(function) -> int:
    """The bytes of the distinct storages autograd saves while `function()` runs (parameters excluded)."""
    storages = {}

    def pack(tensor):
        if not isinstance(tensor, torch.nn.Parameter):
            storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        function()
    return sum(storages.values())


def test_fused_step_saves_the_mixed_map_and_sign_bits(monkeypatch):
    """In training the reference keeps two float maps a layer for its backward (M and act(conv(M))); the fused step
    keeps M and one bool per element: 1.25 maps in fp32."""
    monkeypatch.setattr(EvolvingAttentionStep, "layout", "contiguous")
    shape = (2, 4, 32, 32)
    step, tensors, _, _ = fused_case("relu", False, False, False, padded=False, dtype=torch.float32, shape=shape)
    map_bytes = tensors[0].numel() * 4
    saved = {fused: saved_bytes(lambda: step_outputs(step, tensors, None, None, fused)) for fused in (False, True)}
    assert saved[False] == 2 * map_bytes
    assert saved[True] == map_bytes + map_bytes // 4


def test_hooked_or_wrapped_convs_run_the_reference():
    """A hook on the conv (or a wrapper such as PEFT's LoRA in its place) needs the conv called as a module on M: the
    step runs its reference forward, and the hook sees it."""
    step, tensors, _, _ = fused_case("relu", False, False, False, padded=False)
    assert step.runs_fused()
    seen = []
    handle = step.conv.register_forward_hook(lambda module, inputs, output: seen.append(output.shape))
    assert not step.runs_fused()
    step(tensors[0], tensors[1])
    handle.remove()
    assert seen == [tensors[0].shape]


def test_fused_layout_is_chosen_by_timing_once_per_shape(monkeypatch):
    """The first map of a shape times both layouts (inference and training apart) and keeps the faster; maps in the
    same power-of-two bucket reuse the choice."""
    monkeypatch.setattr(EvolvingAttentionStep, "layout_choices", {})
    step, tensors, _, _ = fused_case("relu", False, False, False, padded=False, dtype=torch.float32)
    now, layouts = [0.0], []

    def clock():  # a channels-last call takes 0.1 s, a contiguous one 1 s
        now[0] += 0.1 if layouts and layouts[-1] == "channels_last" else 1.0
        return now[0]

    original = evolving_attention.fused_forward
    monkeypatch.setattr(time, "perf_counter", clock)
    monkeypatch.setattr(
        evolving_attention,
        "fused_forward",
        lambda step, *args, **kwargs: layouts.append(step.layout) or original(step, *args, **kwargs),
    )
    with torch.no_grad():
        step(tensors[0], tensors[1])
    assert layouts == ["contiguous"] * 3 + ["channels_last"] * 4  # warm-up and two timed calls each, then the run
    assert list(EvolvingAttentionStep.layout_choices.values()) == ["channels_last"]
    layouts.clear()
    with torch.no_grad():
        step(tensors[0][..., :6], tensors[1][..., :6])  # 5 x 6 is in 5 x 7's bucket (8 x 8)
    assert layouts == ["channels_last"]
    step(tensors[0], tensors[1])  # training: timed on its own
    assert len(EvolvingAttentionStep.layout_choices) == 2


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
