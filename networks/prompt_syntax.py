"""The prompt syntax ComfyUI users write, read into CLIP token windows with a weight per token.

  (words)         weight x1.1 per level of nesting: ((words)) is x1.21
  (words:1.3)     weight 1.3 (it replaces, not multiplies, the weight around it)
  \\( \\)           literal parentheses
  embedding:name  the vectors of a textual inversion (Gal et al. 2022) from the embeddings folders

Tokens go into windows of 77 (start token, 75 tokens, end token, padding), CLIP's context length.
A span of text with one weight that is shorter than 8 tokens moves whole to the next window when it
does not fit; a longer span is cut at the window's edge. These are ComfyUI's rules, kept exactly so
that the same prompt gives the same conditioning. Unbalanced parentheses and weights that are not
numbers are read as ComfyUI reads them (kept as text, x1.1) and reported in `problems`.
"""
import functools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .weights import WeightFileError, read_state_dict

WINDOW = 77
KEEP_TOGETHER = 8  # spans shorter than this many tokens are never cut between windows
NESTING_WEIGHT = 1.1
EMBEDDING = "embedding:"
EMBEDDING_SUFFIXES = (".safetensors", ".pt", ".bin")
ESCAPES = {"\\(": "\0\2", "\\)": "\0\1"}


@dataclass(frozen=True)
class Token:
    """One slot of a window: a token id or an embedding vector, its weight, and the span it came from (0: none)."""

    value: object
    weight: float = 1.0
    span: int = 0


@dataclass
class PromptTokens:
    """A prompt read into windows of WINDOW tokens; `spans[i - 1]` is the text of span i; `problems` for people."""

    windows: list
    spans: list = field(default_factory=list)
    problems: list = field(default_factory=list)


class EmbeddingNotFound(ValueError):
    """`embedding:name` names no file in the embeddings folders."""


def parse_weights(text):
    """[(text, weight)] spans of a prompt and a list of problems (unbalanced parentheses, non-numeric weights)."""
    for escape, placeholder in ESCAPES.items():
        text = text.replace(escape, placeholder)
    problems = _bracket_problems(text)
    spans = _weighted_spans(text, 1.0, problems)
    return [(_unescape(span), weight) for span, weight in spans], problems


def _weighted_spans(text, weight, problems):
    spans = []
    for part in _top_level_parts(text):
        if len(part) < 2 or not (part.startswith("(") and part.endswith(")")):
            spans.append((part, weight))
            continue
        inner, inner_weight = part[1:-1], weight * NESTING_WEIGHT
        colon = inner.rfind(":")
        if colon > 0:
            try:
                inner_weight = float(inner[colon + 1:])
                inner = inner[:colon]
            except ValueError:
                if inner[:colon].count("(") == inner[:colon].count(")"):  # the ':' is this group's own
                    problems.append(f"{_unescape(part)!r}: {_unescape(inner[colon + 1:]).strip()!r} is not a number, "
                                    f"so the ':' stays text and the weight is x{NESTING_WEIGHT}")
            else:
                if not math.isfinite(inner_weight):
                    raise ValueError(f"prompt weight in {_unescape(part)!r} is not a finite number")
        spans += _weighted_spans(inner, inner_weight, problems)
    return spans


def _top_level_parts(text):
    """Cut text at the outermost parentheses: '(a) b ((c))' -> '(a)', ' b ', '((c))'. A stray ')' stays text."""
    parts, current, depth = [], "", 0
    for char in text:
        if char == "(" and depth == 0 and current:
            parts.append(current)
            current = ""
        current += char
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                parts.append(current)
                current = ""
    return parts + ([current] if current else [])


def _bracket_problems(text):
    depth, opened, problems = 0, [], []
    for position, char in enumerate(text):
        if char == "(":
            depth += 1
            opened.append(position)
        elif char == ")":
            depth -= 1
            if opened:
                opened.pop()
            if depth < 0:
                problems.append(f"')' at character {position + 1} closes nothing: it stays text "
                                f"(and the parentheses after it are read differently; escape it as \\))")
                break
    problems += [f"'(' at character {p + 1} is never closed: it stays text with the weight around it"
                 for p in (opened if depth > 0 else [])]
    return problems


def _unescape(text):
    for escape, placeholder in ESCAPES.items():
        text = text.replace(placeholder, escape[1])
    return text


class EmbeddingLibrary:
    """Textual-inversion files found by name in folders (and their subfolders), as ComfyUI's `embedding:` does."""

    def __init__(self, directories):
        self.directories = [Path(d) for d in ([directories] if isinstance(directories, (str, os.PathLike)) else directories)]

    def find(self, name):
        """The file for `name` (with or without its suffix), or None; names never leave their folder."""
        for root in self.folders:
            root = os.path.abspath(root)
            candidate = os.path.abspath(os.path.join(root, name))
            if not name or os.path.commonpath((root, candidate)) != root:
                continue
            for path in (candidate, *(candidate + suffix for suffix in EMBEDDING_SUFFIXES)):
                if os.path.isfile(path):
                    return Path(path)
        return None

    @functools.cached_property
    def folders(self):
        """The folders searched, in order: each given folder, then its subfolders sorted by path."""
        found = []
        for directory in self.directories:
            if directory.is_dir():
                found += [directory, *sorted(p for p in directory.rglob("*") if p.is_dir())]
        return found

    def vectors(self, name, key, width):
        """The embedding's vectors as (n, width) float32; a clear error when missing or of another width."""
        path = self.find(name)
        if path is None:
            where = "ComfyUI's embeddings folder(s)" if self.directories else "any folder (none is set up)"
            raise EmbeddingNotFound(f"embedding:{name}: no file {name}{{,{','.join(EMBEDDING_SUFFIXES)}}} in {where}")
        vectors = read_embedding(path, key, width)
        return vectors.reshape(-1, vectors.shape[-1]).float()


def read_embedding(path, key, width):
    """The vectors of a textual-inversion file: the entry `key` (e.g. 'clip_l' in SDXL files), 'emb_params'
    (safetensors from A1111), 'string_to_param' (A1111 .pt), or the file's only tensor of the right width."""
    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        data = read_state_dict(path)
    else:
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # torch.load raises many kinds for a bad or unsafe file
            raise WeightFileError(f"{path.name}: not a readable embedding file: {error}") from None
    if isinstance(data, dict) and isinstance(data.get("string_to_param"), dict):
        data = data["string_to_param"]
    tensors = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)} if isinstance(data, dict) else {}
    for name in (key, "emb_params"):
        if name in tensors:
            chosen = tensors[name]
            break
    else:
        fitting = [v for v in tensors.values() if v.shape[-1:] == (width,)]
        if len(fitting) != 1:
            found = ", ".join(f"{k} {tuple(v.shape)}" for k, v in tensors.items()) or "no tensors"
            raise WeightFileError(f"{path.name}: expected one embedding of width {width} (or a '{key}' entry); found {found}")
        chosen = fitting[0]
    if chosen.shape[-1] != width:
        raise WeightFileError(f"{path.name}: its vectors are {chosen.shape[-1]} wide; this text encoder needs {width} "
                              f"(an embedding made for another model?)")
    return chosen


def split_embeddings(text):
    """Cut a span where 'embedding:' starts a word (after a space or a new line, or at the start)."""
    pieces, start = [], 0
    for position in range(1, len(text)):
        if text[position - 1] in " \n" and text.startswith(EMBEDDING, position):
            pieces.append(text[start:position - 1])
            start = position
    pieces.append(text[start:])
    return [p for p in pieces if p]


def tokenize_prompt(text, tokenizer, pad, embeddings=None, embedding_key="clip_l", width=768):
    """A prompt as PromptTokens: spans by weight, embeddings resolved, tokens laid out in windows of 77.

    Without an EmbeddingLibrary, 'embedding:name' is plain text (as in ComfyUI without an embeddings folder).
    """
    spans, problems = parse_weights(text)
    groups, texts = [], []
    for span, weight in spans:
        for piece in split_embeddings(span):
            if piece.startswith(EMBEDDING) and embeddings is not None:
                label, vectors, piece = _embedding(piece[len(EMBEDDING):], embeddings, embedding_key, width)
                groups.append([Token(v, weight) for v in vectors])
                texts.append(label)
                if not piece:
                    continue
            groups.append([Token(t, weight) for t in tokenizer.encode(piece)])
            texts.append(piece)
    windows = _windows(groups, tokenizer.start, tokenizer.end, pad)
    return PromptTokens(windows=windows, spans=texts, problems=problems)


def _embedding(rest, embeddings, key, width):
    """(label, vectors, text after the name): the name ends at white space; 'name,' falls back to 'name' + ','."""
    name, *leftover = rest.split(None, 1) or [""]
    leftover = " ".join(" ".join(leftover).split())
    if not name:
        raise EmbeddingNotFound("'embedding:' is followed by no name")
    stripped = name.rstrip(",")
    if stripped and stripped != name and embeddings.find(name) is None:
        name, leftover = stripped, f"{name[len(stripped):]} {leftover}"
    return f"{EMBEDDING}{name}", embeddings.vectors(name, key, width), leftover


def _windows(groups, start, end, pad):
    """Lay the groups out in windows: [start, up to 75 tokens, end, pad...]."""
    room = WINDOW - 2
    windows, current = [], []
    for span, group in enumerate(groups, start=1):
        group = [Token(t.value, t.weight, span) for t in group]
        while group:
            free = room - len(current)
            if len(group) <= free:
                current += group
                group = []
            else:
                if len(group) >= KEEP_TOGETHER:
                    current, group = current + group[:free], group[free:]
                windows.append(_close(current, start, end, pad))
                current = []
    windows.append(_close(current, start, end, pad))
    return windows


def _close(tokens, start, end, pad):
    window = [Token(start), *tokens, Token(end)]
    return window + [Token(pad)] * (WINDOW - len(window))
