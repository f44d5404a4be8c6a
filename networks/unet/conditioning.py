"""SDXL's vector condition: pooled text plus Fourier embeddings of image size, crop and score (Podell et al. 2023, sec. 2.2)."""
import torch

from .layers import timestep_embedding

SIZE_EMBED_DIM = 256  # width of each micro-conditioning's sinusoidal embedding


def micro_conditioning(values, batch):
    """Each number embedded like a timestep (SIZE_EMBED_DIM wide), concatenated, repeated over the batch."""
    embedded = timestep_embedding(torch.tensor(values, dtype=torch.float32), SIZE_EMBED_DIM)
    return embedded.flatten()[None].expand(batch, -1)


def sdxl_vector(pooled, size, crop=(0, 0), target_size=None):
    """y for SDXL base: pooled text (B, 1280), original (height, width), crop (top, left) and target (height, width)."""
    height, width = size
    target = target_size or size
    return torch.cat([pooled.float(), micro_conditioning([height, width, *crop, *target], pooled.shape[0])], dim=1)


def refiner_vector(pooled, size, crop=(0, 0), aesthetic_score=6.0):
    """y for the SDXL refiner: pooled text (B, 1280), original (height, width), crop and an aesthetic score
    (6 for the prompt, 2.5 for the negative prompt in the reference pipelines)."""
    height, width = size
    return torch.cat([pooled.float(), micro_conditioning([height, width, *crop, aesthetic_score], pooled.shape[0])], dim=1)
