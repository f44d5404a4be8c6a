"""Pictures that explain diffusion: plots and grids drawn with Pillow (no ComfyUI imports)."""
