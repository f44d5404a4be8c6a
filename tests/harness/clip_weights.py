"""Random-weight CLIP text towers of the real architectures at reduced width, as Hugging Face models and as files.

Depth, vocabulary, context length, activation and head width (64) are the real ones; only the width
shrinks (768/1024/1280 -> 128 by default), so every layer and every key of the real model is there.
All parameters, layer norms and biases included, are drawn at random so that nothing is trivially 1 or 0.
"""
import pytest
import torch

from diffusion_blocks.networks.clip_text import ARCHITECTURES

REDUCED_WIDTH = 128


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Run a module's small-tensor work on one thread (restored after): a second thread only adds
    synchronisation, which costs several times the work itself when the machine is busy."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def reduced_config(architecture, width=REDUCED_WIDTH, projection=96):
    """transformers.CLIPTextConfig of a real tower (clip_l / clip_h / clip_g) at a reduced width."""
    import transformers

    real = ARCHITECTURES[architecture]
    return transformers.CLIPTextConfig(
        vocab_size=real.vocabulary, hidden_size=width, intermediate_size=4 * width, projection_dim=projection,
        num_hidden_layers=real.layers, num_attention_heads=real.heads if width == real.width else width // 64,
        max_position_embeddings=real.positions,
        hidden_act=real.activation, layer_norm_eps=real.norm_eps, eos_token_id=real.end_token,
        bos_token_id=49406, pad_token_id=1)


def random_hf_tower(architecture, seed=0, width=REDUCED_WIDTH, projection=96):
    """A transformers.CLIPTextModelWithProjection with every parameter random (seeded), in float32, eval mode."""
    import transformers

    torch.manual_seed(seed)
    model = transformers.CLIPTextModelWithProjection(reduced_config(architecture, width, projection)).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "layer_norm" in name and name.endswith("weight"):
                parameter.copy_(1 + 0.2 * torch.randn(parameter.shape, generator=generator))
            elif name.endswith("bias") or "layer_norm" in name:
                parameter.copy_(0.1 * torch.randn(parameter.shape, generator=generator))
            elif "embedding" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * (0.5 if "position" in name else 1.0))
            else:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) / parameter.shape[1] ** 0.5)
    return model


def hf_state_dict(model, prefix="", with_projection=True):
    """The model's tensors with Hugging Face names (`text_model.*`, `text_projection.weight`) under a prefix."""
    state = {k: v.clone() for k, v in model.state_dict().items() if with_projection or not k.startswith("text_projection")}
    state = {k: v for k, v in state.items() if not k.endswith("position_ids")}
    return {prefix + k: v for k, v in state.items()}


def openclip_state_dict(model, prefix=""):
    """The same tensors with OpenCLIP's names: fused in_proj, `positional_embedding`, transposed `text_projection`."""
    source = {k[len("text_model."):]: v for k, v in model.state_dict().items() if k.startswith("text_model.")}
    out = {"token_embedding.weight": source["embeddings.token_embedding.weight"],
           "positional_embedding": source["embeddings.position_embedding.weight"],
           "ln_final.weight": source["final_layer_norm.weight"], "ln_final.bias": source["final_layer_norm.bias"],
           "text_projection": model.state_dict()["text_projection.weight"].T.contiguous(),
           "logit_scale": torch.tensor(4.6052)}
    for i in range(model.config.num_hidden_layers):
        layer, block = f"encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[block + f"attn.in_proj_{kind}"] = torch.cat([source[layer + f"self_attn.{p}_proj.{kind}"] for p in "qkv"])
            out[block + f"attn.out_proj.{kind}"] = source[layer + f"self_attn.out_proj.{kind}"]
            out[block + f"ln_1.{kind}"] = source[layer + f"layer_norm1.{kind}"]
            out[block + f"ln_2.{kind}"] = source[layer + f"layer_norm2.{kind}"]
            out[block + f"mlp.c_fc.{kind}"] = source[layer + f"mlp.fc1.{kind}"]
            out[block + f"mlp.c_proj.{kind}"] = source[layer + f"mlp.fc2.{kind}"]
    return {prefix + k: v.clone() for k, v in out.items()}


def token_batch(seed=0, batch=4, pad=49407, length=77):
    """Token ids like CLIP's windows: start, random text of varied length, end, padding."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.full((batch, length), pad, dtype=torch.long)
    for row, text_length in enumerate(torch.linspace(0, length - 2, batch).long().tolist()):
        ids[row, 0] = 49406
        ids[row, 1:1 + text_length] = torch.randint(0, 49406, (text_length,), generator=generator)
        ids[row, 1 + text_length] = 49407
    return ids
