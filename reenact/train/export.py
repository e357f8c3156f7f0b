"""Export a training checkpoint as the identity model the pipeline loads."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from reenact.errors import TrainingError
from reenact.models.encoders import AttributeEncoder
from reenact.models.mapper import IdentityModelConfig, Mapper, save_identity_model
from reenact.train.trainer import checkpoint_config, read_checkpoint


def export_identity_model(checkpoint: str | Path, out_dir: str | Path) -> Path:
    """Write the checkpoint's attribute encoder and mapper to ``out_dir`` (safetensors + JSON).

    Load the result with :func:`reenact.models.mapper.load_identity_model`.
    """
    tensors, meta = read_checkpoint(checkpoint)
    config = checkpoint_config(checkpoint)
    enc_cfg = replace(config.attribute_encoder, imagenet_init=False, imagenet_weights=None)
    encoder = AttributeEncoder(enc_cfg)
    mapper = Mapper(config.mapper)
    for prefix, module in (("attr", encoder), ("mapper", mapper)):
        state = {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise TrainingError(f"checkpoint {checkpoint} does not match its own config: {exc}") from exc
    identity = config.face_models.identity
    model_config = IdentityModelConfig(
        attribute_encoder=enc_cfg,
        mapper=config.mapper,
        identity=replace(identity, path=Path(identity.path).name),
        image_size=int(meta.get("resolution", config.generator.resolution)),
        num_ws=int(meta.get("num_ws", 0)),
        step=int(meta["step"]),
    )
    return save_identity_model(encoder, mapper, model_config, out_dir)
