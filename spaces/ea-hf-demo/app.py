"""A Gradio demo of the ea-hf checkpoints: evolving-attention models for text classification, sentence similarity,
English -> Spanish translation, text generation, image classification and time-series classification.

The checkpoints load as remote code (`trust_remote_code=True`): the app needs transformers, not ea_hf. Each one loads
on first use and stays cached; a checkpoint that cannot be loaded gives an error in its own tab only. Every failure
reaches the user as a `gr.Error` that says what went wrong and what to do (a missing checkpoint: the command that
builds it in the ea-hf repository); a tab whose local checkpoint folder is missing says so from the start.

Environment:
    EA_HF_MODEL_DIR: a local folder holding the checkpoint folders (`ea-minilm-l6`, ...); if unset, they come from
        the Hugging Face Hub as `{EA_HF_ORG}/{name}`.
    EA_HF_ORG: the Hub organisation of the checkpoints (default `ea-hf`).

Run locally:
    EA_HF_MODEL_DIR=checkpoints python spaces/ea-hf-demo/app.py
"""

import contextlib
import functools
import logging
import os
from pathlib import Path

import gradio as gr
import torch
from transformers import pipeline


MODEL_DIR = os.environ.get("EA_HF_MODEL_DIR")
ORG = os.environ.get("EA_HF_ORG", "ea-hf")

SENTIMENT_MODEL = "ea-minilm-l6-rotten-tomatoes"
EMBEDDING_MODEL = "ea-minilm-l6"
TRANSLATION_MODEL = "ea-marian-en-es-bible"
GENERATION_MODEL = "ea-llama-6l-kjv"
IMAGE_MODEL = "ea-vit-small-patch14-fashion-mnist"
SERIES_MODELS = {  # dataset -> checkpoint
    "JapaneseVowels": "ea-dc-transformer-japanesevowels",
    "BasicMotions": "ea-dc-transformer-basicmotions",
}
# What building a checkpoint needs beyond `make demo` (scripts/release/build_checkpoints.py prepares its data)
BUILD_NEEDS = {
    TRANSLATION_MODEL: 'the `data` extra (`.venv/bin/pip install -e ".[data]"`) and Debian\'s SWORD Bibles'
    " (`apt-get install sword-text-kjv sword-text-sparv`)",
    GENERATION_MODEL: 'the `data` extra (`.venv/bin/pip install -e ".[data]"`) and Debian\'s SWORD Bibles'
    " (`apt-get install sword-text-kjv sword-text-sparv`)",
    IMAGE_MODEL: "Debian's Fashion-MNIST (`apt-get install dataset-fashion-mnist`)",
}

logger = logging.getLogger(__name__)


def build_command(name: str) -> str:
    """How to build checkpoint `name` into `checkpoints/` of the ea-hf repository."""
    if name == SENTIMENT_MODEL:
        return "`make demo`"
    needs = f"; it needs {BUILD_NEEDS[name]}" if name in BUILD_NEEDS else ""
    return f"`make demo`, then `.venv/bin/python -m scripts.release.build_checkpoints {name}`{needs}"


def missing_folder(name: str) -> Path | None:
    """The local folder of checkpoint `name` when EA_HF_MODEL_DIR is set and it is not there."""
    if MODEL_DIR is None:
        return None
    folder = Path(MODEL_DIR) / name
    return None if folder.is_dir() else folder


def model_source(name: str) -> str:
    """The local folder (under EA_HF_MODEL_DIR) or the Hub repository of checkpoint `name`."""
    if MODEL_DIR is None:
        return f"{ORG}/{name}"
    if (folder := missing_folder(name)) is not None:
        raise gr.Error(
            f"Checkpoint {name} is not built: there is no folder {folder}. Build it in the ea-hf repository with "
            f"{build_command(name)} (it lands in checkpoints/; EA_HF_MODEL_DIR must point there), then try again."
        )
    return str(Path(MODEL_DIR) / name)


def availability(name: str) -> str:
    """A note for a tab whose checkpoint folder is missing, empty otherwise."""
    if missing_folder(name) is None:
        return ""
    return f"\n\n**Not available yet**: `{name}` is not built. Build it with {build_command(name)}."


def checkpoint_fix(name: str) -> str:
    """What to do when checkpoint `name` does not load or fails on every input."""
    if MODEL_DIR is not None:
        return f"rebuild {name} with {build_command(name)}"
    return (
        f"check that {ORG}/{name} is on the Hub and reachable, or run the app on local checkpoints"
        f" (EA_HF_MODEL_DIR=checkpoints; build {name} with {build_command(name)})"
    )


@functools.cache  # a failed load raises and is not cached: it is tried again on the next call
def load(task: str, name: str):
    source = model_source(name)
    with explained(f"Loading checkpoint {name} from {source}", f"To fix it, {checkpoint_fix(name)}."):
        return pipeline(task, model=source, trust_remote_code=True)


@contextlib.contextmanager
def explained(what: str, fix: str):
    """Turn an exception into a `gr.Error` that says that `what` failed, why, and `fix` (what to do); a `gr.Error` is
    already readable and passes as it is. The traceback goes to the log."""
    try:
        yield
    except gr.Error:
        raise
    except Exception as error:
        logger.exception(f"{what} failed")
        raise gr.Error(f"{what} failed: {type(error).__name__}: {error} {fix}") from error


def input_failed(name: str) -> str:
    """What to do when a checkpoint fails on an input."""
    return f"Try another input; if every input fails, {checkpoint_fix(name)}."


def require_text(text: str) -> str:
    if not text or not text.strip():
        raise gr.Error("Enter some text first.")
    return text


def as_confidences(predictions: list[dict]) -> dict[str, float]:
    return {prediction["label"]: prediction["score"] for prediction in predictions}


def classify_text(text: str) -> dict[str, float]:
    classifier = load("text-classification", SENTIMENT_MODEL)
    with explained(f"Classifying with {SENTIMENT_MODEL}", input_failed(SENTIMENT_MODEL)):
        return as_confidences(classifier(require_text(text), top_k=None, truncation=True))


def similarity(sentence_a: str, sentence_b: str) -> float:
    """Cosine similarity of the two sentence embeddings: mean of the last hidden states over real tokens, L2
    normalised (the pooling all-MiniLM-L6-v2 was trained with)."""
    encoder = load("feature-extraction", EMBEDDING_MODEL)
    sentences = [require_text(sentence_a), require_text(sentence_b)]
    with explained(f"Embedding with {EMBEDDING_MODEL}", input_failed(EMBEDDING_MODEL)), torch.inference_mode():
        batch = encoder.tokenizer(sentences, padding=True, truncation=True, return_tensors="pt").to(encoder.device)
        hidden = encoder.model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    embeddings = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    return (embeddings[0] @ embeddings[1]).item()


def translate(text: str) -> str:
    translator = load("translation", TRANSLATION_MODEL)
    with explained(f"Translating with {TRANSLATION_MODEL}", input_failed(TRANSLATION_MODEL)):
        return translator(require_text(text))[0]["translation_text"]


def generate(prompt: str, max_new_tokens: float) -> str:
    """The prompt and its greedy continuation of `max_new_tokens` tokens (1 to 128)."""
    generator = load("text-generation", GENERATION_MODEL)
    if not 1 <= max_new_tokens <= 128:
        raise gr.Error(f"Choose 1 to 128 new tokens, not {max_new_tokens}.")
    with explained(f"Generating with {GENERATION_MODEL}", input_failed(GENERATION_MODEL)):
        output = generator(require_text(prompt), max_new_tokens=int(max_new_tokens), do_sample=False)
        return output[0]["generated_text"]


def classify_image(image) -> dict[str, float]:
    if image is None:
        raise gr.Error("Upload an image first.")
    classifier = load("image-classification", IMAGE_MODEL)
    with explained(f"Classifying with {IMAGE_MODEL}", input_failed(IMAGE_MODEL)):
        return as_confidences(classifier(image, top_k=5))


def classify_series(dataset: str, csv_path: str) -> dict[str, float]:
    if csv_path is None:
        raise gr.Error("Upload a CSV file first.")
    name = SERIES_MODELS[dataset]
    classifier = load("time-series-classification", name)
    fix = "Check the CSV against the description above (one row per time step, one column per channel)."
    with explained(f"Classifying the CSV with {name}", fix):
        return as_confidences(classifier(csv_path, top_k=5))


def build_app() -> gr.Blocks:
    with gr.Blocks(title="Evolving attention for Hugging Face Transformers") as app:
        gr.Markdown(
            "# Evolving attention (ea-hf)\n"
            "Models whose attention maps evolve from layer to layer through a convolution (Wang et al., TPAMI 2023),"
            " built with the ea-hf package. Each tab loads its checkpoint on first use."
        )
        with gr.Tab("Text classification"):
            gr.Markdown(
                f"Movie-review sentiment with `{SENTIMENT_MODEL}` (EA-MiniLM fine-tuned on Rotten Tomatoes)."
                + availability(SENTIMENT_MODEL)
            )
            text = gr.Textbox(label="Review")
            button = gr.Button("Classify")
            label = gr.Label(label="Sentiment")
            gr.Examples(["a gorgeous , witty , seductive movie .", "the plot is nothing but boilerplate ."], text)
            button.click(classify_text, text, label, api_name="classify_text")

        with gr.Tab("Sentence similarity"):
            gr.Markdown(
                f"Cosine similarity of the mean-pooled sentence embeddings of `{EMBEDDING_MODEL}`."
                + availability(EMBEDDING_MODEL)
            )
            sentence_a = gr.Textbox(label="Sentence A")
            sentence_b = gr.Textbox(label="Sentence B")
            button = gr.Button("Compare")
            score = gr.Number(label="Cosine similarity", precision=4)
            gr.Examples([["A man is playing a guitar.", "Someone plays an instrument."]], [sentence_a, sentence_b])
            button.click(similarity, [sentence_a, sentence_b], score, api_name="similarity")

        with gr.Tab("Translation"):
            gr.Markdown(
                f"English to Spanish with `{TRANSLATION_MODEL}` (EA-Marian trained on Bible verses)."
                + availability(TRANSLATION_MODEL)
            )
            source = gr.Textbox(label="English")
            button = gr.Button("Translate")
            target = gr.Textbox(label="Spanish")
            gr.Examples(["In the beginning God created the heaven and the earth."], source)
            button.click(translate, source, target, api_name="translate")

        with gr.Tab("Text generation"):
            gr.Markdown(
                f"King James Version English with `{GENERATION_MODEL}` (a small EA-Llama trained from scratch on the"
                " verses), greedy decoding." + availability(GENERATION_MODEL)
            )
            prompt = gr.Textbox(label="Prompt")
            new_tokens = gr.Slider(1, 128, value=32, step=1, label="New tokens")
            button = gr.Button("Generate")
            continuation = gr.Textbox(label="Text")
            gr.Examples(["And God said,", "The Lord is my shepherd;"], prompt)
            button.click(generate, [prompt, new_tokens], continuation, api_name="generate")

        with gr.Tab("Image classification"):
            gr.Markdown(f"Fashion-MNIST classes with `{IMAGE_MODEL}` (EA-ViT-S/14)." + availability(IMAGE_MODEL))
            image = gr.Image(type="pil", label="Image")
            button = gr.Button("Classify")
            label = gr.Label(label="Class")
            button.click(classify_image, image, label, api_name="classify_image")

        with gr.Tab("Time-series classification"):
            gr.Markdown(
                "UEA archive datasets with EA-DC-Transformer (one checkpoint per dataset). Upload a CSV file with"
                " one row per time step and one column per channel: JapaneseVowels has 12 channels and up to 29"
                " steps, BasicMotions 6 channels and 100 steps. A header line is allowed; empty fields are missing."
                + "".join(availability(name) for name in SERIES_MODELS.values())
            )
            dataset = gr.Dropdown(list(SERIES_MODELS), value="JapaneseVowels", label="Dataset")
            csv_file = gr.File(file_types=[".csv"], type="filepath", label="CSV file")
            button = gr.Button("Classify")
            label = gr.Label(label="Class")
            button.click(classify_series, [dataset, csv_file], label, api_name="classify_series")
    return app


if __name__ == "__main__":
    build_app().launch()
