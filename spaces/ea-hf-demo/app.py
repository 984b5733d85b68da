"""A Gradio demo of the ea-hf checkpoints: evolving-attention models for text classification, sentence similarity,
English -> Spanish translation, image classification and time-series classification.

The checkpoints load as remote code (`trust_remote_code=True`): the app needs transformers, not ea_hf. Each one loads
on first use and stays cached; a checkpoint that cannot be loaded gives an error in its own tab only.

Environment:
    EA_HF_MODEL_DIR: a local folder holding the checkpoint folders (`ea-minilm-l6`, ...); if unset, they come from
        the Hugging Face Hub as `{EA_HF_ORG}/{name}`.
    EA_HF_ORG: the Hub organisation of the checkpoints (default `ea-hf`).

Run locally:
    EA_HF_MODEL_DIR=checkpoints python spaces/ea-hf-demo/app.py
"""

import functools
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
IMAGE_MODEL = "ea-vit-small-patch14-fashion-mnist"
SERIES_MODELS = {  # dataset -> checkpoint
    "JapaneseVowels": "ea-dc-transformer-japanesevowels",
    "BasicMotions": "ea-dc-transformer-basicmotions",
}


def model_source(name: str) -> str:
    """The local folder (under EA_HF_MODEL_DIR) or the Hub repository of checkpoint `name`."""
    if MODEL_DIR is None:
        return f"{ORG}/{name}"
    folder = Path(MODEL_DIR) / name
    if not folder.is_dir():
        raise gr.Error(f"Checkpoint {name} is not available: there is no folder {folder}.")
    return str(folder)


@functools.cache  # a failed load raises and is not cached: it is tried again on the next call
def load(task: str, name: str):
    source = model_source(name)
    try:
        return pipeline(task, model=source, trust_remote_code=True)
    except (OSError, ValueError) as error:
        raise gr.Error(f"Checkpoint {name} could not be loaded from {source}: {error}") from error


def require_text(text: str) -> str:
    if not text or not text.strip():
        raise gr.Error("Enter some text first.")
    return text


def as_confidences(predictions: list[dict]) -> dict[str, float]:
    return {prediction["label"]: prediction["score"] for prediction in predictions}


def classify_text(text: str) -> dict[str, float]:
    return as_confidences(load("text-classification", SENTIMENT_MODEL)(require_text(text), top_k=None))


def similarity(sentence_a: str, sentence_b: str) -> float:
    """Cosine similarity of the two sentence embeddings: mean of the last hidden states over real tokens, L2
    normalised (the pooling all-MiniLM-L6-v2 was trained with)."""
    encoder = load("feature-extraction", EMBEDDING_MODEL)
    batch = encoder.tokenizer(
        [require_text(sentence_a), require_text(sentence_b)], padding=True, truncation=True, return_tensors="pt"
    ).to(encoder.device)
    with torch.inference_mode():
        hidden = encoder.model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    embeddings = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    return (embeddings[0] @ embeddings[1]).item()


def translate(text: str) -> str:
    return load("translation", TRANSLATION_MODEL)(require_text(text))[0]["translation_text"]


def classify_image(image) -> dict[str, float]:
    if image is None:
        raise gr.Error("Upload an image first.")
    return as_confidences(load("image-classification", IMAGE_MODEL)(image, top_k=5))


def classify_series(dataset: str, csv_path: str) -> dict[str, float]:
    if csv_path is None:
        raise gr.Error("Upload a CSV file first.")
    classifier = load("time-series-classification", SERIES_MODELS[dataset])
    try:
        return as_confidences(classifier(csv_path, top_k=5))
    except (OSError, ValueError) as error:  # a CSV that does not fit the model: tell the user why
        raise gr.Error(str(error)) from error


def build_app() -> gr.Blocks:
    with gr.Blocks(title="Evolving attention for Hugging Face Transformers") as app:
        gr.Markdown(
            "# Evolving attention (ea-hf)\n"
            "Models whose attention maps evolve from layer to layer through a convolution (Wang et al., TPAMI 2023),"
            " built with the ea-hf package. Each tab loads its checkpoint on first use."
        )
        with gr.Tab("Text classification"):
            gr.Markdown(f"Movie-review sentiment with `{SENTIMENT_MODEL}` (EA-MiniLM fine-tuned on Rotten Tomatoes).")
            text = gr.Textbox(label="Review")
            button = gr.Button("Classify")
            label = gr.Label(label="Sentiment")
            gr.Examples(["a gorgeous , witty , seductive movie .", "the plot is nothing but boilerplate ."], text)
            button.click(classify_text, text, label, api_name="classify_text")

        with gr.Tab("Sentence similarity"):
            gr.Markdown(f"Cosine similarity of the mean-pooled sentence embeddings of `{EMBEDDING_MODEL}`.")
            sentence_a = gr.Textbox(label="Sentence A")
            sentence_b = gr.Textbox(label="Sentence B")
            button = gr.Button("Compare")
            score = gr.Number(label="Cosine similarity", precision=4)
            gr.Examples([["A man is playing a guitar.", "Someone plays an instrument."]], [sentence_a, sentence_b])
            button.click(similarity, [sentence_a, sentence_b], score, api_name="similarity")

        with gr.Tab("Translation"):
            gr.Markdown(f"English to Spanish with `{TRANSLATION_MODEL}` (EA-Marian trained on Bible verses).")
            source = gr.Textbox(label="English")
            button = gr.Button("Translate")
            target = gr.Textbox(label="Spanish")
            gr.Examples(["In the beginning God created the heaven and the earth."], source)
            button.click(translate, source, target, api_name="translate")

        with gr.Tab("Image classification"):
            gr.Markdown(f"Fashion-MNIST classes with `{IMAGE_MODEL}` (EA-ViT-S/14).")
            image = gr.Image(type="pil", label="Image")
            button = gr.Button("Classify")
            label = gr.Label(label="Class")
            button.click(classify_image, image, label, api_name="classify_image")

        with gr.Tab("Time-series classification"):
            gr.Markdown(
                "UEA archive datasets with EA-DC-Transformer (one checkpoint per dataset). Upload a CSV file with"
                " one row per time step and one column per channel: JapaneseVowels has 12 channels and up to 29"
                " steps, BasicMotions 6 channels and 100 steps. A header line is allowed; empty fields are missing."
            )
            dataset = gr.Dropdown(list(SERIES_MODELS), value="JapaneseVowels", label="Dataset")
            csv_file = gr.File(file_types=[".csv"], type="filepath", label="CSV file")
            button = gr.Button("Classify")
            label = gr.Label(label="Class")
            button.click(classify_series, [dataset, csv_file], label, api_name="classify_series")
    return app


if __name__ == "__main__":
    build_app().launch()
