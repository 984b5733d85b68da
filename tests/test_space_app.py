"""The Space app (`spaces/ea-hf-demo/app.py`) serving tiny checkpoint folders, started in a fresh interpreter where
ea_hf cannot be imported (the checkpoints load as remote code) and queried through gradio_client: every endpoint
answers as the same pipeline run here; a missing checkpoint gives an error from its own endpoint only, which (like
its tab) says how to build it; an exception inside a pipeline call reaches the user as a readable error."""

import copy
import importlib.util
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModel, AutoTokenizer, pipeline

import ea_hf
from ea_hf import (
    EABertForSequenceClassification,
    EABertModel,
    EADCTransformerConfig,
    EADCTransformerForTimeSeriesClassification,
    EALlamaConfig,
    EALlamaForCausalLM,
)
from scripts.examples.train_tokenizers import train_clm_tokenizer
from scripts.release import build_checkpoints

from ea_model_tester import BLOCK_EA_HF
from test_pipelines import save_tiny, save_tiny_vit
from test_translation_pipeline import ea_marian, marian, spm_files  # noqa: F401  (fixtures: the tiny EA-Marian)


pytest.importorskip("gradio")  # the app, in the server process
gradio_client = pytest.importorskip("gradio_client")

pytestmark = [
    pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses"),
    pytest.mark.usefixtures("one_thread"),
]

APP = Path(__file__).resolve().parents[1] / "spaces" / "ea-hf-demo" / "app.py"
# The app runs as `__main__`, in an interpreter that cannot import ea_hf
LAUNCHER = BLOCK_EA_HF + "import runpy, sys\nrunpy.run_path(sys.argv[1], run_name='__main__')\n"
STARTUP_SECONDS = 300  # importing torch, transformers and gradio on a busy 2-core machine
SERIES_LABELS = {0: "a", 1: "i", 2: "u"}
MISSING = "ea-dc-transformer-basicmotions"  # not built: its endpoint must fail, the others keep working
TEXTS = ["a gorgeous , witty , seductive movie .", "the plot is nothing but boilerplate ."]
SENTENCES = ["A man plays a guitar.", "Someone plays an instrument on a stage in front of a large crowd."]  # padded


def save_tiny_series_classifier(folder):
    torch.manual_seed(0)
    config = EADCTransformerConfig(
        num_channels=3,
        context_length=16,
        d_model=16,
        num_blocks=2,
        dim_feedforward=24,
        num_attention_heads=2,
        attention_key_fraction=0.25,
        attention_value_fraction=0.25,
        dropout=0.0,
        id2label=SERIES_LABELS,
        label2id={v: k for k, v in SERIES_LABELS.items()},
    )
    ea_hf.save_time_series_pipeline(EADCTransformerForTimeSeriesClassification(config).eval(), folder)


def save_tiny_llama(folder):
    tokenizer = AutoTokenizer.from_pretrained(train_clm_tokenizer(TEXTS + SENTENCES, folder, vocab_size=300))
    torch.manual_seed(0)
    config = EALlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, ea_alpha=0.5, ea_beta=0.5)  # fmt: skip
    EALlamaForCausalLM(config).save_pretrained(folder)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, ea_marian):  # noqa: F811
    """Tiny stand-ins for the Space's checkpoints, by their names, `MISSING` left out; and an image and a CSV."""
    root = tmp_path_factory.mktemp("space")
    labels = {0: "negative", 1: "positive"}
    save_tiny(EABertModel, root / "ea-minilm-l6")
    save_tiny(
        EABertForSequenceClassification,
        root / "ea-minilm-l6-rotten-tomatoes",
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
    )
    model, tokenizer = ea_marian
    model = copy.deepcopy(model)
    model.generation_config.max_new_tokens = 12  # random weights rarely stop on their own
    ea_hf.save_translation_pipeline(model, tokenizer, root / "ea-marian-en-es-bible")
    save_tiny_vit(root / "ea-vit-small-patch14-fashion-mnist")
    save_tiny_llama(root / "ea-llama-6l-kjv")
    save_tiny_series_classifier(root / "ea-dc-transformer-japanesevowels")

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(root / "image.png")
    Image.fromarray(rng.integers(0, 256, (40, 48), dtype=np.uint8)).save(root / "grey.png")
    Image.fromarray(rng.integers(0, 256, (40, 48, 4), dtype=np.uint8)).save(root / "rgba.png")
    np.savetxt(root / "series.csv", rng.normal(size=(11, 3)), delimiter=",", fmt="%.6g")
    return root


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(checkpoints, tmp_path_factory, request):
    """The app serving `checkpoints`, in a subprocess that cannot import ea_hf; its URL."""
    work = tmp_path_factory.mktemp("server")
    port = free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(work),
        "HF_HOME": str(work / "hf_home"),
        "HF_HUB_OFFLINE": "1",
        "EA_HF_MODEL_DIR": str(checkpoints),
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "GRADIO_TEMP_DIR": str(work / "gradio"),
        "OMP_NUM_THREADS": "1",
    }
    log_path = work / "server.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER, str(APP)], env=env, stdout=log, stderr=subprocess.STDOUT
        )

    def stop():
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    request.addfinalizer(stop)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        if process.poll() is not None:
            pytest.fail(f"The app exited with code {process.returncode}:\n{log_path.read_text()[-5000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return url
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"The app did not answer within {STARTUP_SECONDS} s:\n{log_path.read_text()[-5000:]}")
        time.sleep(1)


@pytest.fixture(scope="module")
def client(server):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
        yield gradio_client.Client(server, verbose=False, download_files=False, analytics_enabled=False)


def assert_same_confidences(answer, predictions):
    """A gr.Label answer against a pipeline's `[{"label", "score"}, ...]`."""
    expected = {p["label"]: p["score"] for p in predictions}
    got = {c["label"]: c["confidence"] for c in answer["confidences"]}
    assert got.keys() == expected.keys()
    assert got == pytest.approx(expected, abs=1e-5)
    assert answer["label"] == max(expected, key=expected.get)


def test_classify_text(client, checkpoints):
    classifier = pipeline("text-classification", model=str(checkpoints / "ea-minilm-l6-rotten-tomatoes"))
    for text in TEXTS:
        answer = client.predict(text, api_name="/classify_text")
        assert_same_confidences(answer, classifier(text, top_k=None))


def test_similarity(client, checkpoints):
    folder = checkpoints / "ea-minilm-l6"
    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    assert not batch["attention_mask"].all()
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    embeddings = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    expected = (embeddings[0] @ embeddings[1]).item()
    assert client.predict(*SENTENCES, api_name="/similarity") == pytest.approx(expected, abs=1e-4)  # 4 decimals
    assert client.predict(SENTENCES[0], SENTENCES[0], api_name="/similarity") == pytest.approx(1.0, abs=1e-4)


def test_translate(client, checkpoints):
    translator = pipeline("translation", model=str(checkpoints / "ea-marian-en-es-bible"), trust_remote_code=True)
    for text in ("the cat sees a dog", "a big green tree"):
        assert client.predict(text, api_name="/translate") == translator(text)[0]["translation_text"]


def test_generate(client, checkpoints):
    generator = pipeline("text-generation", model=str(checkpoints / "ea-llama-6l-kjv"), trust_remote_code=True)
    expected = generator("A man plays", max_new_tokens=5, do_sample=False)[0]["generated_text"]
    assert client.predict("A man plays", 5, api_name="/generate") == expected
    with pytest.raises(gradio_client.exceptions.AppError, match="Enter some text"):
        client.predict("", 5, api_name="/generate")


def test_classify_image(client, checkpoints):
    """Colour, grey and RGBA images: the app hands the pipeline RGB images (the image processor wants 3 channels)."""
    classifier = pipeline("image-classification", model=str(checkpoints / "ea-vit-small-patch14-fashion-mnist"))
    for name in ("image.png", "grey.png", "rgba.png"):
        answer = client.predict(gradio_client.handle_file(checkpoints / name), api_name="/classify_image")
        assert_same_confidences(answer, classifier(Image.open(checkpoints / name).convert("RGB"), top_k=5))


def test_classify_series(client, checkpoints):
    classifier = pipeline(
        "time-series-classification",
        model=str(checkpoints / "ea-dc-transformer-japanesevowels"),
        trust_remote_code=True,
    )
    csv_path = checkpoints / "series.csv"
    answer = client.predict("JapaneseVowels", gradio_client.handle_file(csv_path), api_name="/classify_series")
    assert_same_confidences(answer, classifier(str(csv_path), top_k=5))


def test_bad_input_is_an_error_of_its_endpoint(client, checkpoints, tmp_path):
    wrong_channels = tmp_path / "wrong.csv"
    np.savetxt(wrong_channels, np.ones((5, 4)), delimiter=",")
    with pytest.raises(gradio_client.exceptions.AppError, match="channels"):
        client.predict("JapaneseVowels", gradio_client.handle_file(wrong_channels), api_name="/classify_series")
    with pytest.raises(gradio_client.exceptions.AppError, match="Enter some text"):
        client.predict(" ", api_name="/translate")


def test_an_exception_inside_a_pipeline_call_is_a_readable_error(client):
    """The tiny stand-in's tokenizer allows 512 tokens, its model 128 positions: a long review fails inside the
    pipeline call, and the user reads why and what to do; the endpoint keeps working."""
    with pytest.raises(gradio_client.exceptions.AppError) as error:
        client.predict("a long review " * 60, api_name="/classify_text")
    message = str(error.value)
    assert "Classifying with ea-minilm-l6-rotten-tomatoes failed: ValueError: Sequence length" in message
    assert "exceeds max_position_embeddings=128" in message
    assert "Try another input; if every input fails, rebuild ea-minilm-l6-rotten-tomatoes with `make demo`" in message
    assert client.predict(TEXTS[0], api_name="/classify_text")["confidences"]


def test_missing_checkpoint_fails_only_its_endpoint(client, checkpoints):
    series = gradio_client.handle_file(checkpoints / "series.csv")
    build = f"`make demo`, then `.venv/bin/python -m scripts.release.build_checkpoints {MISSING}`"
    for _ in range(2):  # a failed load is not cached as a success, nor does it break the app
        with pytest.raises(gradio_client.exceptions.AppError) as error:
            client.predict("BasicMotions", series, api_name="/classify_series")
        assert f"Checkpoint {MISSING} is not built: there is no folder {checkpoints / MISSING}" in str(error.value)
        assert f"Build it in the ea-hf repository with {build}" in str(error.value)
    assert client.predict("JapaneseVowels", series, api_name="/classify_series")["confidences"]
    assert client.predict(TEXTS[0], api_name="/classify_text")["confidences"]
    assert isinstance(client.predict(*SENTENCES, api_name="/similarity"), float)


def test_tabs_say_how_to_build_their_missing_checkpoint(client):
    texts = [c.get("props", {}).get("value") for c in client.config["components"] if c.get("type") == "markdown"]
    notes = [text for text in texts if isinstance(text, str) and "Not available yet" in text]
    assert len(notes) == 1  # the time-series tab, for MISSING only
    assert f"`{MISSING}` is not built. Build it with `make demo`, then `.venv/bin/python -m" in notes[0]


def test_build_commands_name_real_checkpoints(monkeypatch):
    """Every checkpoint the app serves is one that `scripts.release.build_checkpoints` builds, as the app says."""
    monkeypatch.setenv("EA_HF_MODEL_DIR", "checkpoints")
    spec = importlib.util.spec_from_file_location("space_app", APP)
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    names = [
        app.SENTIMENT_MODEL,
        app.EMBEDDING_MODEL,
        app.TRANSLATION_MODEL,
        app.GENERATION_MODEL,
        app.IMAGE_MODEL,
        *app.SERIES_MODELS.values(),
    ]
    assert sorted(names) == sorted(build_checkpoints.CHECKPOINTS)
    assert app.build_command(app.SENTIMENT_MODEL) == "`make demo`"  # scripts/release/demo.py builds it
    for name in names[1:]:
        command = re.search(r"`(\.venv/bin/python -m [^`]*)`", app.build_command(name)).group(1)
        assert command.split()[1:] == ["-m", "scripts.release.build_checkpoints", name]
