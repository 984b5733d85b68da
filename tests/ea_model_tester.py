"""The shared tester every EA model's test file subclasses (transformers' ModelTesterMixin is not in the wheel).

A subclass names its config class, its heads with their vanilla twins, and how to build tiny configs and inputs; the
tests here then check, for every head: forward/backward, standard outputs, padding invariance, exact equivalence with
the vanilla model when EA is off, save/load, eager-only attention, gradient checkpointing, remote code, and Trainer.
"""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import Trainer, TrainingArguments

from ea_hf.evolving_attention import EvolvingAttentionConv, EvolvingAttentionGridConv, EvolvingAttentionStep
from scripts.release.push_to_hub import BLOCK_EA_HF  # makes `import ea_hf` fail in a fresh interpreter


def run_without_ea_hf(code: str, tmp_path) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter where `ea_hf` cannot be imported, offline, with an empty HF_HOME."""
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", BLOCK_EA_HF + textwrap.dedent(code)], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def outputs_to_compare(output) -> dict[str, torch.Tensor]:
    """The tensors of a ModelOutput, hidden states and attentions included."""
    tensors = {}
    for key, value in output.items():
        if isinstance(value, torch.Tensor):
            tensors[key] = value
        elif isinstance(value, tuple):
            tensors.update({f"{key}.{i}": v for i, v in enumerate(value) if isinstance(v, torch.Tensor)})
    return tensors


def conv_parameters(model) -> dict[str, torch.Tensor]:
    return {name: p for name, p in model.named_parameters() if ".evolving_attention.conv." in name}


class EAModelTesterMixin:
    """Subclasses set `config_class`, `heads` [(EA class, vanilla class)], and implement `make_config` and
    `make_inputs`. `make_inputs(model_class, labels)` returns a batch whose second example is padded. Tests that take
    `head` run once per (EA class, vanilla class) pair (see conftest.py)."""

    config_class = None
    heads: list = []
    atol = 1e-5
    rtol = 0.0  # models whose hidden states grow large (T5) compare relative to the tensor's magnitude

    def assert_close(self, got, expected, message):
        """max |got - expected| <= atol + rtol * max |expected|."""
        assert got.shape == expected.shape, message
        difference = (got - expected).abs().max().item() if got.numel() else 0.0
        assert difference <= self.atol + self.rtol * expected.abs().max().item(), f"{message}: {difference}"

    ea_off = {"ea_encoder": False}  # config overrides that switch every EA chain off
    attention_outputs = ("attentions",)  # output keys holding per-layer attention probabilities
    hidden_states_outputs = ("hidden_states",)
    padded_inputs = ("input_ids", "attention_mask", "token_type_ids")  # inputs padded along their last axis

    def make_config(self, **overrides):
        raise NotImplementedError

    def make_inputs(self, model_class, labels: bool = False) -> dict:
        raise NotImplementedError

    vanilla_config_class = None  # the host model's config class (BertConfig, ...)

    def vanilla_config(self, config):
        """The host model's config with the same fields, the EA ones dropped."""
        fields = {k: v for k, v in config.to_dict().items() if not k.startswith("ea_")}
        fields.pop("model_type"), fields.pop("auto_map")
        return self.vanilla_config_class(**fields)

    def build(self, model_class, **overrides):
        torch.manual_seed(0)
        model = model_class(self.make_config(**overrides)).eval()
        with torch.no_grad():  # the conv leaves its identity init, so that tests see a conv that really mixes
            for conv in model.modules():
                if isinstance(conv, (EvolvingAttentionConv, EvolvingAttentionGridConv)):
                    conv.weight.normal_(std=0.3)
                    conv.bias.normal_(std=0.1)
        return model

    def test_forward_backward(self, head):
        model = self.build(head[0]).train()
        inputs = self.make_inputs(head[0], labels=True)
        output = model(**inputs)
        value = output.loss if output.get("loss") is not None else output[0].pow(2).mean()
        assert torch.isfinite(value)
        value.backward()
        grads = [p.grad for p in conv_parameters(model).values()]
        assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)

    def test_standard_outputs(self, head):
        model = self.build(head[0])
        config = model.config
        inputs = self.make_inputs(head[0])
        output = model(**inputs, output_attentions=True, output_hidden_states=True)
        for key in self.hidden_states_outputs:
            if output.get(key):
                assert len(output[key]) == config.num_hidden_layers + 1, key
        for key in self.attention_outputs:
            if output.get(key):
                assert len(output[key]) == config.num_hidden_layers, key
                for attention in output[key]:
                    assert attention.shape[1] == config.num_attention_heads
                    torch.testing.assert_close(attention.sum(-1), torch.ones_like(attention.sum(-1)))
        as_tuple = model(**inputs, return_dict=False)
        assert isinstance(as_tuple, tuple)
        torch.testing.assert_close(as_tuple[0], output[0])

    def test_attentions_are_the_evolved_probabilities(self, head):
        """`output_attentions` returns what the model used (after EA), not the vanilla softmax of the logits."""
        ea = self.build(head[0])
        vanilla = head[0](self.make_config(**self.ea_off)).eval()
        vanilla.load_state_dict(ea.state_dict(), strict=False)
        inputs = self.make_inputs(head[0])
        ea_output = ea(**inputs, output_attentions=True)
        vanilla_output = vanilla(**inputs, output_attentions=True)
        keys = [key for key in self.attention_outputs if ea_output.get(key)]
        torch.testing.assert_close(ea_output[keys[0]][0], vanilla_output[keys[0]][0])  # no predecessor: no EA
        for key in keys:
            assert (ea_output[key][-1] - vanilla_output[key][-1]).abs().max() > 1e-3, key

    def test_padding_invariance(self, head):
        """Each example alone gives the same outputs as inside a padded batch."""
        model = self.build(head[0])
        inputs = self.make_inputs(head[0])
        batch_size, padded_length = inputs["input_ids"].shape[0], inputs["input_ids"].shape[-1]
        batched = outputs_to_compare(model(**inputs, output_hidden_states=True))
        for i in range(batch_size):
            mask = inputs["attention_mask"][i].reshape(-1, padded_length)
            length = int(mask.any(0).nonzero().max()) + 1
            alone_inputs = {
                k: v[i : i + 1, ..., :length] if k in self.padded_inputs else v[i : i + 1] for k, v in inputs.items()
            }
            alone = outputs_to_compare(model(**alone_inputs, output_hidden_states=True))
            for key, value in alone.items():
                rows = batched[key].shape[0] // batch_size  # multiple choice flattens choices into the batch
                expected = batched[key][i * rows : (i + 1) * rows]
                if expected.dim() >= 2 and expected.shape[1] == padded_length:
                    expected = expected[:, :length]
                self.assert_close(value, expected, f"{key} of example {i}")

    def test_padding_content_never_reaches_real_positions(self, head):
        """Changing the tokens at padded positions leaves every output at real positions bit-identical."""
        model = self.build(head[0])
        inputs = self.make_inputs(head[0])
        changed = dict(inputs, input_ids=inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, 7))
        reference = outputs_to_compare(model(**inputs, output_hidden_states=True, output_attentions=True))
        got = outputs_to_compare(model(**changed, output_hidden_states=True, output_attentions=True))
        padded_length = inputs["input_ids"].shape[-1]
        real = inputs["attention_mask"].reshape(-1, padded_length).bool()
        for key, value in reference.items():
            if value.dim() >= 2 and value.shape[1] == padded_length and value.shape[0] == real.shape[0]:
                assert torch.equal(got[key][real], value[real]), key  # token-level outputs: real tokens only
            elif not key.startswith(("attentions", "encoder_attentions")):
                assert torch.equal(got[key], value), key

    def test_equals_vanilla_when_ea_is_off(self, head):
        """With ea_alpha = ea_beta = 0 (and with the chain switched off) every output equals transformers' own, bit for
        bit: the layers then do the host model's own arithmetic, so this holds on any CPU."""
        ea_class, vanilla_class = head
        for overrides in ({"ea_alpha": 0.0, "ea_beta": 0.0}, self.ea_off):
            ea = self.build(ea_class, **overrides)
            vanilla = vanilla_class(self.vanilla_config(ea.config)).eval()
            vanilla.set_attn_implementation("eager")
            missing, unexpected = vanilla.load_state_dict(ea.state_dict(), strict=False)
            assert not missing and all(".evolving_attention." in key for key in unexpected)
            if overrides is self.ea_off:
                assert not unexpected and not conv_parameters(ea)
            inputs = self.make_inputs(ea_class, labels=True)
            expected = outputs_to_compare(vanilla(**inputs, output_hidden_states=True, output_attentions=True))
            got = outputs_to_compare(ea(**inputs, output_hidden_states=True, output_attentions=True))
            assert got.keys() == expected.keys()
            for key in expected:
                assert torch.equal(got[key], expected[key]), f"{key}: {(got[key] - expected[key]).abs().max()}"

    def test_save_load_round_trip(self, head, tmp_path):
        model = self.build(head[0])
        inputs = self.make_inputs(head[0])
        model.save_pretrained(tmp_path)
        loaded, info = head[0].from_pretrained(tmp_path, output_loading_info=True)
        assert not any(info.values()), info
        for name, param in conv_parameters(model).items():  # never re-initialised on load
            assert torch.equal(conv_parameters(loaded)[name], param)
        for key, value in outputs_to_compare(model(**inputs)).items():
            assert torch.equal(outputs_to_compare(loaded.eval()(**inputs))[key], value)

    @pytest.mark.parametrize("implementation", ["sdpa", "flash_attention_2", "flex_attention"])
    def test_fused_attention_is_refused(self, implementation, tmp_path):
        model_class = self.heads[0][0]
        assert self.build(model_class).config._attn_implementation == "eager"
        with pytest.raises(ValueError, match="eager"):
            model_class._from_config(self.make_config(), attn_implementation=implementation)
        self.build(model_class).save_pretrained(tmp_path)
        with pytest.raises(ValueError, match="logits"):
            model_class.from_pretrained(tmp_path, attn_implementation=implementation)

    def test_gradient_checkpointing_gives_identical_gradients(self, head):
        gradients = []
        for checkpointing in (False, True):
            model = self.build(head[0]).train()
            if checkpointing:
                model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": True})
            output = model(**self.make_inputs(head[0], labels=True))
            (output.loss if output.get("loss") is not None else output[0].pow(2).mean()).backward()
            gradients.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        assert gradients[0].keys() == gradients[1].keys()
        for name, grad in gradients[0].items():
            torch.testing.assert_close(gradients[1][name], grad, atol=1e-6, rtol=0, msg=name)

    def test_fused_step_equals_the_reference(self, head, monkeypatch):
        """In training (dropout on, a padded batch), the fused EA step gives the outputs and gradients of the step's
        reference forward, also under gradient checkpointing."""
        results = []
        for fused, checkpointing in [(False, False), (True, False), (True, True)]:
            monkeypatch.setattr(EvolvingAttentionStep, "fused", fused)
            model = self.build(head[0]).train()
            if checkpointing:
                model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            output = model(**self.make_inputs(head[0], labels=True))
            (output.loss if output.get("loss") is not None else output[0].pow(2).mean()).backward()
            grads = {f"grad {n}": p.grad for n, p in model.named_parameters() if p.grad is not None}
            results.append({**{k: v.detach() for k, v in outputs_to_compare(output).items()}, **grads})
        for got in results[1:]:
            assert got.keys() == results[0].keys()
            for name, expected in results[0].items():
                self.assert_close(got[name], expected, name)

    def test_remote_code_loads_every_head_without_ea_hf(self, tmp_path):
        """A saved folder carries the code and an `auto_map` for every head; each head loads through its Auto class
        with trust_remote_code in a fresh interpreter that cannot import ea_hf, with the same outputs (to `atol`, not
        bit for bit: each process times the conv's memory layout for itself, two layouts sum in other orders)."""
        expected = {}
        heads = [ea_class for ea_class, _ in self.heads if ea_class._auto_class]  # transformers has an Auto class
        for ea_class in heads:
            folder = tmp_path / ea_class.__name__
            model = self.build(ea_class)
            model.save_pretrained(folder)
            inputs = self.make_inputs(ea_class)
            torch.save(inputs, folder / "inputs.pt")
            expected[ea_class.__name__] = model(**inputs)[0]
            auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
            assert auto_map[ea_class._auto_class] == f"{ea_class.__module__.split('.')[-1]}.{ea_class.__name__}"
        auto_classes = {ea_class.__name__: ea_class._auto_class for ea_class in heads}
        run_without_ea_hf(
            f"""
            import torch, transformers
            for name, auto_class in {auto_classes!r}.items():
                folder = {str(tmp_path)!r} + "/" + name
                model = getattr(transformers, auto_class).from_pretrained(folder, trust_remote_code=True).eval()
                assert type(model).__name__ == name and type(model).__module__.startswith("transformers_modules")
                torch.save(model(**torch.load(folder + "/inputs.pt"))[0], folder + "/remote_output.pt")
            """,
            tmp_path,
        )
        for name, value in expected.items():
            self.assert_close(torch.load(tmp_path / name / "remote_output.pt"), value, name)

    def trainer_grad_norm(self, model_class, tmp_path, accumulation_steps, checkpointing=False):
        torch.manual_seed(0)
        model = model_class(self.make_config())
        inputs = self.make_inputs(model_class, labels=True)
        examples = [{k: v[i % len(v)] for k, v in inputs.items()} for i in range(8)]
        args = TrainingArguments(
            output_dir=str(tmp_path / f"run{accumulation_steps}{checkpointing}"),
            per_device_train_batch_size=8 // accumulation_steps,
            gradient_accumulation_steps=accumulation_steps,
            max_steps=1,
            logging_steps=1,
            learning_rate=1e-3,
            activation_checkpointing=checkpointing,
            report_to="none",
            use_cpu=True,
            save_strategy="no",
            dataloader_num_workers=0,
        )
        trainer = Trainer(model=model, args=args, train_dataset=examples)
        trainer.train()
        return next(log["grad_norm"] for log in trainer.state.log_history if "grad_norm" in log)

    trainer_heads: list = []  # heads with a loss

    def test_trainer_and_gradient_accumulation(self, trainer_head, tmp_path):
        """Trainer runs with and without gradient checkpointing, and 1 or 2 accumulation steps at equal total batch
        give the same gradient norm, for per-example and per-token losses alike."""
        model_class = trainer_head
        norm_1 = self.trainer_grad_norm(model_class, tmp_path, 1)
        norm_2 = self.trainer_grad_norm(model_class, tmp_path, 2)
        norm_checkpointed = self.trainer_grad_norm(model_class, tmp_path, 1, checkpointing=True)
        assert norm_1 > 0
        assert norm_2 == pytest.approx(norm_1, rel=1e-4)
        assert norm_checkpointed == pytest.approx(norm_1, rel=1e-5)
