"""Test vectors for the C++ library of cris_infer (cpp/infer), made by the Python package itself:
token ids (cris_edge.tokenizer), pre-processed tensors (cris_edge.runtime.preprocess) and final
masks (cris_edge.runtime.postprocess, the official numpy + OpenCV pipeline).

    python tests/reference/make_cpp_vectors.py OUT_DIR [VOCAB]

tests/test_cpp_infer.py writes them into a temporary directory and runs the ctest `infer_core`
on them (environment variable CRIS_INFER_VECTORS). Layout of OUT_DIR (little-endian raw arrays):

    vocab.txt            path of the BPE vocabulary the ids were made with
    tokens.tsv           word_len, hex(UTF-8 text), ids (space-separated, padded row), eot_index,
                         truncated (0/1); ids "error" for a text that is empty after cleaning
    pre.tsv              name, frame_h, frame_w, input_size, color ("bgr"/"rgb"); name.frame
                         (uint8 [h, w, 3]), name.matrices (float64 [2][2][3]: matrix, inverse),
                         name.image (float32 [3, S, S])
    post.tsv             name, kind ("logits"/"features"/"prob"), channels, grid_h, grid_w,
                         frame_h, frame_w, input_size, threshold; name.input (float32: logits
                         [h, w] | z_v [C, h, w] then kernel [C*9+1] | prob [S, S]), name.mask
                         (uint8 [frame_h, frame_w])
"""

from __future__ import annotations

import itertools
import sys
import warnings
from pathlib import Path

import numpy as np

from cris_edge.kernels.reference import similarity_logits
from cris_edge.runtime.postprocess import logits_to_mask, prob_to_frame, prob_to_mask
from cris_edge.runtime.preprocess import letterbox_matrices, preprocess
from cris_edge.tokenizer import ClipTokenizer, find_vocab

WORD_LENS = (17, 22, 77)

# Texts the C++ cleaner reproduces exactly (see cpp/infer/text_clean.h for the classes it does not).
SPECIAL_TEXTS = [
    "it's the man's hat", "they're here, we've won, I'm done, you'll see, he'd go", "IT'S LOUD", "don't",
    "it’s the dog’s ball", "“quoted” text", "rock 'n' roll", "'''s", "a'b'c", "the ſign 'ſ",
    "  leading and   trailing   spaces  ", "tabs\tand\nnewlines\r\nmixed", "nbsp\u00a0here", "em\u2003space",
    "digits 123 and 4.56 and 7,890", "№ 5", "½ cup", "Ⅻ roman", "x² + y³", "٣ arabic digit",
    "café naïve façade", "Straße", "ÉCOLE", "İstanbul", "ǅemal", "ΑΘΗΝΑ Ελληνικά", "Кириллица москва",
    "日本語のテキスト", "中文 字符", "한국어", "עברית", "العربية", "हिन्दी", "emoji 😀👍🏽 done",
    "punctuation!!! ??? ... --- (brackets) [x] {y} <z>", "email@example.com #tag $5 %", "a/b\\c|d~e^f`g",
    "&amp; &lt;b&gt; &quot;q&quot; &#39;s &#x41;", "&amp;amp; twice", "caf&eacute; &EACUTE; &copy;",
    "&nbsp;space &#8217;", "5 &lt 6 &amp then", "<b>&amp;</b>", "ﬁne ﬂow", "ＦＵＬＬ　ＷＩＤＴＨ ｔｅｘｔ",
    "ｶﾀｶﾅ", "ĳssel", "soft\u00adhyphen", "zero\u200bwidth", "bom\ufeffhere", "ctrl\x07char", "esc\x1b[31mred\x1b[0m",
    "\u0080c1\u0093quote\u0094", "ι\u0345 greek", "the <|endoftext|> token", "<|startoftext|>start",
    "the ‘left’ one", "ʼapostrophe", "hyphen-ated words", "under_score", "CamelCaseWord",
    "a " * 40, "the red car " * 10, "supercalifragilisticexpialidocious", "x" * 200, "7" * 50,
]
EMPTY_TEXTS = ["", "   ", "\u200b", "\x07"]

WORDS = ("the a man woman dog cat red blue green small big left right person car bus bicycle tree "
         "on in near behind holding wearing shirt table chair white black second from far top bottom "
         "glass of water baby elephant giraffe umbrella").split()
PUNCT = ["", ",", ".", "!", "?", ";", " -", "'s", "’s", "...", ":"]


def texts(n_random: int = 260, seed: int = 0) -> list[str]:
    """The special texts, then seeded random sentences of words, digits and punctuation."""
    rng = np.random.default_rng(seed)
    out = list(SPECIAL_TEXTS)
    for _ in range(n_random):
        words = [str(rng.choice(WORDS)) for _ in range(int(rng.integers(1, 14)))]
        if rng.random() < 0.3:
            words.insert(int(rng.integers(0, len(words) + 1)), str(int(rng.integers(0, 10000))))
        if rng.random() < 0.3:
            words = [w.upper() if rng.random() < 0.5 else w.capitalize() for w in words]
        sep = "  " if rng.random() < 0.1 else " "
        out.append(sep.join(w + str(rng.choice(PUNCT)) if rng.random() < 0.2 else w for w in words))
    return out


def write_tokens(out: Path, vocab: Path) -> int:
    tok = ClipTokenizer(vocab)
    lines = []
    for text, word_len in itertools.product(texts() + EMPTY_TEXTS, WORD_LENS):
        hexed = text.encode("utf-8").hex()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                batch = tok.batch(text, word_len)
        except ValueError:
            lines.append(f"{word_len}\t{hexed}\terror\t-1\t0")
            continue
        ids = " ".join(str(int(i)) for i in batch.tokens[0])
        truncated = int(batch.lengths[0] == word_len and len(tok.encode(text)) + 2 > word_len)
        lines.append(f"{word_len}\t{hexed}\t{ids}\t{int(batch.eot_index[0])}\t{truncated}")
    (out / "tokens.tsv").write_text("\n".join(lines) + "\n")
    (out / "vocab.txt").write_text(str(vocab) + "\n")
    return len(lines)


FRAMES = [(1, 1, 416), (1, 3, 256), (3, 1, 256), (31, 17, 256), (97, 333, 320), (333, 97, 416), (240, 320, 416),
          (479, 641, 416), (480, 640, 416), (720, 1280, 480), (256, 256, 256), (1080, 1920, 416)]


def _frame(rng, h: int, w: int) -> np.ndarray:
    """A frame with smooth gradients, edges and noise (every uint8 level and sharp steps)."""
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)), ((x + y) * 7) % 256], -1)
    noise = rng.integers(-40, 41, (h, w, 3))
    return np.clip(base + noise + np.where((x // 9 + y // 7) % 2, 60, -60)[..., None], 0, 255).astype(np.uint8)


def write_pre(out: Path) -> int:
    rng = np.random.default_rng(1)
    rows = []
    for k, (h, w, size) in enumerate(FRAMES):
        color = "rgb" if k % 3 == 2 else "bgr"
        frame = _frame(rng, h, w)
        name = f"pre{k}"
        lb = preprocess(frame, size, color=color)
        (out / f"{name}.frame").write_bytes(frame.tobytes())
        (out / f"{name}.matrices").write_bytes(np.stack([lb.matrix, lb.inverse]).astype("<f8").tobytes())
        (out / f"{name}.image").write_bytes(lb.image[0].astype("<f4").tobytes())
        rows.append(f"{name}\t{h}\t{w}\t{size}\t{color}")
    # Matrices alone for many more sizes (cheap): frame_h, frame_w, size with no image.
    for h, w, size in itertools.product((1, 2, 5, 17, 100, 239, 480, 719, 1080), (1, 3, 16, 99, 640, 1281, 1920),
                                        (224, 256, 320, 416, 480)):
        name = f"mat_{h}_{w}_{size}"
        matrix, inverse = letterbox_matrices((h, w), size)
        (out / f"{name}.matrices").write_bytes(np.stack([matrix, inverse]).astype("<f8").tobytes())
        rows.append(f"{name}\t{h}\t{w}\t{size}\t-")
    (out / "pre.tsv").write_text("\n".join(rows) + "\n")
    return len(rows)


POST = [  # kind, channels, grid (h, w), frame (h, w), input size
    ("logits", 1, (64, 64), (240, 320), 256), ("logits", 1, (104, 104), (480, 640), 416),
    ("logits", 1, (104, 104), (719, 1279), 416), ("logits", 1, (80, 80), (333, 97), 320),
    ("logits", 1, (104, 104), (1, 3), 416), ("logits", 1, (120, 120), (1080, 1920), 480),
    ("features", 16, (64, 64), (97, 333), 256), ("features", 8, (104, 104), (480, 640), 416),
    ("prob", 1, (256, 256), (240, 320), 256), ("prob", 1, (416, 416), (1080, 1920), 416),
]


def _logits(rng, h: int, w: int) -> np.ndarray:
    """Smooth blobs (+-8) with noise: masks with long, curved boundaries."""
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    blobs = sum(np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 0.02) for cx, cy in rng.random((4, 2)))
    return (16 * blobs - 6 + rng.standard_normal((h, w))).astype(np.float32)


def write_post(out: Path) -> int:
    rng = np.random.default_rng(2)
    rows = []
    for k, (kind, channels, (gh, gw), (fh, fw), size) in enumerate(POST):
        name, threshold = f"post{k}", 0.35 if k % 2 == 0 else 0.5
        _, inverse = letterbox_matrices((fh, fw), size)
        if kind == "features":
            z = rng.standard_normal((1, channels, gh, gw)).astype(np.float32)
            kernel = (rng.standard_normal((1, channels * 9 + 1)) * 3 / np.sqrt(9 * channels)).astype(np.float32)
            logits = similarity_logits(z, kernel[:, :-1].reshape(1, channels, 3, 3), kernel[:, -1])[0, 0]
            data = np.concatenate([z.ravel(), kernel.ravel()])
            mask = logits_to_mask(logits, inverse, (fh, fw), size, threshold)
        elif kind == "prob":
            data = 1 / (1 + np.exp(-_logits(rng, size, size).astype(np.float64)))
            data = data.astype(np.float32)
            mask = prob_to_mask(prob_to_frame(data, inverse, (fh, fw)), threshold)
        else:
            data = _logits(rng, gh, gw)
            mask = logits_to_mask(data, inverse, (fh, fw), size, threshold)
        (out / f"{name}.input").write_bytes(np.ascontiguousarray(data, "<f4").tobytes())
        (out / f"{name}.mask").write_bytes(mask.astype(np.uint8).tobytes())
        rows.append(f"{name}\t{kind}\t{channels}\t{gh}\t{gw}\t{fh}\t{fw}\t{size}\t{threshold}")
    (out / "post.tsv").write_text("\n".join(rows) + "\n")
    return len(rows)


def write_vectors(out: Path, vocab: Path | None = None) -> dict[str, int]:
    """Write every vector file into ``out``; returns the number of cases of each kind."""
    out.mkdir(parents=True, exist_ok=True)
    vocab = find_vocab(vocab_path=vocab) if vocab else find_vocab()
    return {"tokens": write_tokens(out, vocab), "pre": write_pre(out), "post": write_post(out)}


if __name__ == "__main__":
    counts = write_vectors(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else None)
    print(counts)
