"""PEFT: LoRA through `get_peft_model` on the attention projections and on the EA convs of EA-BERT (sequence
classification), EA-Marian (translation) and EA-Llama (causal LM): every EA conv wrapped, only the adapters
trainable, Trainer steps that move the conv adapters, adapter save and reload, `merge_and_unload`, hooks on the
convs (cached generation included), and the conv's CPU inference path under LoRA equal to its reference path."""

import copy
from dataclasses import dataclass

import pytest
import torch
from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file
from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments, Trainer, TrainingArguments

from ea_hf import (
    EABertConfig,
    EABertForSequenceClassification,
    EALlamaConfig,
    EALlamaForCausalLM,
    EAMarianConfig,
    EAMarianMTModel,
)
from ea_hf.cpu_conv_kernels import CPU_KERNELS
from ea_hf.evolving_attention import EvolvingAttentionConv

from seq2seq_tester import build_ea, source_batch
from tiny_configs import BERT, LLAMA
from tiny_configs import MARIAN as MARIAN_TINY


pytestmark = pytest.mark.usefixtures("one_thread")

# as EA-Marian's `init_std`: BERT's 0.02 leaves attention logits near 0, where the convs barely matter
BERT_TINY = dict(BERT, initializer_range=0.1)
RANK = 3  # not the 4 heads: LoRA's conv A maps 4 channels to 3, and its conv B 3 to 4
CONV = ".evolving_attention.conv"


@dataclass
class Case:
    name: str
    config_class: type
    model_class: type
    tiny: dict
    task_type: TaskType
    projections: tuple[str, str]
    num_convs: int  # a chain's first layer has no conv
    num_projections: int  # of each of the two

    def build(self):
        """The base model, with its convs drawn far from the identity (the same model at every call)."""
        return build_ea(self.config_class, self.model_class, self.tiny)

    def lora_config(self, **overrides) -> LoraConfig:
        target_modules = [*self.projections, "conv"]
        return LoraConfig(task_type=self.task_type, target_modules=target_modules, r=RANK, lora_alpha=6, **overrides)

    def batch(self) -> dict[str, torch.Tensor]:
        """A batch of 3 whose second and third examples are padded."""
        input_ids, attention_mask = source_batch()  # ids in [2, 60), within both vocabularies; pad 0
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self.task_type == TaskType.SEQ_2_SEQ_LM:
            torch.manual_seed(2)
            decoder_attention_mask = torch.ones(3, 5, dtype=torch.long)
            decoder_attention_mask[2, 3:] = 0
            decoder_input_ids = torch.randint(2, 60, (3, 5)).masked_fill(decoder_attention_mask == 0, 0)
            batch.update(decoder_input_ids=decoder_input_ids, decoder_attention_mask=decoder_attention_mask)
        return batch

    def train_examples(self) -> list[dict[str, torch.Tensor]]:
        """8 padded examples with labels (-100 at the padding of translation and language-model labels)."""
        input_ids, attention_mask = source_batch()
        torch.manual_seed(3)
        if self.task_type == TaskType.SEQ_CLS:
            labels = torch.tensor([0, 1, 1])
        elif self.task_type == TaskType.CAUSAL_LM:
            labels = input_ids.masked_fill(attention_mask == 0, -100)
        else:
            labels = torch.randint(2, 60, (3, 5))
            labels[1, 4:] = labels[2, 2:] = -100
        return [
            {"input_ids": input_ids[i % 3], "attention_mask": attention_mask[i % 3], "labels": labels[i % 3]}
            for i in range(8)
        ]


CASES = [
    Case("bert", EABertConfig, EABertForSequenceClassification, BERT_TINY, TaskType.SEQ_CLS, ("query", "value"), 2, 3),
    # encoder self-attention, decoder self-attention and cross-attention chains, each of 3 layers
    Case("marian", EAMarianConfig, EAMarianMTModel, MARIAN_TINY, TaskType.SEQ_2_SEQ_LM, ("q_proj", "v_proj"), 6, 9),
    Case("llama", EALlamaConfig, EALlamaForCausalLM, LLAMA, TaskType.CAUSAL_LM, ("q_proj", "v_proj"), 2, 3),
]


@pytest.fixture(scope="module", params=CASES, ids=[case.name for case in CASES])
def case(request) -> Case:
    return request.param


def ea_convs(model) -> dict[str, torch.nn.Module]:
    """The modules at `*.evolving_attention.conv` (LoRA wrappers once wrapped, not their inner convs)."""
    return {name: module for name, module in model.named_modules() if name.endswith(CONV)}


def logits_of(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits


@pytest.fixture(scope="module")
def trained(case, tmp_path_factory):
    """The LoRA model after 3 Trainer steps (in eval mode), its parameters before training, and the losses logged."""
    model = get_peft_model(case.build(), case.lora_config())
    before = {name: param.detach().clone() for name, param in model.named_parameters()}
    trainer_class, args_class = (
        (Trainer, TrainingArguments)
        if case.task_type != TaskType.SEQ_2_SEQ_LM
        else (Seq2SeqTrainer, Seq2SeqTrainingArguments)
    )
    args = args_class(
        output_dir=str(tmp_path_factory.mktemp(f"trainer_{case.name}")),
        per_device_train_batch_size=4,
        max_steps=3,
        learning_rate=1e-2,
        logging_steps=1,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        dataloader_num_workers=0,
    )
    trainer = trainer_class(model=model.train(), args=args, train_dataset=case.train_examples())
    trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    return model.eval(), before, losses


def test_get_peft_model_wraps_every_ea_conv(case):
    base = case.build()
    base_convs = ea_convs(base)
    assert len(base_convs) == case.num_convs
    assert all(type(conv) is EvolvingAttentionConv for conv in base_convs.values())
    model = get_peft_model(base, case.lora_config())

    wrapped = {name.removeprefix("base_model.model."): module for name, module in ea_convs(model).items()}
    assert wrapped.keys() == base_convs.keys()
    for name, module in wrapped.items():
        assert isinstance(module, LoraLayer), name
        assert module.get_base_layer() is base_convs[name]
        lora_a, lora_b = module.lora_A["default"], module.lora_B["default"]
        # A has the base conv's kernel and padding (the query-causal decoder convs' included), B is 1 x 1
        assert (lora_a.in_channels, lora_a.out_channels, lora_b.out_channels) == (4, RANK, 4)
        assert lora_a.kernel_size == base_convs[name].kernel_size and lora_a.padding == base_convs[name].padding
        assert lora_b.kernel_size == (1, 1) and not lora_b.weight.any()
    for projection in case.projections:
        layers = [module for name, module in model.named_modules() if name.endswith(f".{projection}")]
        assert len(layers) == case.num_projections
        assert all(isinstance(module, LoraLayer) for module in layers)
    if case.name == "marian":  # the query-causal convs of the decoder's self- and cross-attention
        assert sum(conv.padding == (0, 1) for conv in base_convs.values()) == 4

    trainable = [name for name, param in model.named_parameters() if param.requires_grad]
    head = [name for name in trainable if ".lora_" not in name]
    if case.task_type == TaskType.SEQ_CLS:  # peft trains a copy of the classifier
        assert head == [
            "base_model.model.classifier.modules_to_save.default.weight",
            "base_model.model.classifier.modules_to_save.default.bias",
        ]
    else:
        assert head == []
    # A and B of every wrapped layer
    assert len(trainable) - len(head) == 2 * (case.num_convs + 2 * case.num_projections)
    assert sum(CONV + ".lora_" in name for name in trainable) == 2 * case.num_convs


def test_trainer_steps_move_the_conv_adapters(case, trained):
    model, before, losses = trained
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    after = dict(model.named_parameters())
    for name in ea_convs(model):
        for part in ("lora_A", "lora_B"):
            key = f"{name}.{part}.default.weight"
            assert not torch.equal(after[key], before[key]), key
        assert after[f"{name}.lora_B.default.weight"].abs().max() > 1e-3
        # the base conv is frozen
        assert torch.equal(after[f"{name}.base_layer.weight"], before[f"{name}.base_layer.weight"])
        assert torch.equal(after[f"{name}.base_layer.bias"], before[f"{name}.base_layer.bias"])


def test_adapter_save_and_reload(case, trained, tmp_path):
    model = trained[0]
    batch = case.batch()
    expected = logits_of(model, batch)
    with model.disable_adapter():
        assert (logits_of(model, batch) - expected).abs().max() > 1e-4  # the adapters change the logits
    model.save_pretrained(tmp_path)
    saved = load_file(tmp_path / "adapter_model.safetensors")
    assert sum(CONV + ".lora_" in name for name in saved) == 2 * case.num_convs

    reloaded = PeftModel.from_pretrained(case.build(), tmp_path).eval()
    assert len(ea_convs(reloaded)) == case.num_convs
    assert all(isinstance(module, LoraLayer) for module in ea_convs(reloaded).values())
    trained_parameters = dict(model.named_parameters())
    adapters = {name: param for name, param in reloaded.named_parameters() if ".lora_" in name}
    assert len(adapters) == 2 * (case.num_convs + 2 * case.num_projections)
    for name, param in adapters.items():
        assert torch.equal(param, trained_parameters[name]), name
    torch.testing.assert_close(logits_of(reloaded, batch), expected, atol=1e-6, rtol=0)


def conv_outputs(model, batch, base_layers=False) -> dict[str, torch.Tensor]:
    """The output of every EA conv (or of the convs inside its LoRA wrapper) in a forward of `batch`."""
    outputs, handles = {}, []
    for name, conv in ea_convs(model).items():
        conv = conv.get_base_layer() if base_layers else conv
        handles.append(
            conv.register_forward_hook(lambda module, args, output, name=name: outputs.update({name: output}))
        )
    logits_of(model, batch)
    for handle in handles:
        handle.remove()
    return outputs


def test_merge_and_unload(case, trained):
    model = copy.deepcopy(trained[0])
    batch = case.batch()
    expected = logits_of(model, batch)
    base_weights = {name: conv.get_base_layer().weight.detach().clone() for name, conv in ea_convs(model).items()}
    adapted_outputs, base_outputs = conv_outputs(model, batch), conv_outputs(model, batch, base_layers=True)
    merged = model.merge_and_unload().eval()
    assert type(merged) is case.model_class
    assert not any(isinstance(module, LoraLayer) for module in merged.modules())
    convs = ea_convs(merged)
    assert len(convs) == case.num_convs
    for name, conv in convs.items():
        assert type(conv) is EvolvingAttentionConv
        assert not torch.equal(conv.weight, base_weights[f"base_model.model.{name}"])  # the conv adapter merged in
    torch.testing.assert_close(logits_of(merged, batch), expected, atol=1e-5, rtol=0)
    merged_outputs = conv_outputs(merged, batch)
    for name, output in adapted_outputs.items():
        assert (output - base_outputs[name]).abs().max() > 1e-4  # the conv adapter matters
        torch.testing.assert_close(merged_outputs[name.removeprefix("base_model.model.")], output, atol=1e-5, rtol=0)


def lora_model(case):
    """A LoRA model in eval mode whose conv adapters are far from zero."""
    model = get_peft_model(case.build(), case.lora_config()).eval()
    torch.manual_seed(4)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".lora_" in name:
                param.normal_(std=0.3)
    return model


def test_forward_calls_the_convs_as_modules(case):
    model = lora_model(case)
    calls = []
    handles = []
    for name, conv in ea_convs(model).items():
        for module in (conv, conv.get_base_layer(), conv.lora_A["default"], conv.lora_B["default"]):
            handles.append(module.register_forward_hook(lambda module, args, output, name=name: calls.append(name)))
    model(**case.batch())
    for handle in handles:
        handle.remove()
    # the wrapper, the base conv and both adapter convs, once each
    assert sorted(calls) == sorted(4 * list(ea_convs(model)))


def test_cached_generation_calls_the_decoder_convs_with_the_cached_rows():
    """At each decoding step a decoder conv (and its LoRA A conv) gets the k-1 cached rows stacked above the new
    query; tokens equal those of generation without the cache."""
    case = CASES[1]
    model = lora_model(case)
    source = {name: value for name, value in case.batch().items() if not name.startswith("decoder_")}
    shapes = {}

    def record(module, args, output, name):
        shapes.setdefault(name, []).append((args[0].shape, output.shape))

    handles = []
    for name, conv in ea_convs(model).items():
        name = name.removeprefix("base_model.model.model.")
        handles.append(conv.register_forward_hook(lambda *hook, name=name: record(*hook, name)))
        lora_a = conv.lora_A["default"]
        handles.append(lora_a.register_forward_hook(lambda *hook, name=name: record(*hook, f"{name}.lora_A")))
    with torch.no_grad():
        cached = model.generate(**source, max_new_tokens=3, min_new_tokens=3, use_cache=True)
    for handle in handles:
        handle.remove()
    with torch.no_grad():
        recomputed = model.generate(**source, max_new_tokens=3, min_new_tokens=3, use_cache=False)
    assert torch.equal(cached, recomputed)

    assert len(shapes) == 2 * case.num_convs
    for name, calls in shapes.items():
        if name.startswith("encoder."):
            assert len(calls) == 1  # the encoder runs once
            continue
        assert len(calls) == 3, name
        channels = RANK if name.endswith("lora_A") else 4
        keys = [9, 9, 9] if ".encoder_attn." in name else [1, 2, 3]  # cross-attention reads the 9 source tokens
        assert [shape for shape, _ in calls] == [(3, 4, 2 + 1, k) for k in keys], name
        assert [shape for _, shape in calls] == [(3, channels, 1, k) for k in keys], name


@pytest.mark.parametrize("kernel", list(CPU_KERNELS))
def test_cpu_inference_kernels_with_lora_equal_reference(case, kernel, monkeypatch):
    """In eval mode without grad the convs, LoRA's A (4 -> 3 channels) and B (3 -> 4, 1 x 1) included, run a CPU
    inference kernel (each in turn here); with grad they run nn.Conv2d's forward. The logits agree."""
    model = lora_model(case)
    batch = case.batch()
    taken = []

    def spy(conv, input):
        taken.append((conv.in_channels, conv.out_channels, conv.kernel_size))
        return CPU_KERNELS[kernel](conv, input)

    monkeypatch.setitem(CPU_KERNELS, "under test", spy)
    monkeypatch.setattr(EvolvingAttentionConv, "cpu_kernel", "under test")
    reference = model(**batch).logits
    assert taken == []
    fast = logits_of(model, batch)
    assert sorted(set(taken)) == [(3, 4, (1, 1)), (4, 3, (3, 3)), (4, 4, (3, 3))]
    assert len(taken) == 3 * case.num_convs
    torch.testing.assert_close(fast, reference.detach(), atol=1e-5, rtol=0)
