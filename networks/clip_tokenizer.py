"""CLIP's tokenizer (Radford et al. 2021): text clean-up, lower-casing and byte-level BPE (Sennrich et al. 2016).

Hugging Face's `tokenizers` library (which ComfyUI installs) does the work; this module only configures it
the way CLIP tokenizes, and builds the vocabulary in memory from the merge table that ships with the pack:
  1. clean-up: NFC normalisation, every run of Unicode white space becomes one space, lower case;
  2. pre-tokenisation: the text is cut into words: letter runs, single digits, runs of other
     non-space symbols, and the English contractions 's 't 're 've 'm 'll 'd; then GPT-2's byte-level
     split and byte map (each UTF-8 byte written as one of 256 printable stand-in characters);
  3. byte-pair encoding: adjacent symbols are merged, lowest merge rank first, with the end-of-word
     suffix `</w>` on each word's last symbol; each final symbol is one vocabulary entry.

The vocabulary is derived from the merge table alone, as CLIP builds it: the 256 bytes, the 256
bytes with `</w>`, one entry per merge, then <|startoftext|> (49406) and <|endoftext|> (49407).
The merge table ships with the pack (networks/data/, MIT licence, OpenAI).
"""
import functools
import gzip
import json
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
DEFAULT_MERGES = DATA / "clip_bpe_merges.txt.gz"
START_TEXT, END_TEXT = "<|startoftext|>", "<|endoftext|>"
END_OF_WORD = "</w>"
# Unicode's White_Space property (what the reference tokenizer's `\s` means; Python's isspace() is wider).
WHITESPACE = "[\t\n\v\f\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+"
# The special tokens, the contractions, letter runs, single digits (Unicode N*), runs of anything else but space.
WORDS = r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+"


def byte_alphabet():
    """GPT-2's map from the 256 byte values to printable characters: printable bytes stand for themselves."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + n) for n, b in enumerate(others)}}


@functools.cache
def _normalizer():
    from tokenizers import Regex, normalizers

    return normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(WHITESPACE), " "), normalizers.Lowercase()])


def clean_text(text):
    """CLIP's clean-up without ftfy: NFC, white-space runs to one space, lower case."""
    return _normalizer().normalize_str(text)


def read_merges(path=DEFAULT_MERGES):
    """The merge table [(left, right), ...] in rank order from a merges.txt (optionally gzipped)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    if lines and lines[0].startswith("#version"):
        lines = lines[1:]
    merges = [tuple(line.split(" ")) for line in lines if line]
    bad = next((m for m in merges if len(m) != 2), None)
    if bad is not None:
        raise ValueError(f"{path.name}: not a BPE merge table (line {' '.join(bad)!r} is not two symbols)")
    return merges


def vocabulary_from_merges(merges):
    """CLIP's vocabulary as {symbol: id}: bytes, bytes at a word's end, one entry per merge, the special tokens."""
    alphabet = list(byte_alphabet().values())
    symbols = alphabet + [a + END_OF_WORD for a in alphabet] + [a + b for a, b in merges] + [START_TEXT, END_TEXT]
    return {symbol: index for index, symbol in enumerate(symbols)}


def clip_bpe(vocab, merges):
    """A `tokenizers.Tokenizer` set up as CLIP's: clean-up, CLIP's word split, byte-level BPE with `</w>`."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, end_of_word_suffix=END_OF_WORD, unk_token=END_TEXT))
    tokenizer.normalizer = _normalizer()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(WORDS), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tokenizer.decoder = decoders.ByteLevel()
    # As the reference matches them: the end token only as written, the start token after clean-up (any case).
    tokenizer.add_special_tokens([AddedToken(START_TEXT, normalized=True), AddedToken(END_TEXT, normalized=False)])
    return tokenizer


class ClipTokenizer:
    """Text to CLIP token ids (and back), identical to OpenAI CLIP's / Hugging Face's CLIPTokenizer."""

    def __init__(self, merges=None, vocab=None):
        """merges: a merges.txt path (default: the one shipped); vocab: an optional vocab.json, else derived."""
        merge_table = read_merges(merges if merges is not None else DEFAULT_MERGES)
        derived = vocabulary_from_merges(merge_table)
        if vocab is not None:
            with open(vocab, encoding="utf-8") as handle:
                derived = json.load(handle)
            if START_TEXT not in derived or END_TEXT not in derived:
                raise ValueError(f"{Path(vocab).name}: not a CLIP vocabulary (no {START_TEXT} / {END_TEXT} entries)")
        self.vocab = derived
        self.start, self.end = self.vocab[START_TEXT], self.vocab[END_TEXT]
        self._bpe = clip_bpe(self.vocab, merge_table)

    def __len__(self):
        return len(self.vocab)

    def encode(self, text):
        """Token ids of `text` without the start and end tokens (special tokens written in the text keep their ids)."""
        try:
            return self._bpe.encode(text, add_special_tokens=False).ids
        except TypeError:
            if isinstance(text, str) and any("\ud800" <= c <= "\udfff" for c in text):
                raise ValueError(f"text contains a lone surrogate character (no UTF-8 bytes) in {text[:80]!r}") from None
            raise

    def __call__(self, text):
        """Token ids with the start and end tokens, as CLIP sees a text."""
        return [self.start, *self.encode(text), self.end]

    def token_text(self, token):
        """A token's text for people: its bytes decoded (broken UTF-8 shown as U+FFFD), `</w>` as a space."""
        return self._bpe.decode([token], skip_special_tokens=False).replace(END_OF_WORD, " ")

    def decode(self, tokens):
        """The cleaned-up text back from token ids (start, end and padding tokens dropped)."""
        return self._bpe.decode(list(tokens), skip_special_tokens=True).replace(END_OF_WORD, " ").strip()


@functools.cache
def default_tokenizer():
    """The shipped CLIP tokenizer, built once (reading the merge table takes a fraction of a second)."""
    return ClipTokenizer()
