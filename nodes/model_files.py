"""Model files at the node boundary: 'folder/name' choices over ComfyUI's model folders, and their paths."""


def model_file_options(folders):
    """'folder/name' for every file in the given ComfyUI model folders, in folder order."""
    import folder_paths

    return [f"{folder}/{name}" for folder in folders for name in folder_paths.get_filename_list(folder)]


def resolve_model_file(option, folders, input_name):
    """The full path of a 'folder/name' choice; a clear error naming the input for anything else."""
    import folder_paths

    folder, _, name = option.partition("/")
    if folder not in folders or not name:
        raise ValueError(f"{input_name}: {option!r} is not in {' or '.join(folders)} (expected 'folder/name')")
    return folder_paths.get_full_path_or_raise(folder, name)
