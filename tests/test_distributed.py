"""EA-BERT trained by `transformers.Trainer` on two CPU processes (torchrun, gloo; `tests/fsdp_worker.py` is one
process) with FSDP2, and the folder `trainer.save_model` writes: it is really sharded (every parameter a DTensor split
on dim 0 between the ranks, the embeddings and each EABertLayer an FSDP unit), the losses match DDP's, the EA convs
train, and the saved folder loads back the gathered trained weights.

FSDP2 comes from transformers' own loading (`from_pretrained(distributed_config=DistributedConfig(fsdp_size=2))`):
on CPU, accelerate 1.15 takes the FSDP plugin that `TrainingArguments(fsdp=True)` builds but keeps the MULTI_CPU
distributed type (its switch to FSDP covers GPU-like devices only) and wraps the model in DDP, which a test here pins
down (`accelerate launch` with a config file of `distributed_type: FSDP` and `use_cpu: true` ends the same way).
`accelerate launch` over torchrun (DDP) is tested in `tests/test_run_glue.py`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file

from ea_hf import EABertConfig, EABertForSequenceClassification

from ea_model_tester import run_without_ea_hf


WORKER = Path(__file__).with_name("fsdp_worker.py")
CONFIG = dict(
    vocab_size=99, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=37,
    max_position_embeddings=64, ea_alpha=0.5, ea_beta=0.5, num_labels=2,
)  # fmt: skip
# GPUs hidden (gloo on CPU whatever the machine), one thread a process: the model is tiny, the machine may have 2 cores
WORKER_ENV = {
    **os.environ, "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
    "OMP_NUM_THREADS": "1",
}  # fmt: skip
EA_CONV = ".evolving_attention.conv."

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="torch.distributed with gloo is not available"
)


def launch(route: str, initial: Path, output_dir: Path) -> list[dict]:
    """Two worker processes through torchrun (`--standalone`: a free port on localhost); their reports by rank."""
    output_dir.mkdir()
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(WORKER), str(initial), str(output_dir), route,
    ]  # fmt: skip
    done = subprocess.run(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=WORKER_ENV, cwd=output_dir,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-6000:]
    return [json.loads((output_dir / f"report-{rank}.json").read_text()) for rank in (0, 1)]


@pytest.fixture(scope="module")
def initial(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("initial")
    torch.manual_seed(0)
    EABertForSequenceClassification(EABertConfig(**CONFIG)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def fsdp(initial, tmp_path_factory) -> tuple[Path, list[dict]]:
    output_dir = tmp_path_factory.mktemp("fsdp") / "out"
    return output_dir, launch("transformers", initial, output_dir)


@pytest.fixture(scope="module")
def ddp(initial, tmp_path_factory) -> tuple[Path, list[dict]]:
    output_dir = tmp_path_factory.mktemp("ddp") / "out"
    return output_dir, launch("training-args", initial, output_dir)


def test_fsdp2_shards_ea_bert_over_two_cpu_processes(fsdp):
    _, reports = fsdp
    layers = [f"bert.encoder.layer.{index}" for index in range(CONFIG["num_hidden_layers"])]
    for rank, report in enumerate(reports):
        assert (report["rank"], report["world_size"], report["backend"]) == (rank, 2, "gloo")
        assert report["is_distributed_loading_by_transformers"] and report["global_step"] == 3
        # `fully_shard` made the root an FSDPModule (`fsdp_modules` holds ""), its class keeps the EA class's name
        assert report["model_class"] == "EABertForSequenceClassification"
        assert report["fsdp_modules"] == ["", "bert.embeddings", *layers]
        assert any(EA_CONV in name for name in report["parameters"])
    names = reports[0]["parameters"].keys()
    assert names == reports[1]["parameters"].keys()
    for name in names:
        shards = [report["parameters"][name] for report in reports]
        for shard in shards:
            assert shard["dtensor"] and shard["placements"] == ["S(0)"], (name, shard)
            assert shard["local_shape"][1:] == shard["shape"][1:], (name, shard)
        # dim 0 split between the ranks: rank 0 holds the first ceil(n / 2) rows
        full = shards[0]["shape"][0]
        assert [shard["local_shape"][0] for shard in shards] == [(full + 1) // 2, full // 2], name


def test_fsdp2_trains_like_ddp(fsdp, ddp):
    """The same data, seed and steps: FSDP2's losses are DDP's, the trained weights too (up to the order of sums)."""
    (fsdp_dir, fsdp_reports), (ddp_dir, ddp_reports) = fsdp, ddp
    for report in fsdp_reports + ddp_reports:
        assert report["finite"] and len(report["losses"]) == 3, report["losses"]
    assert fsdp_reports[0]["losses"] == fsdp_reports[1]["losses"]  # the loss logged is the mean over the ranks
    torch.testing.assert_close(fsdp_reports[0]["losses"], ddp_reports[0]["losses"])
    fsdp_trained, ddp_trained = (torch.load(folder / "trained.pt") for folder in (fsdp_dir, ddp_dir))
    torch.testing.assert_close(fsdp_trained, ddp_trained)


def test_saved_folder_loads_the_trained_weights(fsdp, initial):
    output_dir, _ = fsdp
    trained = torch.load(output_dir / "trained.pt")
    assert all(type(tensor) is torch.Tensor for tensor in trained.values())  # gathered, not DTensor shards
    model, info = EABertForSequenceClassification.from_pretrained(output_dir / "saved", output_loading_info=True)
    assert not any(info.values()), info  # nothing missing, unexpected, mismatched
    loaded = model.state_dict()
    assert loaded.keys() == trained.keys()
    assert all(torch.equal(loaded[name], trained[name]) for name in trained), [
        name for name in trained if not torch.equal(loaded[name], trained[name])
    ]
    saved = load_file(output_dir / "saved" / "model.safetensors")
    assert all(torch.equal(tensor, trained[name]) for name, tensor in saved.items())
    before = EABertForSequenceClassification.from_pretrained(initial).state_dict()
    ea_convs = [name for name in trained if EA_CONV in name]
    assert len(ea_convs) == 2 * (CONFIG["num_hidden_layers"] - 1)  # weight and bias from the second layer on
    for name in ea_convs:
        assert not torch.equal(trained[name], before[name]), f"{name} did not train"


def test_saved_folder_loads_as_remote_code(fsdp, tmp_path):
    """The FSDP2-wrapped model saves the EA class's `auto_map` entry and code (not those of `fully_shard`'s wrapper
    class), so that the folder loads through its Auto class where ea_hf cannot be imported, with the trained
    weights."""
    saved = fsdp[0] / "saved"
    auto_map = json.loads((saved / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModelForSequenceClassification"] == "modeling_ea_bert.EABertForSequenceClassification"
    assert not sorted(saved.glob("_fsdp*.py")) and (saved / "modeling_ea_bert.py").exists()
    run_without_ea_hf(
        f"""
        import torch
        from transformers import AutoModelForSequenceClassification
        model = AutoModelForSequenceClassification.from_pretrained({str(saved)!r}, trust_remote_code=True)
        assert type(model).__name__ == "EABertForSequenceClassification", type(model)
        trained = torch.load({str(fsdp[0] / "trained.pt")!r})
        assert all(torch.equal(tensor, trained[name]) for name, tensor in model.state_dict().items())
        """,
        tmp_path,
    )


def test_trainer_fsdp_arguments_fall_back_to_ddp_on_cpu(ddp):
    """`TrainingArguments(fsdp=True, fsdp_config={"version": 2, ...})` with `use_cpu=True`: accelerate 1.15 keeps the
    MULTI_CPU distributed type, Trainer's FSDP is off and the model is wrapped in DDP, unsharded. When this fails,
    accelerate shards on CPU: test that route like the one above."""
    output_dir, reports = ddp
    for report in reports:
        assert report["distributed_type"] == "DistributedType.MULTI_CPU" and not report["is_fsdp_enabled"]
        assert report["model_class"] == "DistributedDataParallel" and report["fsdp_modules"] == []
        assert not any(parameter["dtensor"] for parameter in report["parameters"].values())
    model, info = EABertForSequenceClassification.from_pretrained(output_dir / "saved", output_loading_info=True)
    assert not any(info.values()), info
    trained = torch.load(output_dir / "trained.pt")
    assert all(torch.equal(tensor, trained[name]) for name, tensor in model.state_dict().items())
