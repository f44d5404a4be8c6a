"""The CLIP tokenizer against Hugging Face's CLIPTokenizer (built from ComfyUI's copy of the same vocabulary).

transformers' CLIPTokenizer runs on the same `tokenizers` engine as ours, so it checks our set-up of it (clean-up,
word split, vocabulary from the merge table, special tokens); a textbook BPE written here from Sennrich et al.
2016 checks the merges themselves, independently of that engine.
"""
import gzip
import json
import random
import re
import time
import unicodedata

import pytest

from diffusion_blocks.networks.clip_tokenizer import (DEFAULT_MERGES, ClipTokenizer, byte_alphabet, clean_text, default_tokenizer,
                                                       read_merges)
from diffusion_blocks.devtools.paths import comfyui_path

CORPUS_SIZE = 6000
WHITE_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
NOT_WHITE_SPACE = "\x1c\x1d\x1e\x1f\u200b\u180e\ufeff\u2060"  # Python's isspace() says yes to the first four
EMOJI = ["😀", "👍🏽", "👩‍💻", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇯🇵", "🇫🇷", "1️⃣", "❤️", "✨", "🔥", "🐈‍⬛", "🧑🏿‍🚀", "☕", "🌸", "🙏🏻"]
PHRASES = ["it's", "they'll", "we've", "I'M", "you'd", "DON'T", "o'clock", "rock'n'roll", "''quoted''", "'s", "’s",
           "e\u0301te\u0301", "ﬁne", "ＦＵＬＬ ｗｉｄｔｈ", "İstanbul", "ΟΔΟΣ", "Straße", "STRASSE ẞ", "naïve café", "Ǆemal",
           "𝐁𝐨𝐥𝐝 𝔉𝔯𝔞𝔨", "한국어 텍스트", "\u1100\u1161\u11a8", "日本語のテキスト", "中文提示词", "Привет мир", "مرحبا بالعالم",
           "שלום עולם", "नमस्ते दुनिया", "สวัสดีชาวโลก", "Ελληνικά", "ᏣᎳᎩ", "Ⴀ ⴀ Ა", "Ⅻ ½ ² ३ ٣", "<|endoftext|>",
           "<|startoftext|>", "<|ENDOFTEXT|>", "< |endoftext| >", "<|endoftext|", "!<|EndOfText|>!!", "<|STARTOFTEXT|>\x1f", "\\(escaped\\)", "(weight:1.3)",
           "[[brackets]]", "{curly|alt}", "C:\\path\\file.png", "https://example.com/a?b=c&d=e#f", "e-mail@domain.org",
           "#hashtag", "@mention", "$12.50", "€3,99", "50%", "1,000,000", "3.14159", "-2.5e-3", "2024-05-17", "12:30:45",
           "v1.5.2", "0x1F600", "×÷±∞≠≈", "—–…«»¿¡“”‘’", "©®™°§¶†‡", "★☆♥♦♣♠", "\u0000\u0007\u001b",
           # newer than Python 3.11's Unicode 14 tables (U+1C89 is an upper-case letter since Unicode 16)
           "\u1c89\u1c8a x\u1c89y", "\u0c15\u0c3c\u0c4d", "\ua7cb\ua7dc", "\U000105c0\U0001e5d0", "\U00031350\U0002ebf0"]


def assigned_characters():
    return [c for c in range(0x30000) if unicodedata.category(chr(c)) not in ("Cn", "Cs", "Co")]


def any_character(rng):
    """Any code point but a surrogate: unassigned ones, private use and those newer than Python's tables included."""
    code = rng.randrange(0x110000 - 0x800)
    return chr(code + 0x800 if code >= 0xD800 else code)


def generated_corpus(size=CORPUS_SIZE, seed=20240517):
    """Prompts of every kind: prompt-style tag lists, all scripts, emoji, numbers, punctuation, white space, long texts."""
    rng = random.Random(seed)
    tokenizer = default_tokenizer()
    words = [s[:-4] for s in tokenizer.vocab if s.endswith("</w>") and s[:-4].isalpha() and s[:-4].isascii()]
    characters = assigned_characters()

    def word():
        w = rng.choice(words)
        return rng.choice([w, w, w.upper(), w.capitalize()])

    def number():
        return rng.choice([str(rng.randint(-10**6, 10**9)), f"{rng.uniform(-1000, 1000):.{rng.randint(0, 6)}f}",
                           f"{rng.uniform(0, 1):.3e}", f"{rng.randint(1, 9999):,}", f"{rng.randint(0, 255):02x}"])

    def random_text(n):
        return "".join(chr(rng.choice(characters)) if rng.random() < 0.7 else any_character(rng) for _ in range(n))

    def piece():
        kind = rng.random()
        if kind < 0.45:
            return word()
        if kind < 0.55:
            return number()
        if kind < 0.65:
            return rng.choice(PHRASES)
        if kind < 0.72:
            return "".join(rng.choice(EMOJI) for _ in range(rng.randint(1, 3)))
        if kind < 0.80:
            return "".join(rng.choice("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") for _ in range(rng.randint(1, 4)))
        if kind < 0.90:
            return random_text(rng.randint(1, 6))
        return f"({word()} {word()}:{rng.uniform(0.5, 1.5):.2f})"

    def separator():
        return rng.choice([" ", " ", " ", ", ", "", "\n", rng.choice(WHITE_SPACE), rng.choice(NOT_WHITE_SPACE)])

    corpus = []
    for index in range(size):
        length = rng.choice([0, 1, 3, 8, 20, 40]) if index % 50 else rng.randint(300, 1500)  # every 50th is long
        corpus.append("".join(piece() + separator() for _ in range(length)))
    corpus += PHRASES + [WHITE_SPACE, NOT_WHITE_SPACE, ""]
    return corpus


@pytest.fixture(scope="module")
def reference():
    transformers = pytest.importorskip("transformers")
    folder = comfyui_path() / "comfy" / "sd1_tokenizer"
    return transformers.CLIPTokenizer.from_pretrained(str(folder))  # local files only: no hub


def test_ids_equal_hugging_face_on_a_generated_corpus(reference):
    corpus = generated_corpus()
    assert len(corpus) >= 5000
    unknown_to_python = sum(any(unicodedata.category(c) == "Cn" for c in text) for text in corpus)
    assert unknown_to_python > 300  # random Unicode, including characters newer than Python's tables
    tokenizer = default_tokenizer()
    started = time.monotonic()
    ours = [tokenizer(text) for text in corpus]
    elapsed = time.monotonic() - started
    theirs = reference(corpus)["input_ids"]
    differing = [(text, a, b) for text, a, b in zip(corpus, ours, theirs) if a != b]
    assert not differing, f"{len(differing)} of {len(corpus)} differ, first: {differing[0]!r}"
    characters = sum(map(len, corpus))
    print(f"\n{len(corpus)} prompts, {characters} characters, {sum(map(len, ours))} tokens: identical; ours {elapsed:.2f} s")


# CLIP's word split and GPT-2's byte-level split, for ASCII text without special tokens (white space spelled out:
# Python's \s would also take \x1c-\x1f).
ASCII_WORDS = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d|[a-z]+|[0-9]|[^\t\n\v\f\r a-z0-9]+")
GPT2_WORDS = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d| ?[a-z]+| ?[0-9]+| ?[^\t\n\v\f\r a-z0-9]+")


def textbook_bpe(word, ranks):
    """Sennrich et al. 2016: merge every occurrence of the lowest-ranked adjacent pair until none has a rank."""
    symbols = [*word[:-1], word[-1] + "</w>"]
    while len(symbols) > 1:
        pairs = set(zip(symbols, symbols[1:]))
        best = min(pairs, key=lambda pair: ranks.get(pair, float("inf")))
        if best not in ranks:
            break
        merged, i = [], 0
        while i < len(symbols):
            if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                merged.append(symbols[i] + symbols[i + 1])
                i += 2
            else:
                merged.append(symbols[i])
                i += 1
        symbols = merged
    return symbols


def test_ids_equal_a_textbook_bpe_on_ascii_prompts():
    tokenizer = default_tokenizer()
    ranks = {pair: rank for rank, pair in enumerate(read_merges())}
    byte_map = byte_alphabet()
    prompts = [text for text in generated_corpus(size=1500, seed=7) if text.isascii() and "<|" not in text][:400]
    assert len(prompts) > 200
    for text in prompts:
        clean = re.sub(r"[\t\n\v\f\r ]+", " ", text).lower()
        words = [piece for word in ASCII_WORDS.findall(clean) for piece in GPT2_WORDS.findall(word)]
        words = ["".join(byte_map[b] for b in word.encode()) for word in words]  # GPT-2's printable stand-ins
        expected = [tokenizer.vocab[symbol] for word in words for symbol in textbook_bpe(word, ranks)]
        assert tokenizer.encode(text) == expected, text


def test_vocabulary_derived_from_merges_equals_the_vocab_file():
    folder = comfyui_path() / "comfy" / "sd1_tokenizer"
    assert default_tokenizer().vocab == json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    with gzip.open(DEFAULT_MERGES, "rt", encoding="utf-8") as shipped:
        assert shipped.read() == (folder / "merges.txt").read_text(encoding="utf-8")


def test_special_tokens_and_known_ids():
    tokenizer = default_tokenizer()
    assert (tokenizer.start, tokenizer.end, len(tokenizer)) == (49406, 49407, 49408)
    assert tokenizer("a photo of a cat") == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tokenizer("") == [49406, 49407]
    assert tokenizer.encode("x<|endoftext|>y") == [343, 49407, 344]  # literal special tokens keep their ids
    assert tokenizer.encode("<|ENDOFTEXT|>") != [49407]  # ... only as written,
    assert tokenizer.encode("<|StartOfText|>") == [49406]  # but the start token in any case (as the reference does)


def test_clean_up_rules():
    assert clean_text("A\u00a0 B\t\nC") == "a b c"
    assert clean_text("\x1c") == "\x1c"  # not Unicode white space, whatever str.isspace() says
    assert clean_text("ΟΔΟΣ") == "οδοσ"  # per-character lower case: no final-sigma rule
    assert clean_text("e\u0301") == "\u00e9"  # NFC


def test_decode_and_token_text_round_trip():
    tokenizer = default_tokenizer()
    assert tokenizer.decode(tokenizer("Hello,  WORLD  😀 café")) == "hello , world 😀 café"
    assert [tokenizer.token_text(t) for t in tokenizer.encode("cats")] == ["cats "]
    assert tokenizer.token_text(49407) == "<|endoftext|>"


def test_very_long_words_stay_fast():
    tokenizer = default_tokenizer()
    started = time.monotonic()
    ids = tokenizer.encode("x" * 20_000 + " " + "ab" * 10_000)
    assert time.monotonic() - started < 2.0
    assert len(ids) > 1000


def test_alternative_vocabulary_files(tmp_path):
    folder = comfyui_path() / "comfy" / "sd1_tokenizer"
    tokenizer = ClipTokenizer(merges=folder / "merges.txt", vocab=folder / "vocab.json")
    assert tokenizer("a red fox") == default_tokenizer()("a red fox")
    (tmp_path / "bad.txt").write_text("#version: 0.2\na b c\n")
    with pytest.raises(ValueError, match="not a BPE merge table"):
        ClipTokenizer(merges=tmp_path / "bad.txt")


def test_lone_surrogates_are_a_clear_error():
    with pytest.raises(ValueError, match="lone surrogate"):
        default_tokenizer().encode("a \ud800 b")
