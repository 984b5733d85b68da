"""Attention maps layer by layer, vanilla beside EA, as in the paper's figures.

`collect_attentions` runs a model (EA or vanilla, text or image) and keeps the first example's attention
probabilities of every layer; `plot_attention_maps` draws several models' maps as one grid, a row per model and a
column per layer. matplotlib (`pip install "ea-hf[plot]"`) is imported only when a figure is drawn, so that
`import ea_hf` never needs it.
"""

from collections.abc import Mapping, Sequence

import torch


def collect_attentions(model, inputs: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
    """Run `model(**inputs, output_attentions=True)` in eval mode without gradients and return the first example's
    attention probabilities: one float CPU tensor [H, L, L] (query, key) per layer.

    `inputs` is what the tokenizer or image processor returns (`input_ids` [B, L], `pixel_values` [B, C, h, w], ...).
    With an `attention_mask` [B, L], padded positions are cropped from both axes: L is the first example's number of
    real tokens. The model must return its attentions: vanilla transformers models only do with
    `attn_implementation="eager"` (EA models always use eager attention).
    """
    implementation = getattr(model.config, "_attn_implementation", None)
    if implementation not in (None, "eager"):
        raise ValueError(
            f"{type(model).__name__} uses attn_implementation={implementation!r}, which returns no attention "
            "probabilities: load it with `from_pretrained(..., attn_implementation='eager')`."
        )
    device = next(model.parameters()).device
    inputs = {name: value.to(device) if torch.is_tensor(value) else value for name, value in inputs.items()}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            attentions = model(**inputs, output_attentions=True).attentions
    finally:
        model.train(was_training)
    if not attentions or any(attention is None for attention in attentions):
        raise ValueError(
            f"{type(model).__name__} returned no attention probabilities: load it with "
            "`from_pretrained(..., attn_implementation='eager')`."
        )
    maps = [attention[0].detach().float().cpu() for attention in attentions]
    mask = inputs.get("attention_mask")
    if mask is not None:
        real = mask[0].detach().cpu().bool()
        if real.shape[0] != maps[0].shape[-1]:
            raise ValueError(f"attention_mask has {real.shape[0]} positions, the attentions {maps[0].shape[-1]}.")
        maps = [attention[:, real][:, :, real] for attention in maps]
    return maps


def _cls_grid(cls_to_grid: bool | tuple[int, int], length: int) -> tuple[int, int]:
    """The patch grid (h, w) that the CLS row's `length - 1` patch entries fill."""
    if cls_to_grid is True:
        side = round((length - 1) ** 0.5)
        if side * side != length - 1:
            raise ValueError(
                f"cls_to_grid=True needs a square patch grid, but L - 1 = {length - 1} patches: pass (h, w)."
            )
        return side, side
    height, width = cls_to_grid
    if height * width != length - 1:
        raise ValueError(f"cls_to_grid={cls_to_grid!r}: {height} x {width} patches, but L - 1 = {length - 1}.")
    return height, width


def plot_attention_maps(
    maps: Mapping[str, Sequence[torch.Tensor]],
    labels: Sequence[str] | None = None,
    layers: Sequence[int] | None = None,
    head: str | int = "mean",
    title: str | None = None,
    cls_to_grid: bool | tuple[int, int] = False,
):
    """Draw attention maps as a grid: one row per model (`maps`' keys, e.g. "vanilla" and "EA"), one column per layer.

    Args:
        maps: model name -> per-layer [H, L, L] tensors (as `collect_attentions` returns them).
        labels: the L token strings, written on both axes when L <= 32.
        layers: the layer indices to draw (default: every layer); each model must have them.
        head: "mean" (mean over the heads) or one head's index.
        title: the figure's title (default: which heads are drawn).
        cls_to_grid: for images (ViT, L = 1 + h * w): draw the CLS query's row over the patches, reshaped to the
            patch grid, instead of the [L, L] map; True for a square grid, or (h, w).

    Colours share one scale across the whole figure (0 to the largest value drawn, one colour bar), so that a colour is
    the same probability in every cell and the models compare directly. The figure is built on matplotlib's
    non-interactive Agg canvas without pyplot (no display needed, pyplot's state untouched): save it with
    `fig.savefig("maps.png")`. `fig.axes` holds the cells row by row, then the colour bar.

    Returns:
        a `matplotlib.figure.Figure`.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError('Plotting attention maps needs matplotlib: pip install "ea-hf[plot]"') from error

    if not maps:
        raise ValueError("maps is empty: pass at least one model's attentions.")
    if head != "mean" and (isinstance(head, bool) or not isinstance(head, int)):
        raise ValueError(f'head must be "mean" or a head index, got {head!r}.')
    num_layers = min(len(model_maps) for model_maps in maps.values())
    layers = list(range(num_layers)) if layers is None else list(layers)
    if not layers:
        raise ValueError("layers is empty.")
    for layer in layers:
        if not -num_layers <= layer < num_layers:
            raise ValueError(f"Layer {layer} out of range: the models have {num_layers} layers.")

    cells = {}  # (model name, layer) -> 2-D array to draw
    for name, model_maps in maps.items():
        for layer in layers:
            attention = model_maps[layer]
            if attention.dim() != 3 or attention.shape[-1] != attention.shape[-2]:
                raise ValueError(f"{name} layer {layer}: expected an [H, L, L] tensor, got {tuple(attention.shape)}.")
            if head == "mean":
                attention = attention.float().mean(0)
            elif not -attention.shape[0] <= head < attention.shape[0]:
                raise ValueError(f"head {head} out of range: {name} has {attention.shape[0]} heads.")
            else:
                attention = attention[head].float()
            length = attention.shape[-1]
            if labels is not None and not cls_to_grid and len(labels) != length:
                raise ValueError(f"{len(labels)} labels for {name}'s {length} positions.")
            if cls_to_grid:
                attention = attention[0, 1:].reshape(_cls_grid(cls_to_grid, length))
            cells[name, layer] = attention.numpy()
    vmax = max(float(cell.max()) for cell in cells.values()) or 1.0

    rows, columns = len(maps), len(layers)
    length = max(cell.shape[-1] for cell in cells.values())
    show_labels = labels is not None and not cls_to_grid and len(labels) <= 32
    size = max(2.4, 0.16 * length) if show_labels else 2.4
    figure = Figure(figsize=(size * columns + 1.2, size * rows + 0.8), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False)
    for row, name in enumerate(maps):
        for column, layer in enumerate(layers):
            ax = axes[row, column]
            image = ax.imshow(cells[name, layer], cmap="viridis", vmin=0.0, vmax=vmax, interpolation="nearest")
            ax.set_title(f"{name}, layer {layer % num_layers}", fontsize=9)
            if show_labels:
                positions = range(len(labels))
                ax.set_xticks(positions, labels, rotation=90, fontsize=6)
                ax.set_yticks(positions, labels if column == 0 else [""] * len(labels), fontsize=6)
            else:
                ax.set_xticks([])
                ax.set_yticks([])
    figure.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="attention probability")
    if title is None:
        what = "mean over heads" if head == "mean" else f"head {head}"
        title = f"CLS attention to the patches ({what})" if cls_to_grid else f"Attention maps ({what})"
    figure.suptitle(title)
    return figure
