"""The evolving-attention fields every EA config adds to its host config, declared, documented and checked once."""

from dataclasses import dataclass

from transformers.utils import logging

from .evolving_attention import EA_ACTIVATIONS


logger = logging.get_logger(__name__)


def check_weight(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"`{name}` must be a number in [0, 1], got {value!r}.")


def check_kernel_size(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value % 2 == 0:
        raise ValueError(f"`{name}` must be an odd positive integer (1, 3, 5, ...), got {value!r}.")


def check_choice(choices):
    def check(name: str, value) -> None:
        if value not in choices:
            raise ValueError(f"`{name}` must be one of {sorted(choices)}, got {value!r}.")

    return check


# every EA field with a range: checked whenever it is set (construction, `from_pretrained(..., ea_alpha=...)`, later)
EA_FIELD_CHECKS = {
    "ea_alpha": check_weight,
    "ea_beta": check_weight,
    "ea_kernel_size": check_kernel_size,
    "ea_activation": check_choice(EA_ACTIVATIONS),
    "ea_conv": check_choice(("raster", "grid")),
}


@dataclass(repr=False, eq=False)
class EAConfigMixin:
    r"""The EA fields of every EA config (a family may change a default or add switches):

    ea_alpha (`float`, defaults to 0.1):
        Weight of the convolution branch: `E = alpha * act(conv(M)) + (1 - alpha) * M`.
    ea_beta (`float`, defaults to 0.1):
        Weight of the previous layer's map: `M = (1 - beta) * S + beta * E_prev`.
    ea_kernel_size (`int`, defaults to 3):
        Odd kernel size of the Conv2d over the (query, key) plane.
    ea_activation (`str`, defaults to `"relu"`):
        Activation of the convolution branch: `"relu"`, `"leaky_relu"`, `"gelu"` or `"identity"`.

    Each family adds a switch per chain (`ea_encoder` in `EAEncoderConfigMixin`, `ea_decoder`, ...). With every chain
    off (or `ea_alpha = ea_beta = 0`) the model computes exactly what its vanilla twin computes.

    A value out of range raises a `ValueError` naming the field whenever it is set. A subclass sets `host_model_type`
    (the vanilla `model_type` it converts: its `from_pretrained` loads such a config and adds the EA fields) and
    `default_auto_map` (the remote-code class of every head, so that a saved folder loads each head with
    `trust_remote_code=True`).
    """

    host_model_type = None
    default_auto_map = {}

    ea_alpha: float | int = 0.1
    ea_beta: float | int = 0.1
    ea_kernel_size: int = 3
    ea_activation: str = "relu"

    def __setattr__(self, name, value):
        if name in EA_FIELD_CHECKS:
            EA_FIELD_CHECKS[name](name, value)
        super().__setattr__(name, value)

    def __post_init__(self, **kwargs):
        if getattr(self, "auto_map", None) is None:
            self.auto_map = dict(self.default_auto_map)
        super().__post_init__(**kwargs)

    @classmethod
    def get_config_dict(cls, pretrained_model_name_or_path, **kwargs):
        config_dict, kwargs = super().get_config_dict(pretrained_model_name_or_path, **kwargs)
        model_type = config_dict.get("model_type")
        if model_type is not None and model_type == cls.host_model_type:
            ea_fields = {name: field.default for name, field in cls.__dataclass_fields__.items()}
            ea_fields = {name: value for name, value in ea_fields.items() if name.startswith("ea_")}
            logger.warning(
                f"Converting a vanilla `{model_type}` config to `{cls.model_type}` ({cls.__name__}): adding evolving "
                f"attention with {', '.join(f'{k}={kwargs.get(k, v)}' for k, v in ea_fields.items())}; the EA "
                "convolutions are new weights."
            )
            config_dict = {**config_dict, "model_type": cls.model_type}
        elif model_type is not None and model_type != cls.model_type:
            raise ValueError(
                f"{pretrained_model_name_or_path} holds a `{model_type}` checkpoint; {cls.__name__} loads only "
                f"`{cls.model_type}`"
                + (f" or vanilla `{cls.host_model_type}`" if cls.host_model_type else "")
                + " checkpoints."
            )
        return config_dict, kwargs


@dataclass(repr=False, eq=False)
class EAEncoderConfigMixin(EAConfigMixin):
    r"""The EA fields of a model with an encoder (BERT, ViT, T5, Marian, the DC-Transformer): `EAConfigMixin`'s and

    ea_encoder (`bool`, defaults to `True`):
        Evolve the attention maps through the encoder's self-attention layers.
    """

    ea_encoder: bool = True
