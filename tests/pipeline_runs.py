"""The pipeline calls that tests run with ea_hf and, in a fresh interpreter, as remote code (so: no ea_hf import)."""

import numpy as np
from PIL import Image
from transformers import pipeline


TEXTS = ["What a [MASK] film.", "The acting is [MASK] but the story is thin."]


def images():
    """Two fixed RGB images of different sizes (the image processor resizes them)."""
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)) for shape in ((40, 48, 3), (64, 32, 3))]


def run_pipelines(folders, **kwargs):
    fill = pipeline("fill-mask", model=folders["fill-mask"], **kwargs)
    classify = pipeline("text-classification", model=folders["text-classification"], **kwargs)
    classify_images = pipeline("image-classification", model=folders["image-classification"], **kwargs)
    return {
        "image-classification": [
            [(p["label"], round(p["score"], 6)) for p in preds] for preds in classify_images(images(), top_k=2)
        ],
        "fill-mask": [[(p["token_str"], round(p["score"], 6)) for p in preds] for preds in fill(TEXTS, top_k=3)],
        "text-classification": [
            (p["label"], round(p["score"], 6)) for p in classify([t.replace("[MASK]", "fine") for t in TEXTS])
        ],
    }
