"""CLIP's tokenizer (Radford et al. 2021): text clean-up, lower-casing and byte-level BPE (Sennrich et al. 2016).

Text becomes token ids in four steps:
  1. clean-up: NFC normalisation, every run of Unicode white space becomes one space, and each
     character is lower-cased on its own (special tokens written in the text are split off: see encode);
  2. pre-tokenisation: the text is cut into words: letter runs, single digits, runs of other
     non-space symbols, and the English contractions 's 't 're 've 'm 'll 'd;
  3. each word's UTF-8 bytes are written as 256 printable stand-in characters (GPT-2's byte map),
     the last one marked with the end-of-word suffix `</w>`;
  4. byte-pair encoding: adjacent symbols are merged, lowest merge rank first, until no pair is in
     the merge table; each final symbol is one vocabulary entry.

The vocabulary is derived from the merge table alone, as CLIP builds it: the 256 bytes, the 256
bytes with `</w>`, one entry per merge, then <|startoftext|> (49406) and <|endoftext|> (49407).
The merge table ships with the pack (networks/data/, MIT licence, OpenAI).
"""
import functools
import gzip
import heapq
import json
import re
import sys
import unicodedata
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
DEFAULT_MERGES = DATA / "clip_bpe_merges.txt.gz"
START_TEXT, END_TEXT = "<|startoftext|>", "<|endoftext|>"
END_OF_WORD = "</w>"
# Unicode's White_Space property (what the reference tokenizer's `\s` means; Python's isspace() is wider).
WHITESPACE = re.compile("[\t\n\v\f\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+")
CACHE_SIZE = 100_000  # words whose ids are remembered
CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")


def byte_alphabet():
    """GPT-2's map from the 256 byte values to printable characters: printable bytes stand for themselves."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + n) for n, b in enumerate(others)}}


@functools.cache
def _word_pattern():
    """The pre-tokeniser: contractions, letter runs, single digits (Unicode N*), runs of anything else but a space.

    A special token's text that only appears after lower-casing ('<|ENDOFTEXT|>') is read as one match
    first, then as the three words '<|', 'endoftext', '|>' (the reference splits it so, in two passes).
    """
    letters, digits = _category_ranges("L"), _category_ranges("N")
    specials = "|".join(re.escape(s) for s in (START_TEXT, END_TEXT))
    return re.compile(f"{specials}|" + "|".join(CONTRACTIONS) + f"|[{letters}]+|[{digits}]|[^ {letters}{digits}]+")


def words(text):
    """The words of cleaned-up text, in order."""
    for word in _word_pattern().findall(text):
        if word in (START_TEXT, END_TEXT):
            yield from ("<|", word[2:-2], "|>")
        else:
            yield word


def _category_ranges(major):
    """A regex character-class body listing every code point whose Unicode category starts with `major`."""
    ranges, start = [], None
    for code in range(sys.maxunicode + 2):
        inside = code <= sys.maxunicode and unicodedata.category(chr(code))[0] == major
        if inside and start is None:
            start = code
        elif not inside and start is not None:
            ranges.append(re.escape(chr(start)) + ("" if code - 1 == start else "-" + re.escape(chr(code - 1))))
            start = None
    return "".join(ranges)


def clean_text(text):
    """NFC, white-space runs to one space, per-character lower case (no context rules such as final sigma)."""
    text = WHITESPACE.sub(" ", unicodedata.normalize("NFC", text))
    return "".join(c.lower() for c in text)


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


class ClipTokenizer:
    """Text to CLIP token ids (and back), identical to OpenAI CLIP's / Hugging Face's CLIPTokenizer."""

    def __init__(self, merges=None, vocab=None):
        """merges: a merges.txt path (default: the one shipped); vocab: an optional vocab.json, else derived."""
        self.merges = read_merges(merges if merges is not None else DEFAULT_MERGES)
        self.ranks = {pair: rank for rank, pair in enumerate(self.merges)}
        derived = vocabulary_from_merges(self.merges)
        if vocab is not None:
            with open(vocab, encoding="utf-8") as handle:
                derived = json.load(handle)
            if START_TEXT not in derived or END_TEXT not in derived:
                raise ValueError(f"{Path(vocab).name}: not a CLIP vocabulary (no {START_TEXT} / {END_TEXT} entries)")
        self.vocab = derived
        self.symbols = {index: symbol for symbol, index in self.vocab.items()}
        self.start, self.end = self.vocab[START_TEXT], self.vocab[END_TEXT]
        self.byte_to_char = byte_alphabet()
        self.char_to_byte = {c: b for b, c in self.byte_to_char.items()}
        self._cache = {}

    def __len__(self):
        return len(self.vocab)

    def encode(self, text):
        """Token ids of `text` without the start and end tokens.

        Special tokens written in the text keep their ids as the reference tokenizer matches them:
        '<|endoftext|>' exactly as written, '<|startoftext|>' after clean-up (so in any letter case).
        """
        ids = []
        for index, piece in enumerate(text.split(END_TEXT)):
            ids += [self.end] if index else []
            for inner, part in enumerate(clean_text(piece).split(START_TEXT)):
                ids += ([self.start] if inner else []) + self._encode_clean(part)
        return ids

    def __call__(self, text):
        """Token ids with the start and end tokens, as CLIP sees a text."""
        return [self.start, *self.encode(text), self.end]

    def _encode_clean(self, text):
        ids = []
        for word in words(text):
            cached = self._cache.get(word)
            if cached is None:
                if len(self._cache) >= CACHE_SIZE:
                    self._cache.clear()
                cached = self._cache[word] = self._encode_word(word)
            ids += cached
        return ids

    def _encode_word(self, word):
        try:
            data = word.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"text contains a lone surrogate character in {word!r}; it has no UTF-8 bytes") from None
        chars = [self.byte_to_char[b] for b in data]
        chars[-1] += END_OF_WORD
        return [self.vocab[symbol] for symbol in self.bpe(chars)]

    def bpe(self, symbols):
        """Merge adjacent symbols by rank (lowest first, leftmost on ties) until no pair has a rank."""
        symbols = list(symbols)
        following = list(range(1, len(symbols))) + [None]
        preceding = [None] + list(range(len(symbols) - 1))
        heap = [(self.ranks[pair], i) for i, pair in enumerate(zip(symbols, symbols[1:])) if pair in self.ranks]
        heapq.heapify(heap)
        while heap:
            rank, i = heapq.heappop(heap)
            j = following[i]
            if symbols[i] is None or j is None or self.ranks.get((symbols[i], symbols[j])) != rank:
                continue  # a stale entry: one side has merged since it was queued
            symbols[i], symbols[j] = symbols[i] + symbols[j], None
            following[i] = following[j]
            if following[i] is not None:
                preceding[following[i]] = i
            for left, right in ((preceding[i], i), (i, following[i])):
                if left is not None and right is not None and (symbols[left], symbols[right]) in self.ranks:
                    heapq.heappush(heap, (self.ranks[symbols[left], symbols[right]], left))
        return [s for s in symbols if s is not None]

    def token_text(self, token):
        """A token's text for people: its bytes decoded (broken UTF-8 shown as U+FFFD), `</w>` as a space."""
        symbol = self.symbols[token]
        if symbol in (START_TEXT, END_TEXT):
            return symbol
        word_end = symbol.endswith(END_OF_WORD)
        if word_end:
            symbol = symbol[: -len(END_OF_WORD)]
        text = bytes(self.char_to_byte[c] for c in symbol).decode("utf-8", errors="replace")
        return text + (" " if word_end else "")

    def decode(self, tokens):
        """The cleaned-up text back from token ids (start, end and padding tokens dropped)."""
        symbols = "".join(self.symbols[t] for t in tokens if t not in (self.start, self.end))
        words = symbols.split(END_OF_WORD)
        data = [bytes(self.char_to_byte[c] for c in word).decode("utf-8", errors="replace") for word in words]
        return " ".join(data).strip()


@functools.cache
def default_tokenizer():
    """The shipped CLIP tokenizer, built once (reading the merge table takes a fraction of a second)."""
    return ClipTokenizer()
