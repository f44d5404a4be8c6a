"""A text encoder as a diffusion model uses it: its CLIP towers, the layer it reads, padding, pooled output.

A prompt becomes conditioning in three steps: the prompt syntax gives windows of 77 weighted tokens
(prompt_syntax.py); each window runs through the tower and the chosen layer is kept; a token of
weight w != 1 is moved from the empty prompt's encoding e towards its own encoding z by w:
z' = (z - e) w + e (ComfyUI's rule, so that a weight scales what the token adds to an empty prompt).
The windows are concatenated along the tokens; the pooled output is the first window's.
"""
import torch

from .clip_text import END_TOKEN, START_TOKEN
from .clip_tokenizer import default_tokenizer
from .families import TEXT_CONDITIONINGS, TextConditioning
from .prompt_syntax import WINDOW, Token, tokenize_prompt


class TextEncoder(torch.nn.Module):
    """Prompt -> (cond (1, 77 n, width), pooled (1, P)) for one model family; towers are ClipTextTransformers.

    family: a TextConditioning (networks.families) or its name; kept as `.family`.
    """

    def __init__(self, family: TextConditioning | str, towers, tokenizer=None):
        super().__init__()
        self.family = TEXT_CONDITIONINGS[family] if isinstance(family, str) else family
        missing = [use.name for use in self.family.towers if use.name not in towers]
        if missing:
            raise ValueError(f"{self.family.name} needs the tower(s) {', '.join(missing)}")
        self.towers = torch.nn.ModuleDict({use.name: towers[use.name] for use in self.family.towers})
        self.tokenizer = tokenizer or default_tokenizer()

    def tokenize(self, text, embeddings=None):
        """{tower name: PromptTokens} (the towers differ in padding and embedding vectors only)."""
        return {use.name: tokenize_prompt(text, self.tokenizer, use.pad, embeddings, use.embedding_key,
                                          self.towers[use.name].config.width)
                for use in self.family.towers}

    def encode(self, text, layer=None, embeddings=None):
        """(cond, pooled) of a prompt; layer: None for the family's own, else -1 (last), -2, ... for every tower."""
        return self.encode_tokens(self.tokenize(text, embeddings), layer)

    @torch.no_grad()
    def encode_tokens(self, tokens, layer=None):
        """(cond, pooled) from tokenize()'s windows, as float32 on the towers' device."""
        conds, pooled = [], None
        for use in self.family.towers:
            tower = self.towers[use.name]
            hidden, first_pooled = encode_windows(tower, tokens[use.name].windows, use.layer if layer is None else layer,
                                                  use.norm_hidden, use.pad, self.family.pooled_projected)
            conds.append(hidden)
            if use.name == self.family.pooled_from:
                pooled = first_pooled
        length = min(c.shape[1] for c in conds)
        return torch.cat([c[:, :length] for c in conds], dim=-1), pooled


def encode_windows(tower, windows, layer, norm_hidden, pad, pooled_projected):
    """(hidden (1, 77 n, width), pooled (1, P)) of one tower over a prompt's windows, weights applied."""
    weighted = any(token.weight != 1.0 for window in windows for token in window)
    rows = windows + ([empty_window(pad)] if weighted else [])
    ids, vectors = tower_inputs(tower, rows)
    out = tower(ids, vectors, layer=layer, norm_hidden=norm_hidden)
    hidden = out.hidden.float()
    if weighted:
        empty, hidden = hidden[-1], hidden[:-1]
        weights = torch.tensor([[t.weight for t in window] for window in windows], device=hidden.device)[..., None]
        hidden = torch.where(weights != 1.0, (hidden - empty) * weights + empty, hidden)
    pooled = (out.projected if pooled_projected else out.pooled)[:1].float()
    return hidden.reshape(1, -1, hidden.shape[-1]), pooled


def empty_window(pad):
    """The empty prompt's window: start, end, padding."""
    return [Token(START_TOKEN), Token(END_TOKEN)] + [Token(pad)] * (WINDOW - 2)


def tower_inputs(tower, windows):
    """Token ids (B, 77) and, when a window holds embedding vectors, the token vectors (B, 77, width)."""
    parameter = tower.token_embedding.weight
    ids = torch.tensor([[t.value if isinstance(t.value, int) else 0 for t in w] for w in windows], device=parameter.device)
    placed = [(b, i, t.value) for b, w in enumerate(windows) for i, t in enumerate(w) if not isinstance(t.value, int)]
    if not placed:
        return ids, None
    vectors = tower.token_embedding(ids)
    for b, i, vector in placed:
        vectors[b, i] = vector.to(vectors)
    return ids, vectors
