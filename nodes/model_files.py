"""Model files at the node boundary: 'folder/name' choices over ComfyUI's model folders, and their paths.

The pack's own models live in the ComfyUI model folder 'diffusion_blocks': ComfyUI's models/diffusion_blocks
(for models people train themselves) and the pack's bundled models/ folder, so the shipped model is a
choice like any other and needs no download.
"""
import os
from pathlib import Path

import folder_paths

PACK_FOLDER = "diffusion_blocks"
BUNDLED_MODELS = Path(__file__).resolve().parents[1] / "models"


def register_pack_folder():
    """Add the 'diffusion_blocks' model folder to ComfyUI's folder_paths (idempotent)."""
    folder_paths.add_model_folder_path(PACK_FOLDER, os.path.join(folder_paths.models_dir, PACK_FOLDER))
    folder_paths.add_model_folder_path(PACK_FOLDER, str(BUNDLED_MODELS))
    paths, extensions = folder_paths.folder_names_and_paths[PACK_FOLDER]
    if not extensions:
        folder_paths.folder_names_and_paths[PACK_FOLDER] = (paths, set(folder_paths.supported_pt_extensions))


def model_file_options(folders):
    """'folder/name' for every file in the given ComfyUI model folders, in folder order."""
    register_pack_folder()
    return [f"{folder}/{name}" for folder in folders for name in folder_paths.get_filename_list(folder)]


def resolve_model_file(option, folders, input_name):
    """The full path of a 'folder/name' choice; a clear error naming the input for anything else."""
    register_pack_folder()
    folder, _, name = option.partition("/")
    if folder not in folders or not name:
        raise ValueError(f"{input_name}: {option!r} is not in {' or '.join(folders)} (expected 'folder/name')")
    return folder_paths.get_full_path_or_raise(folder, name)
