"""A small U-Net file in ComfyUI's diffusion_models folders, for node-tier tests that load it through Load U-Net."""
import torch

from diffusion_blocks.networks.prediction import TrainingSpec
from diffusion_blocks.networks.unet import UNet, UNetConfig
from diffusion_blocks.networks.unet_loading import save_unet

SMALL = UNetConfig(model_channels=32, channel_mult=(1, 2), num_res_blocks=(1, 1), transformer_depth=(1, 1),
                   transformer_depth_output=(1, 1, 1, 1), context_dim=16, num_heads=2)


def small_unet_file(tmp_path_factory, name):
    """Load U-Net's name of a new file `name`.safetensors: SMALL with seeded weights and no zero-initialised layer."""
    import folder_paths

    torch.manual_seed(0)
    unet = UNet(SMALL).eval()
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    folder = tmp_path_factory.mktemp(f"{name}_models") / "diffusion_models"
    folder.mkdir()
    save_unet(unet, folder / f"{name}.safetensors", TrainingSpec())
    folder_paths.add_model_folder_path("diffusion_models", str(folder), is_default=True)
    return f"diffusion_models/{name}.safetensors"
