"""The pipeline calls that tests run with ea_hf and, in a fresh interpreter, as remote code (so: no ea_hf import)."""

from transformers import pipeline


TEXTS = ["What a [MASK] film.", "The acting is [MASK] but the story is thin."]


def run_pipelines(folders, **kwargs):
    fill = pipeline("fill-mask", model=folders["fill-mask"], **kwargs)
    classify = pipeline("text-classification", model=folders["text-classification"], **kwargs)
    return {
        "fill-mask": [[(p["token_str"], round(p["score"], 6)) for p in preds] for preds in fill(TEXTS, top_k=3)],
        "text-classification": [
            (p["label"], round(p["score"], 6)) for p in classify([t.replace("[MASK]", "fine") for t in TEXTS])
        ],
    }
