"""cris_edge.tokenizer against open_clip's tokenizer and the official CRIS tokenize rule."""

from __future__ import annotations

import importlib.util
import random
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest

from cris_edge import tokenizer as tok
from cris_edge.tokenizer import ClipTokenizer, TextTruncatedWarning, find_vocab, tokenize

CONTEXT_LENGTHS = (17, 22, 77)  # RefCOCO/+, RefCOCOg, CLIP
N_STRINGS = 2000

COLORS = ["red", "Blue", "GREEN", "yellowish", "dark-brown", "light grey", "orange", "pink"]
NOUNS = ["cat", "man", "woman", "umbrella", "bus", "giraffe", "bowl", "kid", "zebra", "laptop"]
RELATIONS = ["on the left of", "next to", "behind", "under", "near", "to the right of", "above"]
FRAGMENTS = {
    "unicode": [
        "café crème", "naïve façade", "Ærøskøbing", "straße", "İstanbul", "ﬁsh ﬂag", "ǅemal",
        "左边的猫", "穿红衣服的女人", "ラーメン屋", "빨간 자동차", "красная машина", "Ёлка",
        "السيارة الحمراء", "לבן", "लाल गाड़ी", "แมวสีดำ", "Ελληνικά", "e\u0301te\u0301",
        "a\u0308o\u0308", "n\u0303", "z\u0327\u0301", "'ſ", "\u212a", "Ⅻ", "ǈ",
    ],
    "emoji": [
        "🐱", "🐶🐶", "👨\u200d👩\u200d👧\u200d👦", "🏳️\u200d🌈", "🇫🇷", "🇯🇵🇺🇸", "👍🏽",
        "👋🏿", "1️⃣", "❤️", "🧑🏻\u200d💻", "😀😃😄", "☕",
    ],
    "html": [
        "&amp;", "&quot;big&quot;", "&#39;s", "&amp;amp;", "&amp;quot;", "&lt;b&gt;", "&nbsp;",
        "&#x27;", "&eacute;", "&#8217;", "&#128049;", "&amp;#39;", "&copy;", "&bogus;",
    ],
    "mojibake": [
        "cafÃ©", "Ã¼ber", "donâ€™t", "â€œquotedâ€\x9d", "naÃ¯ve", "SchÃ¶n", "Ã\xa0 la",
        "â€”dash", "ðŸ˜€", "Ã¢â‚¬â„¢",
    ],
    "punct": [
        "!!!", "?!?", "...", "---", "((x))", "@#$%^&*", "\"quoted\"", "«»", "“curly”", "‘x’",
        "!?", "?!", "!,", "~~~~", "()[]{}", "-_-", ";:", "/\\", "§¶", "…", "！", "¿qué?",
    ],
    "digits": [
        "2 cats", "123456", "3.14", "1st", "2nd man", "½", "x²", "٣", "１２３", "Ⅷ", "100%",
        "10:30", "#7", "0",
    ],
    "contractions": [
        "it's", "don't", "they're", "we've", "i'm", "you'll", "he'd", "IT'S", "DON'T",
        "man's hat", "o'clock", "rock'n'roll", "dogs'", "'", "''", "'re'", "'LL", "don’t",
    ],
    "space": ["\t", "\n", "\r\n", "  ", "\u3000", "\u00a0", "\u2028", "\x0b", "\x0c", "\x85"],
    "control": ["\u200b", "\ufeff", "\x00", "\x1c", "\x7f", "\x1b[31m", "\u00ad"],
}
SEPARATORS = [" ", " ", " ", "", "\t", "\n", "  ", " \r\n "]


def _mixed_case(rng: random.Random, text: str) -> str:
    return "".join(c.upper() if rng.random() < 0.3 else c for c in text)


def _referring(rng: random.Random) -> str:
    color, noun = rng.choice(COLORS), rng.choice(NOUNS)
    text = rng.choice([
        f"the {color} {noun} {rng.choice(RELATIONS)} the {rng.choice(NOUNS)}",
        f"{noun} on the left",
        f"a {color} {noun}",
        f"{rng.choice(NOUNS)} wearing a {color} shirt, {rng.choice(RELATIONS)} the {noun}",
        f"second {noun} from right",
    ])
    return _mixed_case(rng, text) if rng.random() < 0.3 else text


def make_corpus(n: int = N_STRINGS, seed: int = 1234) -> list[str]:
    """n distinct deterministic, varied strings (some of them empty after cleaning)."""
    rng = random.Random(seed)
    kinds = list(FRAGMENTS)
    corpus = dict.fromkeys(frag for frags in FRAGMENTS.values() for frag in frags)
    while len(corpus) < n:
        roll = rng.random()
        if roll < 0.05:  # very long: hundreds of words
            parts = [_referring(rng) for _ in range(rng.randint(30, 120))]
        elif roll < 0.35:
            parts = [_referring(rng)]
        else:
            parts = [
                rng.choice(FRAGMENTS[rng.choice(kinds)]) if rng.random() < 0.6 else _referring(rng)
                for _ in range(rng.randint(1, 6))
            ]
        corpus["".join(p + rng.choice(SEPARATORS) for p in parts)] = None
    return list(corpus)


@pytest.fixture(scope="module")
def open_clip():
    pytest.importorskip("torch")
    if importlib.util.find_spec("open_clip") is None:
        pytest.skip("open_clip is not installed (the torch extra): no reference tokenizer")
    from cris_edge.model._torchvision_compat import import_open_clip

    return import_open_clip()


@pytest.fixture(scope="module")
def reference(open_clip):
    """open_clip's default SimpleTokenizer and its encoding of every corpus string."""
    simple = open_clip.tokenizer.SimpleTokenizer()
    corpus = make_corpus()
    return simple, corpus, [simple.encode(text) for text in corpus]


@pytest.fixture(scope="module")
def clip_tokenizer() -> ClipTokenizer:
    return tok.get_tokenizer()


def official_rows(encoded: list[list[int]], sot: int, eot: int, context_length: int) -> np.ndarray:
    """The official CRIS rule: [SOT] + ids + [EOT], cut to context_length with EOT last, 0-pad."""
    out = np.zeros((len(encoded), context_length), dtype=np.int64)
    for n, ids in enumerate(encoded):
        row = [sot, *ids, eot]
        if len(row) > context_length:
            row = row[:context_length]
            row[-1] = eot
        out[n, : len(row)] = row
    return out


def test_corpus_is_varied_and_has_empties(reference):
    _, corpus, encoded = reference
    assert len(corpus) == N_STRINGS == len(set(corpus))
    assert sum(len(ids) > 75 for ids in encoded) >= 50  # long ones truncate even at 77
    assert 0 < sum(not ids for ids in encoded) < N_STRINGS // 20  # "\x00", "&nbsp;"…


def test_encode_matches_open_clip(reference, clip_tokenizer):
    _, corpus, expected = reference
    mismatches = [t for t, ids in zip(corpus, expected) if clip_tokenizer.encode(t) != ids]
    assert not mismatches, f"{len(mismatches)}/{len(corpus)} differ, e.g. {mismatches[:3]!r}"


@pytest.mark.filterwarnings("ignore::cris_edge.tokenizer.TextTruncatedWarning")
@pytest.mark.parametrize("context_length", CONTEXT_LENGTHS)
def test_tokenize_matches_open_clip_and_official_rule(reference, open_clip, context_length):
    simple, corpus, encoded = reference
    texts = [t for t, ids in zip(corpus, encoded) if ids]  # empties are errors here, tested below
    got = tokenize(texts, context_length=context_length, truncate=True)
    assert got.dtype == np.int32 and got.shape == (len(texts), context_length)
    expected = open_clip.tokenize(texts, context_length=context_length).numpy()
    same = (got == expected).all(axis=1)
    assert same.all(), f"{(~same).sum()}/{len(texts)} rows differ, e.g. {texts[np.argmin(same)]!r}"
    oracle = official_rows(
        [ids for ids in encoded if ids], simple.sot_token_id, simple.eot_token_id, context_length
    )
    np.testing.assert_array_equal(got, oracle)


def test_empty_after_cleaning_is_an_error(reference):
    _, corpus, encoded = reference
    for text in [t for t, ids in zip(corpus, encoded) if not ids]:
        with pytest.raises(ValueError, match="empty"):
            tokenize(text)


def test_decode_matches_open_clip(reference, clip_tokenizer):
    simple, corpus, encoded = reference
    for ids in encoded[:300]:
        assert clip_tokenizer.decode(ids) == simple.decode(ids)


def test_known_ids_regression(clip_tokenizer):
    # from open_clip.tokenize("the red circle") once
    expected = [49406, 518, 736, 7117, 49407] + [0] * 12
    np.testing.assert_array_equal(tokenize("the red circle"), [expected])
    assert clip_tokenizer.encode("The  RED\tcircle ") == [518, 736, 7117]
    assert (clip_tokenizer.sot_id, clip_tokenizer.eot_id, clip_tokenizer.vocab_size) == (
        49406, 49407, 49408,
    )
    assert clip_tokenizer.decode([518, 736, 7117]) == "the red circle "


@pytest.mark.parametrize(
    "text, ids",
    [  # from the official CRIS utils/simple_tokenizer.py once; open_clip 3.x differs on these
        ("a <|endoftext|> b", [320, 49407, 321]),
        ("x<|startoftext|>y", [343, 49406, 344]),
        ("!<|endoftext|>", [0, 27, 347, 40786, 4160, 91, 285]),  # not at a piece start
        ("<start_of_text>", [283, 1572, 318, 539, 318, 4160, 285]),  # open_clip: [49406]
    ],
)
def test_special_token_literals_follow_official_code(clip_tokenizer, text, ids):
    assert clip_tokenizer.encode(text) == ids


@pytest.mark.parametrize("texts", [["a cat", "the man on the left of the red bus"], "one"])
@pytest.mark.parametrize("context_length", [5, 17])
def test_batch_fields_are_consistent(clip_tokenizer, texts, context_length):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TextTruncatedWarning)
        batch = clip_tokenizer.batch(texts, context_length=context_length)
    n = 1 if isinstance(texts, str) else len(texts)
    assert batch.tokens.shape == batch.pad_mask.shape == (n, context_length)
    assert batch.tokens.dtype == batch.eot_index.dtype == batch.lengths.dtype == np.int32
    assert batch.pad_mask.dtype == np.bool_ and batch.eot_index.shape == batch.lengths.shape == (n,)
    np.testing.assert_array_equal(batch.pad_mask, batch.tokens == 0)
    np.testing.assert_array_equal(batch.eot_index, batch.tokens.argmax(-1))
    np.testing.assert_array_equal(batch.lengths, batch.eot_index + 1)
    np.testing.assert_array_equal(batch.lengths, (~batch.pad_mask).sum(-1))
    rows = np.arange(n)
    assert (batch.tokens[rows, batch.eot_index] == clip_tokenizer.eot_id).all()
    assert (batch.tokens[:, 0] == clip_tokenizer.sot_id).all()
    with pytest.raises(Exception):
        batch.tokens = None  # frozen


def test_pad_mask_is_word_eq_0_even_inside_a_text(clip_tokenizer):
    # "!" inside a punctuation piece is id 0: the official model masks it too (word == 0)
    batch = clip_tokenizer.batch("wow!<3")
    assert batch.tokens[0, :6].tolist() == [49406, 2781, 0, 283, 274, 49407]
    assert batch.pad_mask[0, 2] and batch.lengths[0] == batch.eot_index[0] + 1 == 6


def test_truncation_warns_and_keeps_eot():
    text = "the man " * 20
    with pytest.warns(TextTruncatedWarning, match=r"'the man the man.*more than 17 tokens.*cut to 17"):
        row = tokenize(text, context_length=17)[0]
    assert row[-1] == 49407 and (row != 0).all()


def test_truncation_can_be_quiet_without_touching_the_warning_filters(clip_tokenizer):
    text = "the man " * 20
    filters = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet = clip_tokenizer.batch(text, 17, warn=False)
        assert tokenize(text, context_length=17, warn=False).tolist() == quiet.tokens.tolist()
        assert caught == []
        loud = clip_tokenizer.batch(text, 17)  # the default still warns
        assert [w.category for w in caught] == [TextTruncatedWarning]
    assert warnings.filters == filters
    assert quiet.tokens.tolist() == loud.tokens.tolist() and quiet.tokens[0, -1] == 49407


@pytest.mark.parametrize(
    "texts, error, match",
    [
        ("", ValueError, "empty"),
        (" \t\n\u3000", ValueError, "empty"),
        (["a cat", "&nbsp;"], ValueError, r"texts\[1\] is empty"),
        (["a cat", 3], TypeError, r"texts\[1\] must be a str, got int"),
        ([None], TypeError, "got NoneType"),
        (b"a cat", TypeError, "bytes"),
        (42, TypeError, "int"),
    ],
)
def test_bad_texts(texts, error, match):
    with pytest.raises(error, match=match):
        tokenize(texts)


def test_too_long_without_truncate_is_an_error():
    with pytest.raises(ValueError, match=r"'the man the man.*more than 22 tokens.*context_length=22"):
        tokenize("the man " * 12 + "on the left", context_length=22, truncate=False)
    assert tokenize("a b c", context_length=5, truncate=False).shape == (1, 5)  # exactly fits


@pytest.mark.parametrize("context_length", [1, 0, -3])
def test_context_length_below_two(context_length):
    with pytest.raises(ValueError, match="context_length"):
        tokenize("a cat", context_length=context_length)


@pytest.mark.slow
def test_imports_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import cris_edge, cris_edge.tokenizer\n"
        "ids = cris_edge.tokenizer.tokenize('a cat').tolist()[0]\n"
        "assert ids[:4] == [49406, 320, 2368, 49407], ids\n"
        "assert 'open_clip' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_find_vocab_prefers_bundle_dir(tmp_path):
    shutil.copy(find_vocab(), tmp_path / tok.VOCAB_FILENAME)
    found = find_vocab(tmp_path)
    assert found == tmp_path / tok.VOCAB_FILENAME
    assert ClipTokenizer(found).encode("the red circle") == [518, 736, 7117]
    assert tok.get_tokenizer(bundle_dir=tmp_path).encode("a cat") == [320, 2368]
    assert find_vocab(tmp_path / "elsewhere", vocab_path=found) == found


def test_find_vocab_not_found(tmp_path, monkeypatch):
    monkeypatch.setattr(tok, "find_spec", lambda name: None)  # as if open_clip were absent
    expected = r"(?s)looked at: .*empty.*open_clip package \(not installed\).*cris-edge\[torch\]"
    with pytest.raises(FileNotFoundError, match=expected):
        find_vocab(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no bundle_dir"):
        ClipTokenizer()
    with pytest.raises(FileNotFoundError, match="missing.gz"):
        find_vocab(vocab_path=tmp_path / "missing.gz")


def test_rejects_a_file_that_is_not_the_vocab(tmp_path):
    import gzip

    bad = tmp_path / "bad.txt.gz"
    with gzip.open(bad, "wt") as f:
        f.write("#version\na b\n")
    with pytest.raises(ValueError, match="not CLIP's BPE vocabulary"):
        ClipTokenizer(bad)


def _whole_text_row(clip, text: str, context_length: int) -> list[int]:
    """The row as the official tokenizer builds it: every id of the whole text, then the cut."""
    ids = [clip.sot_id, *clip.encode(text), clip.eot_id]
    return ids[:context_length - 1] + [clip.eot_id] if len(ids) > context_length else ids


@pytest.mark.parametrize("alphabet", ["abcdeftrsn", "ab", "a", "xyzqjkw", "éüßøñçあいうえお漢字" + "abcdef"])
def test_a_long_text_is_encoded_only_as_far_as_its_row_reaches_with_the_same_ids(alphabet):
    clip = tok.get_tokenizer()
    rng = random.Random(len(alphabet))
    for _ in range(40):
        words = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 700))) for _ in range(rng.randint(1, 3))]
        text = " ".join(words)
        for context_length in (17, 22, 77):
            row = clip.batch(text, context_length, warn=False)
            want = _whole_text_row(clip, text, context_length)
            assert list(row.tokens[0][:len(want)]) == want and row.lengths[0] == len(want)


def test_a_prompt_of_100000_letters_is_cut_like_any_other():
    clip = tok.get_tokenizer()
    text = "".join(random.Random(0).choice("abcdefghijklmnopqrstuvwxyz") for _ in range(100_000))
    with pytest.warns(TextTruncatedWarning, match="more than 17 tokens"):
        row = clip.batch(text, 17)
    assert list(row.tokens[0]) == _whole_text_row(clip, text[:2000], 17)
