"""Pixel-space pictures between conventions: the network's [-1, 1] (B, 3, H, W) and images in [0, 1] or uint8."""
import torch


def image_to_pixels(image: torch.Tensor) -> torch.Tensor:
    """An image (B, H, W, 3+) in [0, 1] -> pixel-space latent (B, 3, H, W) in [-1, 1]: x = 2 img - 1."""
    return (2 * image[..., :3].float() - 1).movedim(-1, 1)


def pixels_to_image(samples: torch.Tensor) -> torch.Tensor:
    """Pixel-space latent (B, 3, H, W) in [-1, 1] -> image (B, H, W, 3) in [0, 1], clamped."""
    return ((samples.float() + 1) / 2).clamp(0, 1).movedim(1, -1)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8, rounded."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)
