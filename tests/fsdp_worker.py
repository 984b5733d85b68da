"""One process of `tests/test_distributed.py`: fine-tunes the EA-BERT checkpoint INITIAL with `transformers.Trainer`
on two CPU processes (gloo) for 3 steps, saves it with `trainer.save_model(OUTPUT/saved)`, and writes what the test
checks: `OUTPUT/trained.pt` (rank 0: the full state dict gathered after training) and `OUTPUT/report-<rank>.json` (the
losses, and how the trained model was laid out on this rank: FSDP-wrapped modules, DTensor parameters and shards).

    torchrun --nproc_per_node 2 tests/fsdp_worker.py INITIAL OUTPUT ROUTE

ROUTE asks for FSDP2 one of two ways:
- `transformers`: `from_pretrained(..., distributed_config=DistributedConfig(fsdp_size=2, fsdp_plan=...))` shards the
  model at load time (`fully_shard` on the embeddings, each EABertLayer, then the whole model); Trainer sees
  `model.is_distributed_loading_by_transformers` and neither wraps nor re-shards it.
- `training-args`: `TrainingArguments(fsdp=True, fsdp_config={"version": 2, ...})`, accelerate's FSDP plugin. On CPU
  accelerate 1.15 keeps the MULTI_CPU distributed type (it switches to FSDP only on GPU-like devices) and wraps the
  model in DDP instead: the test pins that down."""

import json
import math
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor
from transformers import DistributedConfig, Trainer, TrainingArguments

from ea_hf import EABertForSequenceClassification


# EA-BERT's `_no_split_modules`: one FSDP unit each, then the root module
FSDP_PLAN = {"bert.embeddings": "free_full_weight", "bert.encoder.layer.*": "free_full_weight"}
FSDP_CONFIG = {"version": 2, "transformer_layer_cls_to_wrap": ["BertEmbeddings", "EABertLayer"]}


class RandomSentences(torch.utils.data.Dataset):
    def __init__(self, count: int, vocab_size: int, num_labels: int, length: int = 12, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.input_ids = torch.randint(1, vocab_size, (count, length), generator=generator)
        self.labels = torch.randint(0, num_labels, (count,), generator=generator)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        return {"input_ids": self.input_ids[index], "labels": self.labels[index]}


def layout(model: torch.nn.Module) -> dict:
    """Which modules FSDP2 wrapped, and for each parameter whether it is a DTensor, its placements, and the shape of
    this rank's shard against the full shape."""
    parameters = {}
    for name, parameter in model.named_parameters():
        entry = {"dtensor": isinstance(parameter, DTensor), "shape": list(parameter.shape)}
        if entry["dtensor"]:
            entry["placements"] = [str(placement) for placement in parameter.placements]
            entry["local_shape"] = list(parameter.to_local().shape)
        parameters[name] = entry
    return {
        "model_class": type(model).__name__,
        "fsdp_modules": [name for name, module in model.named_modules() if isinstance(module, FSDPModule)],
        "parameters": parameters,
    }


def main(initial: Path, output_dir: Path, route: str) -> None:
    fsdp = dict(fsdp=True, fsdp_config=FSDP_CONFIG) if route == "training-args" else {}
    args = TrainingArguments(
        output_dir=str(output_dir / "trainer"), use_cpu=True, ddp_backend="gloo", max_steps=3,
        per_device_train_batch_size=4, learning_rate=1e-2, logging_steps=1, save_strategy="no", report_to="none",
        seed=0, disable_tqdm=True, **fsdp,
    )  # fmt: skip
    if route == "transformers":
        distributed_config = DistributedConfig(fsdp_size=dist.get_world_size(), fsdp_plan=FSDP_PLAN)
        model = EABertForSequenceClassification.from_pretrained(initial, distributed_config=distributed_config)
    else:
        model = EABertForSequenceClassification.from_pretrained(initial)
    data = RandomSentences(32, model.config.vocab_size, model.config.num_labels)
    trainer = Trainer(model=model, args=args, train_dataset=data)
    result = trainer.train()
    trainer.save_model(str(output_dir / "saved"))

    trained = trainer.model_wrapped
    # a collective: every rank takes part, rank 0 gets the full tensors
    full = get_model_state_dict(trained, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if args.process_index == 0:
        torch.save(full, output_dir / "trained.pt")
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    report = {
        "rank": args.process_index,
        "world_size": dist.get_world_size(),
        "backend": dist.get_backend(),
        "distributed_type": str(trainer.accelerator.distributed_type),
        "is_fsdp_enabled": trainer.is_fsdp_enabled,
        "is_distributed_loading_by_transformers": trainer.is_distributed_loading_by_transformers,
        "global_step": trainer.state.global_step,
        "training_loss": result.training_loss,
        "losses": losses,
        "finite": all(map(math.isfinite, [result.training_loss, *losses])),
        **layout(trained),
    }
    (output_dir / f"report-{args.process_index}.json").write_text(json.dumps(report, indent=1))
    dist.barrier()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3])
